"""Who may use a live HTTP link: the per-link secret, the connection caps, the refusals.

Why a link secret. Every HTTP request names its link by the access key alone,
so before this anyone holding the key (a second device with the same
credentials, a leaked key without the password) could drain a live link's
queued replies, ``/disconnect`` it or ``/connect`` over it. The password never
crosses HTTP, so it cannot be asked for on each poll; instead the hub hands a
random secret to the party that opened the link, and once that party has
proved it can use the link, only it may keep using it.

The rules (docs/hub.md, "Link secrets"):

* ``/connect`` answers ``link_secret``: 32 random bytes, URL-safe Base64, new
  for every link. A client that understands it sends it back on every later
  request in the :data:`LINK_SECRET_HEADER` header (a header, not the query,
  so it stays out of URLs and access logs).
* A link is **bound** once both happened: a request presented its secret
  (*claimed*) and its handshake completed (the connection reached ``READY``:
  whoever opened it also knew the password or pre-shared key). A client that
  never sends the header (the reference client) never binds its link, which
  keeps working exactly as before.
* On a bound link, a request without the secret, or with another one, is
  refused: ``/connect`` with 409 ``link in use`` while the link is live, every
  other endpoint with 403 ``link secret required``, live or tombstone. Each
  refusal is counted ``http_link_refused``; the link is untouched.
* An unbound link can be replaced by any ``/connect`` of its key, as before: a
  party that opened a link but cannot complete the handshake holds nothing.
* A request with a stale secret on an unbound link (ours was replaced by a new
  ``/connect``) is answered 409 ``Client is not connected``, so that client
  starts again instead of reading someone else's link.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any

from aiohttp import web

from hivemind_bus_client.exceptions import CloseCode
from hivemind_bus_client.protocol.connection import State
from hivemind_core.admission import Refusal, Refused
from hivemind_core.links import SatelliteLink
from hivemind_core.listeners.http_wire import PollChannel, json_response

__all__ = [
    "LINK_SECRET_HEADER",
    "guard",
    "new_link_secret",
    "not_connected",
    "over_cap",
    "poll_channel",
    "refused",
]

#: The request header that carries a link's secret.
LINK_SECRET_HEADER = "X-HiveMind-Link-Secret"

_REFUSALS = {
    Refused.MALFORMED: "missing or malformed authorization",
    Refused.UNKNOWN_KEY: "Invalid access key",
    Refused.UNAVAILABLE: "client database unavailable",
    Refused.THROTTLED: "too many failed authentications",
}


def new_link_secret() -> str:
    """A fresh link secret (256 random bits, URL-safe Base64)."""
    return secrets.token_urlsafe(32)


def poll_channel(link: SatelliteLink) -> PollChannel:
    """The :class:`PollChannel` under an HTTP link."""
    channel = link.channel
    assert isinstance(channel, PollChannel)
    return channel


def _bound(link: SatelliteLink, channel: PollChannel) -> bool:
    if link.conn.state is State.READY:
        channel.keyed = True
    return channel.claimed and channel.keyed


def guard(link: SatelliteLink, presented: str | None, path: str) -> web.Response | None:
    """The refusal of a request on ``link`` that presented ``presented``, or None to go on."""
    channel = poll_channel(link)
    if presented is not None and channel.secret:
        if hmac.compare_digest(presented.encode("utf-8"), channel.secret.encode("utf-8")):
            channel.claimed = True
            _bound(link, channel)
            return None
    bound = _bound(link, channel)
    if path == "/connect":
        if bound and not channel.closed:
            link.node.count("http_link_refused")
            return json_response(409, {"error": "link in use"})
        return None
    if bound:
        link.node.count("http_link_refused")
        return json_response(403, {"error": "link secret required"})
    if presented is not None:  # the secret of an older link of this key
        return json_response(
            409,
            {
                "error": "Client is not connected",
                "code": CloseCode.NORMAL,
                "reason": "replaced by a new /connect",
            },
        )
    return None


def over_cap(links: dict[str, SatelliteLink], key: str, address: str, config: Any) -> str | None:
    """Why one more live link from ``address`` (for ``key``) is refused, or None.

    The caps are ``config.max_connections`` and ``max_connections_per_address``
    (0: none). Tombstones do not count, nor the live link of ``key`` (a new
    ``/connect`` replaces it).
    """
    max_total, max_per = config.max_connections, config.max_connections_per_address
    total = per = 0
    for other_key, link in links.items():
        if other_key == key or poll_channel(link).closed:
            continue
        total += 1
        per += link.address == address
    if max_total > 0 and total >= max_total:
        return f"too many connections ({max_total})"
    if max_per > 0 and per >= max_per:
        return f"too many connections from this address ({max_per})"
    return None


def not_connected(channel: PollChannel, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The answer to a request on a tombstone: why it ended, and what is left."""
    data: dict[str, Any] = {
        "error": "Client is not connected",
        "code": channel.close_code,
        "reason": channel.close_reason,
    }
    data.update(extra or {})
    return data


def refused(refusal: Refusal) -> web.Response:
    """The answer to a refused admission (the body is left unread: the TCP connection closes)."""
    headers = None
    if refusal.retry_after is not None:
        headers = {"Retry-After": str(refusal.retry_after)}
    return json_response(refusal.status, {"error": _REFUSALS[refusal.why]}, headers, close=True)
