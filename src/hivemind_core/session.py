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
"""

from __future__ import annotations

import uuid
from typing import Any

__all__ = [
    "DEFAULT_SESSION",
    "LinkSession",
    "PeerRegistry",
    "clone",
    "peer_name",
]

#: The hub device's own OVOS session; only admins may use it.
DEFAULT_SESSION = "default"


def peer_name(useragent: str, client_id: Any, name: str, session_id: str | None = None) -> str:
    """``ua::id::name`` (before the HELLO) or ``ua::id::name::session``."""
    base = f"{useragent}::{client_id}::{name}"
    return base if session_id is None else f"{base}::{session_id}"


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
        is_admin: admins may keep the ``default`` session.
    """

    __slots__ = ("session", "site_id")

    def __init__(self, session: Any = None, site_id: Any = None, *, is_admin: bool = False) -> None:
        sess = clone(session) if isinstance(session, dict) else {}
        sid = sess.get("session_id")
        if not isinstance(sid, str) or not sid or (sid == DEFAULT_SESSION and not is_admin):
            # The reference kicks such clients; we give them a private session instead.
            sess["session_id"] = uuid.uuid4().hex
        if isinstance(site_id, str) and site_id:
            sess["site_id"] = site_id
        self.session: dict[str, Any] = sess
        site = sess.get("site_id")
        self.site_id: str | None = site if isinstance(site, str) else None

    @property
    def session_id(self) -> str:
        """The connection's session id."""
        return str(self.session["session_id"])

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
        this connection's session plus the client's blacklists, ``source`` and
        ``peer`` are the connection's peer, and ``destination`` defaults to
        ``skills`` (``["audio"]`` for ``speak``), as the reference does.
        """
        context = message.get("context")
        context = dict(context) if isinstance(context, dict) else {}
        self.update_from(context.get("session"))
        session = clone(self.session)
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
