"""Return tokens: how an answer of the master finds the satellite that escalated the request.

The master's agent answers an escalated utterance the OVOS way: a message
whose ``context`` is a copy of the request's, addressed (``destination``) to
the peer that delivered it, which is this relay hub. To send that answer on
to the satellite that asked, the relay writes an opaque per-satellite token
into the context of every ESCALATE(BUS) it forwards (``context["hive_return"]``,
keyed by the relay's node id). A BUS message from the master that carries our
token is sent down to that satellite instead of being injected into this
hub's agent, with the satellite's own session and peer in its context, as if
this hub's agent had answered. Tokens, not peer strings, travel upwards, so
the master learns nothing about this hub's satellites.
"""

from __future__ import annotations

import logging
import uuid
from collections import OrderedDict
from typing import Any

from hivemind_bus_client.protocol.message import HiveMessage, HiveMessageType
from hivemind_bus_client.protocol.router import LinkKind
from hivemind_core.node import HubNode
from hivemind_core.session import clone

__all__ = ["MAX_TOKENS", "RETURN_KEY", "ReturnTokens"]

LOG = logging.getLogger(__name__)

T = HiveMessageType

#: Context key of the return tokens relay hubs add to escalated messages.
RETURN_KEY = "hive_return"
#: Satellite tokens remembered (oldest forgotten first).
MAX_TOKENS = 4096


class ReturnTokens:
    """The relay's table of return tokens (see the module docstring).

    Args:
        node: the relay hub (its router knows the satellites, its sessions their sessions).
        max_tokens: tokens remembered; the oldest are forgotten first.
    """

    def __init__(self, node: HubNode, max_tokens: int = MAX_TOKENS) -> None:
        self.node = node
        self.max_tokens = max_tokens
        self._tokens: OrderedDict[str, str] = OrderedDict()  # token -> satellite peer
        self._token_of: dict[str, str] = {}  # satellite peer -> token

    def _token(self, peer: str) -> str:
        token = self._token_of.get(peer)
        if token is None:
            token = uuid.uuid4().hex
            self._token_of[peer] = token
            self._tokens[token] = peer
            while len(self._tokens) > self.max_tokens:
                old, old_peer = self._tokens.popitem(last=False)
                if self._token_of.get(old_peer) == old:
                    del self._token_of[old_peer]
        return token

    def mark(self, message: HiveMessage) -> None:
        """Mark an ESCALATE(BUS) from one of our satellites so its answer can find it."""
        origin = self.node.peer_named(message.source_peer)  # a satellite's public name
        link = self.node.router.links.get(origin) if origin else None
        if link is None or link.kind is not LinkKind.SATELLITE:
            return
        inner = message.payload
        if not isinstance(inner, HiveMessage) or inner.msg_type is not T.BUS:
            return
        ovos = inner.payload
        context = getattr(ovos, "context", None)
        if not isinstance(context, dict):
            return
        marks = context.get(RETURN_KEY)
        marks = dict(marks) if isinstance(marks, dict) else {}
        marks[self.node.node_id] = self._token(link.peer)
        context[RETURN_KEY] = marks

    def relay_down(self, payload: dict[str, Any]) -> bool:
        """Send a BUS answer from the master on to the satellite whose request it answers.

        ``payload`` is the OVOS message dict. Returns False when it carries no
        token of ours (the message is for this hub itself, the caller injects
        it); True when it was handled (sent down, or dropped because that
        satellite is gone).
        """
        context = payload.get("context")
        if not isinstance(context, dict):
            return False
        marks = context.get(RETURN_KEY)
        if not isinstance(marks, dict):
            return False
        token = marks.get(self.node.node_id)
        if not isinstance(token, str):
            return False
        server = self.node
        peer = self._tokens.get(token)
        if peer is None or peer not in server.router.links:
            server.count("upstream_answer_unroutable")
            LOG.debug("answer from the master for a satellite that is gone; dropped")
            return True
        context = dict(context)
        rest = {k: v for k, v in marks.items() if k != server.node_id}
        if rest:
            context[RETURN_KEY] = rest
        else:
            del context[RETURN_KEY]
        # The master answered the relay's session; the satellite gets its own
        # back, as if this hub's agent had answered (the master's view of the
        # relay stays upstream).
        context["destination"] = peer
        context["peer"] = peer
        session = server.sessions.get(peer)
        if session is not None:
            context["session"] = clone(session.session)
        out = {"type": payload.get("type"), "data": payload.get("data") or {}, "context": context}
        server.count("upstream_answers_relayed")
        server.execute(server.router.send_to([peer], HiveMessage(T.BUS, out)))
        return True
