"""What the hub node does with the router's decisions about itself: deliver, deny, drop, ask.

:class:`Delivery` is the part of :class:`~hivemind_core.node.HubNode` that
faces the agent: a ``Deliver`` of a BUS message reaches the agent only through
:meth:`Delivery.admit` (the one admission step), SHARED_BUS goes to the
agent's ``observe`` and the observers, BINARY to the binary handler, other
types to :attr:`local_handlers`; ``Deny`` answers and maybe closes the link;
``AskLocal`` asks the agent; agent replies come back through
:meth:`Delivery.agent_reply`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from typing import Any

from ovos_bus_client.message import Message

from hivemind_bus_client.exceptions import CloseCode
from hivemind_bus_client.protocol.framing import plaintext
from hivemind_bus_client.protocol.message import HiveMessage, HiveMessageType
from hivemind_bus_client.protocol.router import (
    AskLocal,
    Deliver,
    Deny,
    Drop,
    Permissions,
    Router,
    denial_message,
)
from hivemind_core.agents.base import Agent
from hivemind_core.binary import BinaryHandler
from hivemind_core.config import HubConfig
from hivemind_core.ratelimit import AGENT, RateLimits
from hivemind_core.session import Concealer, LinkSession
from hivemind_core.sinks import Sink, UpstreamSink

__all__ = ["Delivery"]

LOG = logging.getLogger(__name__)

T = HiveMessageType

#: A session id namespaced by :meth:`LinkSession.bind` (16 hex digits and a colon).
_NAMESPACED = re.compile(r"[0-9a-f]{16}:")


class Delivery:
    """The node's agent side (mixed into :class:`~hivemind_core.node.HubNode`)."""

    router: Router
    agent: Agent
    binary_handler: BinaryHandler
    sinks: dict[str, Sink]
    sessions: dict[str, LinkSession]
    upstream: UpstreamSink | None
    concealer: Concealer
    local_handlers: dict[HiveMessageType, Callable[[HiveMessage, str | None], None]]
    shared_bus_observers: list[Callable[[dict[str, Any], str | None], None]]
    limits: RateLimits
    config: HubConfig

    def count(self, what: str, n: int = 1) -> None:
        raise NotImplementedError

    def now(self) -> float:
        raise NotImplementedError

    def execute(self, actions: Iterable[Any], origin: str | None = None) -> None:
        raise NotImplementedError

    def send_to(self, peer: str, message: HiveMessage) -> None:
        """Send ``message`` to ``peer`` through the router (the reply path of handlers)."""
        self.execute(self.router.send_to([peer], message))

    def drop(self, drop: Drop) -> None:
        """A message the router refused to pass on: counted (and logged at DEBUG)."""
        self.count("dropped")
        if LOG.isEnabledFor(logging.DEBUG):
            LOG.debug("dropped message from %s: %s", drop.peer, drop.reason)

    def ask_local(self, action: AskLocal) -> None:
        """Ask the agent to answer a QUERY/CASCADE request; feed its answer to the router."""
        qid = action.query_id
        inner = action.message
        payload = inner.payload_dict() if inner.msg_type in (T.BUS, T.SHARED_BUS) else None
        done = False

        def answered(reply: dict[str, Any] | None) -> None:
            nonlocal done
            if done:
                return
            done = True
            now = self.now()
            if reply is None:
                self.execute(self.router.local_decline(qid, now))
            else:
                reply = self._answer_for(action.origin, reply)
                self.execute(self.router.local_answer(qid, reply, now))

        admitted = None if payload is None else self.admit(payload, action.origin, ask=True)
        if admitted is None:
            answered(None)
            return
        self.agent.ask(admitted, answered)

    def _answer_for(self, origin: str | None, reply: Any) -> Any:
        """The agent's answer to a satellite's request, as that satellite may see it."""
        if origin is None or origin not in self.sessions:
            return reply
        if isinstance(reply, HiveMessage) and reply.msg_type is T.BUS:
            reply = reply.payload_dict()
        elif isinstance(reply, Message):
            reply = {"type": reply.msg_type, "data": reply.data, "context": reply.context}
        if not isinstance(reply, dict) or not isinstance(reply.get("context"), dict):
            return reply
        return {**reply, "context": self.seen_by(origin, reply["context"])}

    def deny(self, deny: Deny) -> None:
        """Answer a denial to its link; close the link when the router says so."""
        self.count("denied")
        sink = self.sinks.get(deny.peer)
        if LOG.isEnabledFor(logging.DEBUG):
            LOG.debug("denied %s from %s: %s", deny.denied_type, deny.peer, deny.reason)
        if sink is None:
            return
        sink.send_message(denial_message(deny))
        if deny.close:
            self.count("kicked")
            LOG.info("closing %s after repeated violations: %s", deny.peer, deny.reason)
            sink.close(CloseCode.PERMISSION, f"permission violations: {deny.reason}")

    def fits(self, message: HiveMessage, origin: str | None, refused: set[int]) -> bool:
        """Whether ``message`` is small enough to forward (``max_forward_size``).

        The size is that of what every frame of it carries under the seal (its
        JSON text in UTF-8, or the binary frame of a BINARY), made once per
        message (``framing.encode_once``). Peers refuse frames over 16 MiB by
        default, and a text encoding can double the size (JSON-HEX), so the
        default is 4 MiB. A bigger message goes to no link: counted
        ``forward_too_big`` and logged once per message (``refused`` holds the
        ids already refused in this batch), and its sender (``origin``, else
        its ``source_peer``) is told (``too_big``); other links are untouched.
        """
        limit = self.config.max_forward_size
        if limit <= 0:
            return True
        body = plaintext(message, message.msg_type is T.BINARY)
        size = len(body) if isinstance(body, bytes) or body.isascii() else len(body.encode())
        if size <= limit:
            return True
        if id(message) not in refused:
            refused.add(id(message))
            self.count("forward_too_big")
            sender = origin or message.source_peer
            LOG.warning(
                "not forwarding a %d-byte %s from %s (max_forward_size %d)",
                size,
                message.msg_type.value,
                sender or "this node",
                limit,
            )
            if sender is not None and sender in self.sinks:
                reason = f"message of {size} bytes is over the forwarding limit of {limit}"
                self.deny(Deny(sender, message.msg_type.value, "too_big", reason, False))
        return False

    def rate_denied(self, peer: str, what: str) -> None:
        """Answer and count a message refused by a rate limit of link ``peer``."""
        self.count("rate_limited")
        self.deny(Deny(peer, what, "rate_limited", "rate limit exceeded, slow down", False))

    def deliver(self, action: Deliver) -> None:
        """A message the router delivered to this node: agent, observers, binary or handlers."""
        message, origin = action.message, action.origin
        mtype = message.msg_type
        if mtype is T.BUS:
            out = self.admit(message.payload_dict(), origin)
            if out is None:
                return
            if origin in self.sessions:
                self.share_up(out)  # first: the agent may answer before inject returns
            self.agent.inject(out)
        elif mtype is T.SHARED_BUS:
            self.count("shared_bus")
            payload = message.payload_dict()
            self.agent.observe(payload, origin or "")
            for observer in self.shared_bus_observers:
                observer(payload, origin)
        elif mtype is T.BINARY:
            peer = origin or ""
            self.binary_handler.handle(message, peer, lambda m: self.send_to(peer, m))
        else:
            handler = self.local_handlers.get(mtype)
            if handler is None:
                self.count("unhandled")
                if LOG.isEnabledFor(logging.DEBUG):
                    LOG.debug("no local handler for %s from %s", mtype.value, origin)
            else:
                handler(message, origin)

    def admit(
        self, payload: dict[str, Any], origin: str | None, *, ask: bool = False
    ) -> dict[str, Any] | None:
        """THE admission step of every message on its way to the agent.

        Used for plain BUS, for the BUS inside every wrapper delivered here
        (ESCALATE answered at the top, PROPAGATE, BROADCAST, INTERCOM) and for
        every local ask of a QUERY/CASCADE (``ask=True``). Returns the dict the
        agent gets (always a fresh one), or None when the message is not for
        the agent: a type outside the satellite's ``allowed_types`` (denied
        and counted), or an answer of the master relayed down. A satellite's
        message carries that satellite's own session, with its skill and
        intent blacklists, and a non-admin may not address another live
        satellite through the agent.
        """
        session = self.sessions.get(origin) if origin is not None else None
        if session is not None and origin is not None:
            rlink = self.router.links.get(origin)
            perms = rlink.permissions if rlink is not None else Permissions()
            mtype = payload.get("type")
            allowed = perms.allowed_types
            if allowed is not None and mtype not in allowed:
                self.count("admission_denied")
                self.deny(
                    Deny(
                        origin,
                        str(mtype or ""),
                        "acl_disallowed_type",
                        f"message type {mtype!r} is not allowed for this client",
                        False,
                    )
                )
                return None
            if not self.limits.allow(AGENT, origin, self.now()):
                self.rate_denied(origin, str(mtype or ""))
                return None
            out = session.stamp(
                payload, origin, tuple(perms.skill_blacklist), tuple(perms.intent_blacklist)
            )
            if not perms.is_admin:
                self._guard_destination(out["context"], origin)
            return out
        up = self.upstream
        if not ask and up is not None and origin is not None and self.sinks.get(origin) is up:
            if up.relay_down(payload):
                return None  # an answer from the master for one of our satellites
        return dict(payload)

    def share_up(self, payload: dict[str, Any]) -> None:
        """With ``upstream.share_bus``, show the master a message of this hub's bus."""
        up = self.upstream
        if up is None or not up.share_bus or not up.connected:
            return
        self.count("shared_up")
        up.send_message(HiveMessage(T.SHARED_BUS, payload))

    def _guard_destination(self, context: dict[str, Any], origin: str) -> None:
        """A non-admin may not address another live satellite through the agent."""
        dest = context.get("destination")
        sinks = self.sinks
        if isinstance(dest, str):
            if dest != origin and dest in sinks:
                context["destination"] = "skills"
                self.count("destination_rewritten")
        elif isinstance(dest, list) and any(
            isinstance(d, str) and d != origin and d in sinks for d in dest
        ):
            context["destination"] = [
                d for d in dest if not (d in sinks and d != origin)
            ] or "skills"
            self.count("destination_rewritten")

    # -- agent side ------------------------------------------------------------------

    def agent_reply(self, message: dict[str, Any]) -> None:
        """Route an agent message to the satellites named in ``context.destination``."""
        try:
            context = message.get("context")
            if not isinstance(context, dict):
                return
            dest = context.get("destination")
            sinks = self.sinks
            if isinstance(dest, str):
                if dest not in sinks:
                    return
                targets = [dest]
            elif isinstance(dest, list):
                targets = [d for d in dest if isinstance(d, str) and d in sinks]
                if not targets:
                    return
            else:
                return
            context = dict(context)
            context["source"] = "hive"
            mtype, data = message.get("type"), message.get("data")
            for target in targets:
                seen = {"type": mtype, "data": data, "context": self.seen_by(target, context)}
                self.execute(self.router.send_to([target], HiveMessage(T.BUS, seen)))
            self.share_up({"type": mtype, "data": data, "context": context})
        except Exception:
            self.count("errors")
            LOG.exception("routing an agent reply failed")

    def seen_by(self, reader: str, context: dict[str, Any]) -> dict[str, Any]:
        """What satellite ``reader`` is shown of an agent message's ``context`` (a new dict).

        The session id of the reader's own session loses its namespace again
        (clients match answers by their session id); a namespaced id of
        another client's session is hidden; peers of other links in
        ``peer``, ``source`` and ``destination`` become their public names.
        The reader's own peer stays as it is.
        """
        out = dict(context)
        session = out.get("session")
        sid = session.get("session_id") if isinstance(session, dict) else None
        if isinstance(session, dict) and isinstance(sid, str):
            own = self.sessions.get(reader)
            mine = own.own_id(sid) if own is not None else None
            if mine is not None:
                out["session"] = {**session, "session_id": mine}
            elif _NAMESPACED.match(sid):
                out["session"] = {**session, "session_id": self.concealer.session_id(sid)}
        for key in ("peer", "source", "destination"):
            value = out.get(key)
            if isinstance(value, str):
                out[key] = self._shown(value, reader)
            elif isinstance(value, list):
                out[key] = [self._shown(v, reader) if isinstance(v, str) else v for v in value]
        return out

    def _shown(self, name: str, reader: str) -> str:
        """``name`` as ``reader`` may see it: its own peer, or another link's public name."""
        if name == reader or "::" not in name:
            return name
        link = self.router.links.get(name)
        if link is not None:
            return link.public or name
        parts = name.split("::")
        if len(parts) < 4:
            return name
        # A satellite that is gone: the public name it had.
        return f"{'::'.join(parts[:3])}::{self.concealer.tag(name)}"
