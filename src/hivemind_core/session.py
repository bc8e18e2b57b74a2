"""Peer names and OVOS sessions of hub connections.

Peer strings
------------
Each connection is known to the router and the agent by a *peer* string,
``<useragent>::<client_id>::<name>::<session_id>`` as the reference hub names
them (docs/hub.md, sessions and peers). The reference lets two connections with the same key and
session id share one peer, so the second silently replaces the first and a
disconnect of either removes both. :class:`PeerRegistry` hands
out unique names instead: a clash gets a ``::2``, ``::3`` ... suffix.

Sessions
--------
Each connection owns one OVOS session, set by the client's HELLO (and updated
by a BUS message carrying the same ``session_id``). Every message injected on
the satellite's behalf gets a fresh *copy* of it, with the client's skill and
intent blacklists added to ``blacklisted_skills`` / ``blacklisted_intents``:
the reference appended them in place to a list that could be shared between
clients, leaking one client's blacklist into every session.

Private sessions
----------------
The session id a satellite chooses is its own business, not a key into
another client's OVOS state. The agent never sees it bare: every injected
message carries ``<namespace>:<session_id>``, the namespace being
:func:`session_namespace` of this hub's node id and the client id (the 5.x
reference does the same with ``sha256(node_pubkey:client_id)[:16]``). Two
clients choosing the same session id therefore reach the agent as two
sessions, and a non-admin's ``default`` is never the hub device's own. Only
an admin's ``default`` stays bare: admins may drive the hub device's own
session. Answers of the agent going back to the satellite get the bare id
again (:meth:`LinkSession.own_id`), so clients that filter answers by their
session id still match them.

What other satellites see
-------------------------
A peer string names its session, so it is never shown to other links as it
is: :class:`Concealer` gives each link a public name
``<useragent>::<client_id>::<name>::<tag>`` (the tag an HMAC of the peer
string under a per-hub secret: opaque, stable while the hub runs) and hides
session ids that are not the reader's own behind a tag too.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import uuid
from typing import Any

__all__ = [
    "DEFAULT_SESSION",
    "Concealer",
    "LinkSession",
    "PeerRegistry",
    "clone",
    "peer_name",
    "session_namespace",
]

#: The hub device's own OVOS session; only admins may use it.
DEFAULT_SESSION = "default"


def peer_name(useragent: str, client_id: Any, name: str, session_id: str | None = None) -> str:
    """``ua::id::name`` (before the HELLO) or ``ua::id::name::session``."""
    base = f"{useragent}::{client_id}::{name}"
    return base if session_id is None else f"{base}::{session_id}"


def session_namespace(hub_id: str, client_id: Any) -> str:
    """The prefix of a client's session ids on the agent's side.

    16 hex digits of ``sha256(f"{hub_id}:{client_id}")``: the same for every
    connection of one client to one hub (so a client's reconnects keep their
    OVOS state), different for every other client.
    """
    return hashlib.sha256(f"{hub_id}:{client_id}".encode()).hexdigest()[:16]


class Concealer:
    """Opaque names for what one link must not learn about another.

    Args:
        secret: the key of the tags; a fresh random one by default, so tags
            cannot be computed (nor brute-forced from guessable session ids)
            outside this hub.
    """

    __slots__ = ("_secret",)

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret or os.urandom(32)

    def tag(self, value: str) -> str:
        """12 hex digits that stand for ``value`` towards other links."""
        mac = hmac.new(self._secret, value.encode("utf-8", "surrogatepass"), hashlib.sha256)
        return mac.hexdigest()[:12]

    def public_peer(self, useragent: str, client_id: Any, name: str, peer: str) -> str:
        """What other links are told the link ``peer`` is called: no session id in it."""
        return f"{peer_name(useragent, client_id, name)}::{self.tag(peer)}"

    def session_id(self, session_id: str) -> str:
        """A session id shown to a link it does not belong to."""
        return "hidden-" + self.tag("session\0" + session_id)


class PeerRegistry:
    """Unique peer strings for the live connections of one hub."""

    def __init__(self) -> None:
        self._taken: set[str] = set()

    def claim(self, wanted: str) -> str:
        """Reserve ``wanted``, or ``wanted::N`` (smallest N ≥ 2) when it is taken."""
        if wanted not in self._taken:
            self._taken.add(wanted)
            return wanted
        n = 2
        while f"{wanted}::{n}" in self._taken:
            n += 1
        peer = f"{wanted}::{n}"
        self._taken.add(peer)
        return peer

    def release(self, peer: str) -> None:
        """Free a peer string (idempotent)."""
        self._taken.discard(peer)

    def __contains__(self, peer: object) -> bool:
        return peer in self._taken

    def __len__(self) -> int:
        return len(self._taken)


def clone(obj: Any) -> Any:
    """Copy of a JSON-like value: new dicts and lists all the way down, scalars shared."""
    if isinstance(obj, dict):
        return {k: clone(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [clone(v) for v in obj]
    return obj


def _merged(existing: Any, extra: tuple[str, ...]) -> list[Any]:
    out = list(existing) if isinstance(existing, list) else []
    for item in extra:
        if item not in out:
            out.append(item)
    return out


class LinkSession:
    """The OVOS session of one connection and how it is stamped on injected messages.

    Args:
        session: the session dict from the client's HELLO (copied).
        site_id: the site from the HELLO (overrides the session's).
        is_admin: admins may keep the ``default`` session bare.

    ``namespace`` is the prefix of the session id the agent sees (see the
    module docstring); the node sets it with :meth:`bind` when the link
    registers. Until then a non-admin's session has a random private
    namespace, so an unbound session is never anybody else's.
    """

    __slots__ = ("is_admin", "namespace", "session", "site_id")

    def __init__(self, session: Any = None, site_id: Any = None, *, is_admin: bool = False) -> None:
        sess = clone(session) if isinstance(session, dict) else {}
        sid = sess.get("session_id")
        if not isinstance(sid, str) or not sid:
            sess["session_id"] = uuid.uuid4().hex
        if isinstance(site_id, str) and site_id:
            sess["site_id"] = site_id
        self.session: dict[str, Any] = sess
        site = sess.get("site_id")
        self.site_id: str | None = site if isinstance(site, str) else None
        self.is_admin = is_admin
        self.namespace: str | None = None if is_admin else uuid.uuid4().hex[:16]

    @property
    def session_id(self) -> str:
        """The connection's session id, as the satellite chose it."""
        return str(self.session["session_id"])

    def bind(self, hub_id: str, client_id: Any) -> None:
        """Namespace this session for ``client_id`` on hub ``hub_id``.

        Every session is namespaced except an admin's ``default``: only
        admins may use the hub device's own session.
        """
        if self.is_admin and self.session_id == DEFAULT_SESSION:
            self.namespace = None
        else:
            self.namespace = session_namespace(hub_id, client_id)

    @property
    def agent_id(self) -> str:
        """The session id the agent sees: ``<namespace>:<session_id>``."""
        ns = self.namespace
        sid = self.session_id
        return sid if ns is None else f"{ns}:{sid}"

    def own_id(self, session_id: Any) -> str | None:
        """The satellite's own session id when ``session_id`` is its agent id, else None."""
        if not isinstance(session_id, str):
            return None
        ns = self.namespace
        if ns is None:
            return session_id if session_id == self.session_id else None
        prefix = ns + ":"
        if session_id.startswith(prefix):
            return session_id[len(prefix) :]
        return None

    def update_from(self, session: Any) -> None:
        """Adopt a session sent in a message, when it is this connection's session."""
        if isinstance(session, dict) and session.get("session_id") == self.session_id:
            fresh = clone(session)
            if self.site_id is not None and not isinstance(fresh.get("site_id"), str):
                fresh["site_id"] = self.site_id
            self.session = fresh
            site = fresh.get("site_id")
            self.site_id = site if isinstance(site, str) else self.site_id

    def stamp(
        self,
        message: dict[str, Any],
        peer: str,
        skill_blacklist: tuple[str, ...] = (),
        intent_blacklist: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        """The OVOS message dict to inject for ``message`` sent by ``peer``.

        A new dict is returned: the context is copied, ``session`` is a copy of
        this connection's session (its id namespaced, :attr:`agent_id`) plus
        the client's blacklists, ``source`` and ``peer`` are the connection's
        peer, and ``destination`` defaults to ``skills`` (``["audio"]`` for
        ``speak``), as the reference does.
        """
        context = message.get("context")
        context = dict(context) if isinstance(context, dict) else {}
        self.update_from(context.get("session"))
        session = clone(self.session)
        session["session_id"] = self.agent_id
        if skill_blacklist:
            session["blacklisted_skills"] = _merged(
                session.get("blacklisted_skills"), skill_blacklist
            )
        if intent_blacklist:
            session["blacklisted_intents"] = _merged(
                session.get("blacklisted_intents"), intent_blacklist
            )
        context["session"] = session
        context["source"] = peer
        context["peer"] = peer
        mtype = message.get("type")
        if mtype == "speak":
            context["destination"] = ["audio"]
        elif "destination" not in context or context["destination"] is None:
            context["destination"] = "skills"
        data = message.get("data")
        return {"type": mtype, "data": data if isinstance(data, dict) else {}, "context": context}
