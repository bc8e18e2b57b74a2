"""Who may open a link: authorization parsing, the client lookup, the failed-auth throttle.

Every listener (websocket, HTTP, MQTT) admits a satellite the same way, through
:meth:`Admission.check`:

1. the ``authorization`` value, ``base64(useragent:access_key)``, must parse;
2. the access key must name a live client record (never the reference's
   ``revoked`` tombstone);
3. the failed-authentication throttle
   (:class:`~hivemind_core.throttle.AuthThrottle`) has room: malformed
   authorizations and unknown keys count against the address, a wrong
   password against the address *and* key. So a key guesser is refused
   (429) at its address, and a password guesser for one key, while a client
   with the right key behind the same NAT or proxy still gets in.

The client's address is the TCP peer's, or, when that peer is a trusted
reverse proxy (``HubConfig.trusted_proxies``), the last ``X-Forwarded-For``
entry that is not itself a trusted proxy (:func:`client_address`).

A refusal says what happened (:class:`Refusal`: a close code and a one-line
reason, plus the HTTP status and ``Retry-After`` a listener answering HTTP
uses); the listener turns it into its own transport's answer. A refused key
or a malformed authorization counts against the address
(:meth:`Admission.failed`), as does a handshake the client fails (wrong
password), which the satellite link reports.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import enum
import hashlib
import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from hivemind_bus_client.exceptions import CloseCode
from hivemind_core.node import HubNode
from hivemind_core.throttle import AuthThrottle

__all__ = [
    "REVOKED_KEY",
    "Admission",
    "Admitted",
    "Refusal",
    "Refused",
    "authorization_token",
    "client_address",
    "parse_authorization",
    "parse_token",
    "proxy_networks",
]

LOG = logging.getLogger(__name__)

#: Tombstone key of the reference's revoked rows: never a valid credential.
REVOKED_KEY = "revoked"


def authorization_token(useragent: str, key: str) -> str:
    """The ``authorization`` value for ``useragent`` and access ``key``."""
    return base64.b64encode(f"{useragent}:{key}".encode()).decode("ascii")


def parse_token(token: str) -> tuple[str, str] | None:
    """``(useragent, access_key)`` from an ``authorization`` value, or None when malformed.

    Accepts standard and URL-safe base64, with or without padding.
    """
    token = token.strip()
    token += "=" * (-len(token) % 4)
    try:
        raw = base64.b64decode(token.replace("-", "+").replace("_", "/"), validate=True)
        text = raw.decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    useragent, sep, key = text.partition(":")
    if not sep or not key:
        return None
    return useragent, key


def parse_authorization(path: str) -> tuple[str, str] | None:
    """``(useragent, access_key)`` from a request path's ``authorization`` query, or None."""
    try:
        query = parse_qs(urlsplit(path).query)
    except ValueError:
        return None
    values = query.get("authorization")
    if not values:
        return None
    return parse_token(values[0])


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def proxy_networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    """The networks of ``HubConfig.trusted_proxies``.

    Raises:
        ValueError: an entry is not a CIDR or address.
    """
    return tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs)


def _trusted(address: str, proxies: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return False
    return any(ip in net for net in proxies)


def client_address(peer: str, forwarded: str | None, proxies: tuple[Network, ...]) -> str:
    """The client's address: ``peer``, or what a trusted proxy says in ``X-Forwarded-For``.

    Entries are read right to left (each proxy appends the address it saw);
    the first one that is not a trusted proxy is the client. A header from an
    untrusted peer, or a malformed entry, leaves ``peer``.
    """
    if not forwarded or not proxies or not _trusted(peer, proxies):
        return peer
    for entry in reversed(forwarded.split(",")):
        candidate = entry.strip()
        try:
            ipaddress.ip_address(candidate.strip("[]"))
        except ValueError:
            return peer
        if not _trusted(candidate, proxies):
            return candidate
    return peer


def _slot(address: str, key: str | None) -> str:
    """The throttle's slot: the address, or the address and (a digest of) the key."""
    if key is None:
        return address
    return f"{address} {hashlib.sha256(key.encode()).hexdigest()[:16]}"


class Refused(enum.Enum):
    """Why a link was not admitted."""

    THROTTLED = "throttled"
    MALFORMED = "malformed"
    UNKNOWN_KEY = "unknown_key"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True, slots=True)
class Refusal:
    """A refused admission, with what each transport answers."""

    why: Refused
    code: CloseCode
    status: int
    reason: str
    retry_after: int | None = None


