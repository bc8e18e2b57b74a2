"""QUERY and CASCADE: the bindings that route answers back, and their deadlines.

A request this node takes part in is a :class:`Pending` binding
``query_id -> link it came from``. QUERY: the local agent is asked first
(``AskLocal``); on decline or timeout the request goes upstream; the top node
with no answer replies ``hive.query.timeout``; the first answer wins. CASCADE:
the request floods like PROPAGATE, every node asks its agent, and every answer
travels back along the bindings.

The bindings and their deadlines are kept in
:class:`~hivemind_bus_client.protocol.router.bindings.RequestTable`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ovos_bus_client.message import Message

from hivemind_bus_client.protocol.cascade import new_query_id
from hivemind_bus_client.protocol.message import HiveMessage, HiveMessageType
from hivemind_bus_client.protocol.router.actions import (
    Action,
    AskLocal,
    Deliver,
    Link,
    LinkKind,
    RequestKind,
)
from hivemind_bus_client.protocol.router.bindings import (
    Pending,
    RequestTable,
    TimerEntry,
    TimerKind,
)
from hivemind_bus_client.protocol.router.state import RouterState

__all__ = ["Pending", "RequestRouting", "RequestTable", "TimerEntry", "TimerKind"]

T = HiveMessageType


class RequestRouting(RouterState):
    """The QUERY/CASCADE part of ``Router`` (which inherits it).

    The outbound, drop and deny helpers are ``Router``'s, declared here for
    type checkers.
    """

    if TYPE_CHECKING:

        def _outbound(self, link: Link, message: HiveMessage) -> list[Action]: ...
        def _drop(self, reason: str, link: Link | None, counter: str = "dropped") -> Any: ...
        def _deny(self, link: Link, denied_type: str, code: str, reason: str) -> Any: ...

    # -- QUERY -------------------------------------------------------------------

    def _on_query(self, link: Link, msg: HiveMessage) -> list[Action]:
        md = msg.metadata
        if md.get("is_response"):
            return self._on_query_response(link, msg)
        if link.kind is not LinkKind.SATELLITE:
            return [self._drop("QUERY requests only go up", link)]
        if not link.permissions.can_escalate:
            return [self._deny(link, T.QUERY.value, "query_forbidden", "this client may not query")]
        inner = msg.payload
        if not isinstance(inner, HiveMessage):
            return [self._drop("QUERY without a nested message", link, "malformed")]
        qid = md.get("query_id")
        if not isinstance(qid, str) or not qid:
            qid = md["query_id"] = new_query_id()
        if qid in self.requests.queries:
            return [self._drop("duplicate QUERY", link, "duplicate")]
        if len(self.requests) >= self.max_pending:
            return [self._drop("too many pending requests", link, "overload")]
        if self.requests.pending_from(link.peer) >= self.max_pending_per_link:
            return [self._drop("too many pending requests from this link", link, "pending_quota")]
        up = self.upstream
        if not self._stamp(msg, [up.peer] if up else []):
            return [self._drop("QUERY looped or over the hop limit", link, "loop")]
        originator = md.setdefault("originator_peer", link.ident)
        p = self._add_pending(RequestKind.QUERY, qid, link.peer, msg, str(originator))
        return [AskLocal(qid, inner, p.local_deadline, RequestKind.QUERY, link.peer)]

    def _on_query_response(self, link: Link, msg: HiveMessage) -> list[Action]:
        if link.kind is not LinkKind.UPSTREAM:
            return [self._drop("QUERY answers only come from the master", link, "unroutable")]
        qid = msg.metadata.get("query_id")
        p = self.requests.queries.pop(qid, None) if isinstance(qid, str) else None
        if p is None:
            return [self._drop("answer to an unknown or answered QUERY", link, "late_answer")]
        self._authenticate_responder(link, msg, p)
        return self._respond(p, msg)

    def local_answer(self, query_id: str, reply: Any, now: float) -> list[Action]:
        """The local agent answered request ``query_id`` with ``reply``.

        ``reply`` is an OVOS ``Message``, a HiveMessage (sent as the inner
        message) or a ``{type, data, context}`` dict. QUERY: the first answer
        wins, later ones are dropped. CASCADE: sent back towards the originator.
        """
        self._now = now
        inner = reply if isinstance(reply, HiveMessage) else HiveMessage(T.BUS, reply)
        p = self.requests.queries.pop(query_id, None)
        if p is None:
            p = self.requests.cascades.get(query_id)
            if p is None or p.local_done:
                return [
                    self._drop(
                        "local answer to an unknown or answered request", None, "late_answer"
                    )
                ]
        p.local_done = True
        return self._respond(p, self._response(p, inner))

    def local_decline(self, query_id: str, now: float) -> list[Action]:
        """The local agent cannot answer ``query_id``: fall back at once."""
        self._now = now
        p = self.requests.queries.get(query_id)
        if p is not None and not p.local_done:
            return self._query_fallback(p)
        c = self.requests.cascades.get(query_id)
        if c is not None:
            c.local_done = True
        return []

    def _query_fallback(self, p: Pending) -> list[Action]:
        """Local agent gave up: forward upstream, or answer timeout at the top."""
        p.local_done = True
        up = self.upstream
        if up is None or p.forwarded:
            self.requests.queries.pop(p.query_id, None)
            return self._respond(p, self._timeout_response(p, "no_answer"))
        p.forwarded = True
        p.expires = self._now + self.query_ttl
        self.requests.push(p, TimerKind.EXPIRE, p.expires)
        return self._outbound(up, p.request)

    def _originate_query(self, message: HiveMessage) -> list[Action]:
        md = message.metadata
        qid = md.setdefault("query_id", new_query_id())
        originator = str(md.setdefault("originator_peer", self.node_id))
        up = self.upstream
        if up is None:
            p = Pending(RequestKind.QUERY, qid, None, message, originator, self._now, self._now)
            return self._respond(p, self._timeout_response(p, "no_upstream"))
        p = self._add_pending(RequestKind.QUERY, qid, None, message, originator)
        p.forwarded = True
        self._stamp(message, [up.ident])
        return self._outbound(up, message)

    # -- CASCADE -----------------------------------------------------------------

    def _on_cascade(self, link: Link, msg: HiveMessage) -> list[Action]:
        md = msg.metadata
        if link.kind is LinkKind.SATELLITE and not link.permissions.can_propagate:
            return [
                self._deny(
                    link, T.CASCADE.value, "cascade_forbidden", "this client may not cascade"
                )
            ]
        if md.get("is_response"):
            qid = md.get("query_id")
            p = self.requests.cascades.get(qid) if isinstance(qid, str) else None
            if p is None:
                return [self._drop("answer to an unknown CASCADE", link, "late_answer")]
            if link.peer not in p.sent_to:
                return [
                    self._drop(
                        "CASCADE answer from a link the request was not sent to",
                        link,
                        "unsolicited_answer",
                    )
                ]
            self._authenticate_responder(link, msg, p)
            return self._respond(p, msg)
        inner = msg.payload
        if not isinstance(inner, HiveMessage):
            return [self._drop("CASCADE without a nested message", link, "malformed")]
        qid = md.get("query_id")
        if not isinstance(qid, str) or not qid:
            qid = md["query_id"] = new_query_id()
        if not self.floods.check_and_add("cascade:" + qid):
            return [self._drop("duplicate CASCADE", link, "duplicate")]
        targets = self._flood_targets(link, msg)
        if not self._stamp(msg, [lk.ident for lk in targets]):
            return [self._drop("CASCADE looped or over the hop limit", link, "loop")]
        originator = md.setdefault("originator_peer", link.ident)
        actions: list[Action] = []
        if (
            link.kind is LinkKind.SATELLITE
            and self.requests.pending_from(link.peer) >= self.max_pending_per_link
        ):
            # Over its quota the link's CASCADE is neither answered nor relayed.
            return [self._drop("too many pending requests from this link", link, "pending_quota")]
        if len(self.requests) < self.max_pending:
            p = self._add_pending(RequestKind.CASCADE, qid, link.peer, msg, str(originator))
            p.sent_to = frozenset(lk.peer for lk in targets)
            actions.append(AskLocal(qid, inner, p.local_deadline, RequestKind.CASCADE, link.peer))
        else:
            self._drop("too many pending requests; relaying without answering", link, "overload")
        for lk in targets:
            actions.extend(self._outbound(lk, msg))
        return actions

    def _originate_cascade(self, message: HiveMessage) -> list[Action]:
        md = message.metadata
        qid = md.setdefault("query_id", new_query_id())
        originator = str(md.setdefault("originator_peer", self.node_id))
        self.floods.check_and_add("cascade:" + qid)
        p = self._add_pending(RequestKind.CASCADE, qid, None, message, originator)
        targets = list(self.links.values())
        p.sent_to = frozenset(lk.peer for lk in targets)
        self._stamp(message, [lk.ident for lk in targets])
        return [a for lk in targets for a in self._outbound(lk, message)]

    # -- bookkeeping ---------------------------------------------------------------

    def _add_pending(
        self, kind: RequestKind, qid: str, origin: str | None, msg: HiveMessage, originator: str
    ) -> Pending:
        ttl = self.query_ttl if kind is RequestKind.QUERY else self.cascade_ttl
        p = Pending(
            kind,
            qid,
            origin,
            msg,
            originator,
            local_deadline=self._now + self.query_timeout,
            expires=self._now + ttl,
        )
        self.requests.add(p)
        return p

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must next be called, or None."""
        return self.requests.next_deadline()

    def handle_timer(self, now: float) -> list[Action]:
        """Apply every deadline due at ``now``; returns the resulting actions."""
        self._now = now
        actions: list[Action] = []
        for p, what in self.requests.pop_due(now):
            if p.kind is RequestKind.QUERY:
                if what is TimerKind.LOCAL:
                    actions.extend(self._query_fallback(p))
                else:
                    self.requests.queries.pop(p.query_id, None)
                    actions.extend(self._respond(p, self._timeout_response(p, "no_answer")))
            elif what is TimerKind.LOCAL:
                p.local_done = True
            else:
                self.requests.cascades.pop(p.query_id, None)
        return actions

    def _forget_link(self, link: Link) -> list[Action]:
        """Bindings to or from a removed link: forget them, answer what is owed."""
        actions = super()._forget_link(link)
        for qid, p in list(self.requests.queries.items()):
            if p.origin == link.peer:
                del self.requests.queries[qid]
            elif p.forwarded and link.kind is LinkKind.UPSTREAM:
                del self.requests.queries[qid]
                actions.extend(self._respond(p, self._timeout_response(p, "upstream_lost")))
        for qid, p in list(self.requests.cascades.items()):
            if p.origin == link.peer:
                del self.requests.cascades[qid]
        return actions

    # -- answers -------------------------------------------------------------------

    def _authenticate_responder(self, link: Link, msg: HiveMessage, p: Pending) -> None:
        """Set ``responder_peer`` of an answer received on ``link`` from that link.

        The answer's claim stands only when it names a node that can be behind
        ``link`` (a relay answers for the nodes behind it); a claim to be this
        node or the request's originator, or none at all, is replaced by the
        link's own id and counted ``responder_rewritten``.
        """
        md = msg.metadata
        claimed = md.get("responder_peer")
        if not isinstance(claimed, str) or not claimed or claimed in (self.node_id, p.originator):
            self._count("responder_rewritten")
            md["responder_peer"] = link.ident

    def _response(self, p: Pending, inner: HiveMessage) -> HiveMessage:
        """A response to request ``p`` answered by this node."""
        back = self.links.get(p.origin) if p.origin else None
        return HiveMessage(
            T.QUERY if p.kind is RequestKind.QUERY else T.CASCADE,
            inner,
            node=self.node_id,
            route=[{"source": self.node_id, "targets": [back.ident] if back else []}],
            metadata={
                "query_id": p.query_id,
                "originator_peer": p.originator,
                "responder_peer": self.node_id,
                "is_response": True,
            },
        )

    def _timeout_response(self, p: Pending, error: str) -> HiveMessage:
        return self._response(
            p,
            HiveMessage(
                T.BUS,
                Message(
                    "hive.query.timeout",
                    {"query_id": p.query_id, "error": error},
                    {"source": self.node_id, "destination": p.originator},
                ),
            ),
        )

    def _respond(self, p: Pending, response: HiveMessage) -> list[Action]:
        """Send a response one hop back towards the request's originator."""
        if p.origin is None:
            return [Deliver(response, None, response.msg_type)]
        link = self.links.get(p.origin)
        if link is None:
            return [self._drop("the requester's link is gone", None, "unroutable")]
        if response.route and response.route[-1].get("source") != self.node_id:
            response.route.append({"source": self.node_id, "targets": [link.ident]})
        return self._outbound(link, response)