@dataclass(frozen=True, slots=True)
class Admitted:
    """An admitted satellite: its client record, the useragent it named and its key."""

    client: Any
    useragent: str
    key: str


#: ``Admission.check``'s ``found`` when no lookup was made yet.
_NOT_LOOKED_UP: Any = object()


class _Failed:
    """A lookup made in a worker thread raised ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error


class Admission:
    """The one admission step of every listener (see the module docstring).

    Args:
        node: the hub (database, stats).
        throttle: the failed-authentication accounting shared by every listener.
    """

    def __init__(self, node: HubNode, throttle: AuthThrottle) -> None:
        self.node = node
        self.throttle = throttle
        self.proxies = proxy_networks(getattr(node.config, "trusted_proxies", ()) or ())

    def address(self, peer: str, forwarded: str | None) -> str:
        """The client's address behind ``peer`` (see :func:`client_address`)."""
        return client_address(peer, forwarded, self.proxies)

    def throttled(self, creds: tuple[str, str] | None, address: str, now: float) -> Refusal | None:
        """The throttle's refusal :meth:`check` would give, counting no failure (else None).

        For a listener that refuses before its upgrade (websocket HTTP 429).
        """
        if creds is None:
            return self.blocked(address, now)
        try:
            client = self.lookup(creds[1])
        except Exception:
            return None  # check() answers "unavailable"
        if client is None:
            return self.blocked(address, now)
        return self.blocked(address, now, creds[1])

    def blocked(self, address: str, now: float, key: str | None = None) -> Refusal | None:
        """A refusal when ``address`` (with ``key``) is over its failed-auth budget, else None."""
        slot = _slot(address, key)
        if not self.throttle.blocked(slot, now):
            return None
        self.node.count("auth_throttled")
        retry = int(self.throttle.retry_after(slot, now)) + 1
        LOG.info("refused connection from %s: too many failed authentications", address)
        return Refusal(
            Refused.THROTTLED,
            CloseCode.TRY_AGAIN,
            429,
            "too many failed authentications",
            retry,
        )

    def lookup(self, key: str) -> Any:
        """The live client record of access ``key``, or None.

        Raises:
            Exception: whatever the database raises (the caller answers "unavailable").
        """
        if key == REVOKED_KEY:
            return None
        client = self.node.db.get_client_by_api_key(key)
        if client is None or getattr(client, "api_key", None) != key:
            return None
        return client

    def failed(self, address: str, reason: str, key: str | None = None) -> None:
        """Count one failed authentication of ``address`` (with ``key``: a wrong password)."""
        self.node.count("auth_failures")
        self.throttle.failure(_slot(address, key), self.node.now())
        LOG.info("refused connection from %s: %s", address, reason)

    async def check_off_loop(
        self, creds: tuple[str, str] | None, address: str, now: float
    ) -> Admitted | Refusal:
        """:meth:`check` with the database lookup in a worker thread: a locked
        or slow database never stalls the event loop."""
        if creds is None:
            return self.check(creds, address, now)
        try:
            found: Any = await asyncio.to_thread(self.lookup, creds[1])
        except Exception as exc:
            found = _Failed(exc)
        return self.check(creds, address, now, found=found)

    def check(
        self,
        creds: tuple[str, str] | None,
        address: str,
        now: float,
        *,
        found: Any = _NOT_LOOKED_UP,
    ) -> Admitted | Refusal:
        """Admit ``creds`` (from :func:`parse_authorization`) coming from ``address``.

        ``found``: the lookup's result when it was already made (see :meth:`check_off_loop`).
        """
        if creds is None:
            refusal = self.blocked(address, now)
            if refusal is not None:
                return refusal
            reason = "missing or malformed authorization"
            self.failed(address, reason)
            return Refusal(Refused.MALFORMED, CloseCode.POLICY, 401, reason)
        useragent, key = creds
        try:
            if isinstance(found, _Failed):
                raise found.error
            client = self.lookup(key) if found is _NOT_LOOKED_UP else found
        except Exception:
            self.node.count("errors")
            LOG.exception("client database lookup failed")
            return Refusal(
                Refused.UNAVAILABLE, CloseCode.INTERNAL, 500, "client database unavailable"
            )
        if client is None:
            refusal = self.blocked(address, now)
            if refusal is not None:
                return refusal
            self.failed(address, "invalid access key")
            return Refusal(Refused.UNKNOWN_KEY, CloseCode.POLICY, 401, "invalid access key")
        refusal = self.blocked(address, now, key)
        if refusal is not None:
            return refusal
        return Admitted(client, useragent, key)
