"""Sans-I/O routing core: who may send what, and where each message goes.

Theory of operation
-------------------
Every node of a hive (a top hub, a relay hub, a satellite) keeps one
:class:`Router`. Its links are :class:`Link` records of three kinds:

* ``LinkKind.SATELLITE``: a client connected to this node's listener, with the
  :class:`Permissions` of its client record. Everything it originates is checked.
* ``LinkKind.UPSTREAM``: this node's master (at most one is used for ESCALATE
  and QUERY). Messages from it are not permission-checked: we chose to connect.
* ``LinkKind.PEER``: a cross link to another node that is neither master nor
  satellite (a second outgoing connection, as in a mesh with cycles). Only
  floods (PROPAGATE, CASCADE, BROADCAST already travelling down) and the replies
  routed along them (PONG, CASCADE responses) use it; ESCALATE and QUERY never do.

For every message that arrives on a link the I/O layer calls
:meth:`Router.handle` with the current time, and carries out the returned
actions **in order**. The router never touches sockets, threads or clocks; its
only deadlines (QUERY/CASCADE local answers and binding lifetimes) are
published by :meth:`Router.get_timer` and applied by :meth:`Router.handle_timer`.

Actions, and what a service must do with each
----------------------------------------------
=============  ================================================================
``Deliver``    Handle ``message`` at this node. BUS: inject into the agent
               (``origin`` is the link it came from; ``via`` the transport that
               carried it: ESCALATE, BROADCAST, PROPAGATE, INTERCOM, or None for
               plain BUS; ``sender`` the trusted alias that signed an INTERCOM).
               SHARED_BUS: observers. BINARY: the binary handler. PING (``via``
               PROPAGATE): informational, e.g. emit ``hive.ping.received``.
               PONG / QUERY response / CASCADE response: this node originated the
               request, give it to whoever asked (client API, HiveMapper,
               CascadeAggregator). Anything else: local handlers.
``Send``       Encode ``message`` on the link ``peer`` and write it.
``Deny``       Answer ``peer`` with :func:`denial_message` (BUS
               ``hive.policy.denied``); when ``close`` is true, then close that
               link with code 4003. Already counted and logged by the router.
``Drop``       Nothing to send. Already counted (``Router.counters``) and logged.
``AskLocal``   (new) Ask this node's local agent to answer ``message`` (the
               inner request of a QUERY or CASCADE, ``kind`` says which) before
               ``deadline``. When the agent answers call
               :meth:`Router.local_answer` (``query_id``, reply, now); when it
               cannot answer call :meth:`Router.local_decline`. Doing nothing is
               allowed: at ``deadline`` :meth:`Router.handle_timer` falls back
               (QUERY: forward upstream or answer ``hive.query.timeout``;
               CASCADE: no answer from this node). Execute the returned actions.
=============  ================================================================

Besides executing actions, a service must: pass its loop time as ``now`` to
``handle``/``originate``/``local_answer``/``local_decline``; keep one timer at
:meth:`Router.get_timer` and call :meth:`Router.handle_timer` when it fires;
execute the actions :meth:`Router.remove_link` returns (QUERYs that were
waiting on a lost master are answered ``hive.query.timeout``); set
``Link.node_id`` to the id the peer stamps into routes when it differs from the
peer string, ``Link.is_hub`` for relay hubs, and ``Link.trusted`` (or
``trusted_keys=``) for trust; and give the router its ``private_key`` so
INTERCOM meant for this node can be opened.

Routing rules (seed docs 002/003 are the contract; the reference 4.0.0 hub
implements few of them):

* BUS from a satellite: checked against ``allowed_types``, then delivered.
* ESCALATE goes up only: a relay forwards it to its master; the top node
  delivers the inner message. Needs ``can_escalate`` on a satellite link.
* BROADCAST goes down only: admins with ``can_broadcast`` and the master may
  send it; each node delivers it when ``target_site_id`` is unset or its own
  site, and sends it to its satellites (only those of ``target_site_id`` when
  set, plus relay hubs, which pass it on).
* PROPAGATE floods every direction. Needs ``can_propagate``.
* QUERY (request up, one answer down): needs ``can_escalate``. The node asks
  its local agent (``AskLocal``); on decline or timeout it forwards upstream;
  the top node with no answer replies ``hive.query.timeout``. The first answer
  wins and travels back along the bindings ``query_id -> link it came from``.
* CASCADE (scatter/gather): needs ``can_propagate``. Floods like PROPAGATE;
  every node asks its agent; every answer travels back along the bindings.
* PING travels inside PROPAGATE. Every node that sees a PING flood the first
  time answers a PONG carrying the route the PING travelled; PONGs go back
  along the flood's spanning tree (``flood_id -> link it came from``). Since
  one PING makes every node answer, a satellite link may start at most
  ``ping_rate`` PING floods a second (after a burst of ``ping_burst``); more
  are dropped and counted (``ping_rate_limited``).
* INTERCOM (see :mod:`hivemind_bus_client.protocol.intercom`) rides inside a transport.
  Each node it reaches tries to open it with its own key; the recipient
  delivers the inner message (ESCALATE stops there), the others pass it on
  unread. Tampered, unsigned or untrusted ones are dropped and counted.
* Trust: an inner BUS of a PROPAGATE is injected only when the link it came on
  is trusted (``Link.trusted``, or its ``pubkey`` in ``trusted_keys``); the
  flood itself still goes on (seed doc 001, "Trusted Keys").

Loops and duplicates: every transport hop appends
``{"source": node_id, "targets": [...]}`` to ``route``; a node never forwards a
message whose route already holds it, never sends a flood to a neighbour on
its route, remembers flood ids in a bounded :class:`FloodCache` (so a mesh with
cycles delivers each flood exactly once per node), and drops any transport
message whose route is ``hop_limit`` long.

Every refusal goes through :meth:`Router._deny` (answer + count + log, and the
4003 decision after ``max_violations``); every discard through
:meth:`Router._drop` (count + log).
"""

from __future__ import annotations

import heapq
import logging
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from ovos_bus_client.message import Message

from hivemind_bus_client.protocol import crypto
from hivemind_bus_client.protocol.intercom import IntercomResult, TrustStore, open_sealed
from hivemind_bus_client.protocol.message import HiveMessage, HiveMessageType

__all__ = [
    "Action",
    "AskLocal",
    "Deliver",
    "Deny",
    "Drop",
    "FloodCache",
    "Link",
    "LinkKind",
    "Permissions",
    "Router",
    "Send",
    "denial_message",
]

LOG = logging.getLogger(__name__)

T = HiveMessageType


class LinkKind(Enum):
    """Where a link sits relative to this node (see the module docstring)."""

    SATELLITE = "satellite"
    UPSTREAM = "upstream"
    PEER = "peer"


@dataclass
class Permissions:
    """What a link may originate, from its client record.

    ``allowed_types=None`` allows every BUS type (used for the upstream link).
    """

    is_admin: bool = False
    allowed_types: frozenset[str] | None = None
    message_blacklist: frozenset[str] = frozenset()
    skill_blacklist: tuple[str, ...] = ()
    intent_blacklist: tuple[str, ...] = ()
    can_broadcast: bool = True
    can_escalate: bool = True
    can_propagate: bool = True

    @classmethod
    def from_record(cls, record: Any) -> Permissions:
        """Build from any object with the client record's attribute names."""
        allowed = getattr(record, "allowed_types", None)
        return cls(
            is_admin=bool(getattr(record, "is_admin", False)),
            allowed_types=frozenset(allowed) if allowed is not None else None,
            message_blacklist=frozenset(getattr(record, "message_blacklist", None) or ()),
            skill_blacklist=tuple(getattr(record, "skill_blacklist", None) or ()),
            intent_blacklist=tuple(getattr(record, "intent_blacklist", None) or ()),
            can_broadcast=bool(getattr(record, "can_broadcast", True)),
            can_escalate=bool(getattr(record, "can_escalate", True)),
            can_propagate=bool(getattr(record, "can_propagate", True)),
        )


@dataclass
class Link:
    """One link of this node, as the router sees it.

    ``peer`` is the key the I/O layer uses for the link; ``node_id`` is the id
    the node at the other end writes into routes (defaults to ``peer``), which
    is what loop checks compare.
    """

    peer: str
    kind: LinkKind = LinkKind.SATELLITE
    permissions: Permissions = field(default_factory=Permissions)
    site_id: str | None = None
    session_id: str | None = None
    pubkey: str | None = None
    #: The link is a relay hub (it announced itself as one in its HELLO), so
    #: site-targeted broadcasts pass through it.
    is_hub: bool = False
    #: Origination attempts refused so far.
    violations: int = 0
    #: Route id of the node at the other end, when it differs from ``peer``.
    node_id: str | None = None
    #: The operator trusts this link: inner BUS of its PROPAGATEs is injected.
    trusted: bool = False
    #: PING token bucket (see ``Router.ping_rate``): tokens left, and when counted.
    ping_tokens: float | None = None
    ping_stamp: float = 0.0

    @property
    def ident(self) -> str:
        """The id this link's node uses in routes."""
        return self.node_id or self.peer


@dataclass(frozen=True, slots=True)
class Deliver:
    """Handle ``message`` at this node; ``origin`` is the link it came from.

    ``via`` is the transport type that carried it here (None for a message that
    came as itself); ``sender`` the trusted alias that signed an INTERCOM.
    """

    message: HiveMessage
    origin: str | None
    via: HiveMessageType | None = None
    sender: str | None = None


@dataclass(frozen=True, slots=True)
class Send:
    """Write ``message`` to the link ``peer``."""

    peer: str
    message: HiveMessage


@dataclass(frozen=True, slots=True)
class Deny:
    """Refuse a message from ``peer``: answer, count, and close with 4003 when ``close``."""

    peer: str
    denied_type: str
    code: str
    reason: str
    close: bool = False


@dataclass(frozen=True, slots=True)
class Drop:
    """Discard a message (already counted and logged by the router)."""

    reason: str
    peer: str | None = None


@dataclass(frozen=True, slots=True)
class AskLocal:
    """Ask the local agent to answer ``message`` before ``deadline``.

    ``kind`` is ``"query"`` or ``"cascade"``; ``origin`` the link the request
    came from (None when this node originated it). Answer with
    :meth:`Router.local_answer`, decline with :meth:`Router.local_decline`.
    """

    query_id: str
    message: HiveMessage
    deadline: float
    kind: str = "query"
    origin: str | None = None


Action = Deliver | Send | Deny | Drop | AskLocal


def denial_message(deny: Deny, source: str = "hivemind-core") -> HiveMessage:
    """The BUS ``hive.policy.denied`` message that tells a client what was refused."""
    return HiveMessage(
        T.BUS,
        Message(
            "hive.policy.denied",
            {"denied_type": deny.denied_type, "code": deny.code, "reason": deny.reason},
            {"source": source, "destination": deny.peer},
        ),
    )


class FloodCache:
    """Bounded memory of flood ids already handled (oldest forgotten first)."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._seen: OrderedDict[str, None] = OrderedDict()

    def check_and_add(self, flood_id: str) -> bool:
        """True when ``flood_id`` is new (and remember it)."""
        if flood_id in self._seen:
            return False
        self._seen[flood_id] = None
        if len(self._seen) > self.size:
            self._seen.popitem(last=False)
        return True

    def __contains__(self, flood_id: object) -> bool:
        return flood_id in self._seen

    def __len__(self) -> int:
        return len(self._seen)


def bus_type(message: HiveMessage) -> str | None:
    """The OVOS message type a BUS/SHARED_BUS message carries (innermost for wrappers)."""
    m = message
    for _ in range(32):
        if m.msg_type in (T.BUS, T.SHARED_BUS):
            p = m._payload
            return p.get("type") if isinstance(p, dict) else p.msg_type
        inner = m.payload if m.msg_type in _WRAPPERS else None
        if not isinstance(inner, HiveMessage):
            return None
        m = inner
    return None


_WRAPPERS = frozenset({T.BROADCAST, T.PROPAGATE, T.ESCALATE, T.QUERY, T.CASCADE})

#: Timer kinds of a pending request.
_LOCAL = "local"
_EXPIRE = "expire"


@dataclass(slots=True)
class _Pending:
    """A QUERY or CASCADE this node takes part in: where answers must go back to."""

    kind: str
    query_id: str
    origin: str | None
    request: HiveMessage
    originator: str
    local_deadline: float
    expires: float
    #: QUERY: the request went upstream. CASCADE: unused.
    forwarded: bool = False
    #: The local agent answered, declined or ran out of time.
    local_done: bool = False


class Router:
    """The routing decisions of one node.

    Args:
        node_id: this node's id, written into route hops.
        site_id: this node's site (BROADCAST ``target_site_id`` matching).
        hop_limit: longest route a transport message may have.
        flood_cache_size: flood ids (PROPAGATE, BROADCAST, CASCADE) remembered
            for duplicate suppression.
        max_violations: refused originations tolerated before a link is closed (4003).
        private_key: this node's RSA key, to open INTERCOM messages meant for it.
        trusted_keys: ``alias -> PEM`` (or PEMs) of senders whose INTERCOM and
            PROPAGATE(BUS) this node accepts.
        query_timeout: seconds the local agent has to answer a QUERY or CASCADE.
        query_ttl: seconds a QUERY forwarded upstream is remembered; then the
            node answers ``hive.query.timeout`` itself.
        cascade_ttl: seconds a CASCADE binding is kept to route answers back.
        max_pending: QUERY + CASCADE bindings kept at once (over it, new
            requests are dropped and counted).
        ping_cache_size: PING floods whose PONG route back is remembered.
        require_trusted_propagate: inject the inner BUS of a PROPAGATE only
            from trusted links (seed doc 001); False injects every one.
        ping_rate: PING floods per second a satellite link may start (each
            one makes every node of the hive answer, so an unbounded rate is
            an amplifier); ``ping_burst`` more are allowed at once. 0 = no limit.
    """

    def __init__(
        self,
        node_id: str,
        site_id: str | None = None,
        *,
        hop_limit: int = 16,
        flood_cache_size: int = 4096,
        max_violations: int = 3,
        private_key: crypto.PrivateKey | None = None,
        trusted_keys: Any = (),
        query_timeout: float = 8.0,
        query_ttl: float = 300.0,
        cascade_ttl: float = 300.0,
        max_pending: int = 1024,
        ping_cache_size: int = 4096,
        require_trusted_propagate: bool = True,
        ping_rate: float = 1.0,
        ping_burst: int = 5,
    ) -> None:
        self.node_id = node_id
        self.site_id = site_id
        self.hop_limit = hop_limit
        self.max_violations = max_violations
        self.links: dict[str, Link] = {}
        self.floods = FloodCache(flood_cache_size)
        self.counters: dict[str, int] = {}
        self.private_key = private_key
        self.public_key = crypto.public_key_pem(private_key) if private_key else None
        self.trust = (
            trusted_keys if isinstance(trusted_keys, TrustStore) else TrustStore(trusted_keys)
        )
        self.query_timeout = query_timeout
        self.query_ttl = query_ttl
        self.cascade_ttl = cascade_ttl
        self.max_pending = max_pending
        self.ping_cache_size = ping_cache_size
        self.require_trusted_propagate = require_trusted_propagate
        self.ping_rate = ping_rate
        self.ping_burst = ping_burst
        self._queries: dict[str, _Pending] = {}
        self._cascades: dict[str, _Pending] = {}
        self._timers: list[tuple[float, int, str, str, str]] = []
        self._seq = 0
        #: PING flood id -> link its PING came from (None: we sent it).
        self._ping_parents: OrderedDict[str, str | None] = OrderedDict()
        #: Time of the call being handled (handlers read it; set by each entry point).
        self._now = 0.0

    # -- links ---------------------------------------------------------------

    def add_link(self, link: Link) -> None:
        """Register a link (replacing one with the same peer)."""
        self.links[link.peer] = link

    def remove_link(self, peer: str) -> list[Action]:
        """Forget a link; returns the answers this owes to others.

        QUERYs that came from ``peer`` are forgotten; QUERYs forwarded to it
        (it was the master) are answered ``hive.query.timeout`` now, since no
        answer can come back. CASCADE bindings towards ``peer`` are dropped.
        Older callers may ignore the result.
        """
        link = self.links.pop(peer, None)
        actions: list[Action] = []
        if link is None:
            return actions
        for qid, p in list(self._queries.items()):
            if p.origin == peer:
                del self._queries[qid]
            elif p.forwarded and link.kind is LinkKind.UPSTREAM:
                del self._queries[qid]
                actions.extend(self._respond(p, self._timeout_response(p, "upstream_lost")))
        for qid, p in list(self._cascades.items()):
            if p.origin == peer:
                del self._cascades[qid]
        return actions

    @property
    def upstream(self) -> Link | None:
        """The master link, if connected."""
        for link in self.links.values():
            if link.kind is LinkKind.UPSTREAM:
                return link
        return None

    def satellites(self) -> Iterable[Link]:
        """Links below this node."""
        return (lk for lk in self.links.values() if lk.kind is LinkKind.SATELLITE)

    def set_trusted_keys(self, keys: Any) -> None:
        """Replace the trusted keys (``alias -> PEM`` or PEMs)."""
        self.trust = keys if isinstance(keys, TrustStore) else TrustStore(keys)

    def is_trusted(self, link: Link) -> bool:
        """Whether PROPAGATE(BUS) from this link may be injected here."""
        return link.trusted or (link.pubkey is not None and link.pubkey in self.trust)

    def _count(self, what: str) -> None:
        self.counters[what] = self.counters.get(what, 0) + 1

    # -- inbound ---------------------------------------------------------------

    def handle(self, peer: str, message: HiveMessage, now: float = 0.0) -> list[Action]:
        """Decide what to do with ``message`` that arrived on link ``peer`` at ``now``."""
        self._now = now
        link = self.links.get(peer)
        if link is None:
            self._count("dropped")
            return [Drop("message from an unknown link", peer)]
        message.source_peer = peer
        handler = _HANDLERS.get(message.msg_type, Router._on_opaque)
        return handler(self, link, message)

    def _on_bus(self, link: Link, msg: HiveMessage) -> list[Action]:
        if link.kind is LinkKind.SATELLITE:
            allowed = link.permissions.allowed_types
            mtype = bus_type(msg)
            if allowed is not None and mtype not in allowed:
                return [
                    self._deny(
                        link,
                        mtype or "",
                        "acl_disallowed_type",
                        f"message type {mtype!r} is not allowed for this client",
                        violation=False,
                    )
                ]
        return [Deliver(msg, link.peer)]

    def _on_deliver(self, link: Link, msg: HiveMessage) -> list[Action]:
        return [Deliver(msg, link.peer)]

    def _on_opaque(self, link: Link, msg: HiveMessage) -> list[Action]:
        return [Deliver(msg, link.peer)]

    def _on_bare_ping(self, link: Link, msg: HiveMessage) -> list[Action]:
        return [self._drop("PING must travel inside PROPAGATE", link, "malformed")]

    def _on_escalate(self, link: Link, msg: HiveMessage) -> list[Action]:
        if link.kind is not LinkKind.SATELLITE:
            return [self._drop("ESCALATE from above or aside (escalate only goes up)", link)]
        if not link.permissions.can_escalate:
            return [
                self._deny(
                    link, T.ESCALATE.value, "escalate_forbidden", "this client may not escalate"
                )
            ]
        up = self.upstream
        if not self._stamp(msg, [up.peer] if up else []):
            return [self._drop("ESCALATE looped or over the hop limit", link, "loop")]
        inner = msg.payload
        if not isinstance(inner, HiveMessage):
            return [self._drop("ESCALATE without a nested message", link, "malformed")]
        if inner.msg_type is T.INTERCOM:
            opened = self._try_intercom(inner, link, T.ESCALATE)
            if opened is not None:
                return opened  # ours (or refused): the climb ends here
            if up is None:
                return [
                    self._drop("INTERCOM reached the top unopened", link, "intercom_undeliverable")
                ]
            return self._outbound(up, msg)
        if up is not None:
            return self._outbound(up, msg)
        return self._local(inner, link, T.ESCALATE)

    def _on_broadcast(self, link: Link, msg: HiveMessage) -> list[Action]:
        if link.kind is LinkKind.SATELLITE:
            perms = link.permissions
            if not (perms.is_admin and perms.can_broadcast):
                return [
                    self._deny(
                        link,
                        T.BROADCAST.value,
                        "broadcast_forbidden",
                        "only admins with can_broadcast may broadcast",
                    )
                ]
        if not self.floods.check_and_add(self._flood_id(msg)):
            return [self._drop("duplicate BROADCAST", link, "duplicate")]
        return self._fan_down(link, msg)

    def _fan_down(self, link: Link | None, msg: HiveMessage) -> list[Action]:
        peer = link.peer if link else None
        visited = _visited(msg)
        target = msg.target_site_id
        down = [
            sat
            for sat in self.satellites()
            if sat.peer != peer
            and sat.ident not in visited
            and (target is None or sat.site_id == target or sat.is_hub)
        ]
        if not self._stamp(msg, [lk.ident for lk in down]):
            return [self._drop("BROADCAST looped or over the hop limit", link, "loop")]
        actions: list[Action] = []
        inner = msg.payload
        if isinstance(inner, HiveMessage) and (target is None or target == self.site_id):
            actions.extend(self._local(inner, link, T.BROADCAST))
        for sat in down:
            actions.extend(self._outbound(sat, msg))
        return actions

    def _on_propagate(self, link: Link, msg: HiveMessage) -> list[Action]:
        if link.kind is LinkKind.SATELLITE and not link.permissions.can_propagate:
            return [
                self._deny(
                    link, T.PROPAGATE.value, "propagate_forbidden", "this client may not propagate"
                )
            ]
        flood = self._flood_id(msg)
        if not self.floods.check_and_add(flood):
            return [self._drop("duplicate PROPAGATE", link, "duplicate")]
        travelled = [dict(hop) for hop in msg.route if isinstance(hop, dict)]
        targets = self._flood_targets(link, msg)
        if not self._stamp(msg, [lk.ident for lk in targets]):
            return [self._drop("PROPAGATE looped or over the hop limit", link, "loop")]
        actions: list[Action] = []
        inner = msg.payload
        if isinstance(inner, HiveMessage):
            if inner.msg_type is T.PING:
                if not self._ping_allowed(link):
                    return [self._drop("PING rate limit", link, "ping_rate_limited")]
                actions.extend(self._answer_ping(link, flood, inner, travelled))
            else:
                actions.extend(self._local(inner, link, T.PROPAGATE))
        for lk in targets:
            actions.extend(self._outbound(lk, msg))
        return actions

    def _ping_allowed(self, link: Link) -> bool:
        """Take a token from a satellite link's PING bucket; False when it is empty."""
        if link.kind is not LinkKind.SATELLITE or self.ping_rate <= 0:
            return True
        now = self._now
        burst = float(max(1, self.ping_burst))
        tokens = burst if link.ping_tokens is None else link.ping_tokens
        tokens = min(burst, tokens + (now - link.ping_stamp) * self.ping_rate)
        link.ping_stamp = now
        if tokens < 1.0:
            link.ping_tokens = tokens
            return False
        link.ping_tokens = tokens - 1.0
        return True

    def _flood_targets(self, link: Link | None, msg: HiveMessage) -> list[Link]:
        visited = _visited(msg)
        return [
            lk
            for lk in self.links.values()
            if (link is None or lk.peer != link.peer) and lk.ident not in visited
        ]

    # -- local handling of a transport's inner message ---------------------------

    def _local(self, inner: HiveMessage, link: Link | None, via: HiveMessageType) -> list[Action]:
        """What this node does with the inner message of a transport it handles."""
        origin = link.peer if link else None
        if inner.msg_type is T.INTERCOM:
            return self._try_intercom(inner, link, via) or []
        if (
            via is T.PROPAGATE
            and inner.msg_type is T.BUS
            and link is not None
            and self.require_trusted_propagate
        ):
            if not self.is_trusted(link):
                return [
                    self._drop(
                        "PROPAGATE(BUS) from an untrusted link is not injected",
                        link,
                        "propagate_untrusted",
                    )
                ]
        return [Deliver(inner, origin, via)]

    def _try_intercom(
        self, inner: HiveMessage, link: Link | None, via: HiveMessageType | None
    ) -> list[Action] | None:
        """Open an INTERCOM if it is ours; None when it is not (pass it on)."""
        if self.private_key is None:
            return None
        opened = open_sealed(inner.payload, self.private_key, self.trust)
        result = opened.result
        if result is IntercomResult.NOT_FOR_US:
            return None
        if result is IntercomResult.OPENED and opened.message is not None:
            self._count("intercom_opened")
            origin = link.peer if link else None
            return [Deliver(opened.message, origin, T.INTERCOM, opened.sender)]
        counter = {
            IntercomResult.TAMPERED: "intercom_tampered",
            IntercomResult.UNTRUSTED: "intercom_untrusted",
        }.get(result, "intercom_malformed")
        return [self._drop(f"INTERCOM {result.value}", link, counter)]

    def _on_intercom(self, link: Link, msg: HiveMessage) -> list[Action]:
        """A bare INTERCOM is single hop: ours or nobody's."""
        opened = self._try_intercom(msg, link, None)
        if opened is None:
            return [self._drop("bare INTERCOM not for this node", link, "intercom_undeliverable")]
        return opened

    # -- PING / PONG -------------------------------------------------------------

    def _answer_ping(
        self, link: Link, flood: str, ping: HiveMessage, travelled: list[dict[str, Any]]
    ) -> list[Action]:
        self._remember_ping(flood, link.peer)
        payload = ping.payload if isinstance(ping.payload, dict) else {}
        pong = HiveMessage(
            T.PONG,
            {
                "flood_id": flood,
                "ping_id": payload.get("ping_id") or payload.get("flood_id") or flood,
                "peer": self.node_id,
                "site_id": self.site_id,
                "timestamp": payload.get("timestamp"),
                "hops": len(travelled),
                "public_key": self.public_key,
            },
            node=self.node_id,
            route=travelled,
            metadata={"flood_id": flood},
        )
        return [Deliver(ping, link.peer, T.PROPAGATE), *self._outbound(link, pong)]

    def _remember_ping(self, flood: str, parent: str | None) -> None:
        self._ping_parents[flood] = parent
        if len(self._ping_parents) > self.ping_cache_size:
            self._ping_parents.popitem(last=False)

    def _on_pong(self, link: Link, msg: HiveMessage) -> list[Action]:
        payload = msg.payload if isinstance(msg.payload, dict) else {}
        flood = payload.get("flood_id") or msg.metadata.get("flood_id")
        if not isinstance(flood, str) or flood not in self._ping_parents:
            return [self._drop("PONG for a PING this node did not see", link, "unroutable")]
        parent = self._ping_parents[flood]
        if parent is None:
            return [Deliver(msg, link.peer)]
        up = self.links.get(parent)
        if up is None:
            return [self._drop("PONG's way back is gone", link, "unroutable")]
        return self._outbound(up, msg)

    def ping(self, now: float, **fields: Any) -> tuple[str, list[Action]]:
        """Start a PING flood from this node; returns its flood id and the sends.

        ``fields`` are added to the PING payload (e.g. ``lang``).
        """
        flood = uuid.uuid4().hex
        payload = {
            "ping_id": flood,
            "flood_id": flood,
            "peer": self.node_id,
            "site_id": self.site_id,
            "timestamp": now,
            **fields,
        }
        msg = HiveMessage(T.PROPAGATE, HiveMessage(T.PING, payload), metadata={"flood_id": flood})
        return flood, self.originate(msg, now=now)

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
            qid = md["query_id"] = uuid.uuid4().hex
        if qid in self._queries:
            return [self._drop("duplicate QUERY", link, "duplicate")]
        if len(self._queries) + len(self._cascades) >= self.max_pending:
            return [self._drop("too many pending requests", link, "overload")]
        up = self.upstream
        if not self._stamp(msg, [up.peer] if up else []):
            return [self._drop("QUERY looped or over the hop limit", link, "loop")]
        originator = md.setdefault("originator_peer", link.ident)
        p = self._add_pending("query", qid, link.peer, msg, str(originator))
        return [AskLocal(qid, inner, p.local_deadline, "query", link.peer)]

    def _on_query_response(self, link: Link, msg: HiveMessage) -> list[Action]:
        if link.kind is not LinkKind.UPSTREAM:
            return [self._drop("QUERY answers only come from the master", link, "unroutable")]
        qid = msg.metadata.get("query_id")
        p = self._queries.get(qid) if isinstance(qid, str) else None
        if p is None:
            return [self._drop("answer to an unknown or answered QUERY", link, "late_answer")]
        del self._queries[p.query_id]
        return self._respond(p, msg)

    def local_answer(self, query_id: str, reply: Any, now: float) -> list[Action]:
        """The local agent answered request ``query_id`` with ``reply``.

        ``reply`` is an OVOS ``Message``, a HiveMessage (sent as the inner
        message) or a ``{type, data, context}`` dict. QUERY: the first answer
        wins, later ones are dropped. CASCADE: sent back towards the originator.
        """
        self._now = now
        inner = reply if isinstance(reply, HiveMessage) else HiveMessage(T.BUS, reply)
        p = self._queries.pop(query_id, None)
        if p is None:
            p = self._cascades.get(query_id)
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
        p = self._queries.get(query_id)
        if p is not None and not p.local_done:
            return self._query_fallback(p)
        c = self._cascades.get(query_id)
        if c is not None:
            c.local_done = True
        return []

    def _query_fallback(self, p: _Pending) -> list[Action]:
        """Local agent gave up: forward upstream, or answer timeout at the top."""
        p.local_done = True
        up = self.upstream
        if up is None or p.forwarded:
            self._queries.pop(p.query_id, None)
            return self._respond(p, self._timeout_response(p, "no_answer"))
        p.forwarded = True
        p.expires = self._now + self.query_ttl
        self._push_timer(p, _EXPIRE, p.expires)
        return self._outbound(up, p.request)

    # -- CASCADE -----------------------------------------------------------------

    def _on_cascade(self, link: Link, msg: HiveMessage) -> list[Action]:
        md = msg.metadata
        if md.get("is_response"):
            return self._on_cascade_response(link, msg)
        if link.kind is LinkKind.SATELLITE and not link.permissions.can_propagate:
            return [
                self._deny(
                    link, T.CASCADE.value, "cascade_forbidden", "this client may not cascade"
                )
            ]
        inner = msg.payload
        if not isinstance(inner, HiveMessage):
            return [self._drop("CASCADE without a nested message", link, "malformed")]
        qid = md.get("query_id")
        if not isinstance(qid, str) or not qid:
            qid = md["query_id"] = uuid.uuid4().hex
        if not self.floods.check_and_add("cascade:" + qid):
            return [self._drop("duplicate CASCADE", link, "duplicate")]
        targets = self._flood_targets(link, msg)
        if not self._stamp(msg, [lk.ident for lk in targets]):
            return [self._drop("CASCADE looped or over the hop limit", link, "loop")]
        originator = md.setdefault("originator_peer", link.ident)
        actions: list[Action] = []
        if len(self._queries) + len(self._cascades) < self.max_pending:
            p = self._add_pending("cascade", qid, link.peer, msg, str(originator))
            actions.append(AskLocal(qid, inner, p.local_deadline, "cascade", link.peer))
        else:
            self._drop("too many pending requests; relaying without answering", link, "overload")
        for lk in targets:
            actions.extend(self._outbound(lk, msg))
        return actions

    def _on_cascade_response(self, link: Link, msg: HiveMessage) -> list[Action]:
        if link.kind is LinkKind.SATELLITE and not link.permissions.can_propagate:
            return [
                self._deny(
                    link, T.CASCADE.value, "cascade_forbidden", "this client may not cascade"
                )
            ]
        qid = msg.metadata.get("query_id")
        p = self._cascades.get(qid) if isinstance(qid, str) else None
        if p is None:
            return [self._drop("answer to an unknown CASCADE", link, "late_answer")]
        return self._respond(p, msg)

    # -- requests: bookkeeping ---------------------------------------------------

    def _add_pending(
        self, kind: str, qid: str, origin: str | None, msg: HiveMessage, originator: str
    ) -> _Pending:
        ttl = self.query_ttl if kind == "query" else self.cascade_ttl
        p = _Pending(
            kind,
            qid,
            origin,
            msg,
            originator,
            local_deadline=self._now + self.query_timeout,
            expires=self._now + ttl,
        )
        (self._queries if kind == "query" else self._cascades)[qid] = p
        if origin is not None:
            self._push_timer(p, _LOCAL, p.local_deadline)
        else:
            p.local_done = True
        self._push_timer(p, _EXPIRE, p.expires)
        return p

    def _push_timer(self, p: _Pending, what: str, when: float) -> None:
        self._seq += 1
        heapq.heappush(self._timers, (when, self._seq, p.kind, p.query_id, what))

    def _timer_valid(self, entry: tuple[float, int, str, str, str]) -> _Pending | None:
        when, _, kind, qid, what = entry
        p = (self._queries if kind == "query" else self._cascades).get(qid)
        if p is None:
            return None
        if what == _LOCAL:
            return p if not p.local_done and p.local_deadline == when else None
        return p if p.expires == when else None

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must next be called, or None."""
        while self._timers and self._timer_valid(self._timers[0]) is None:
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    def handle_timer(self, now: float) -> list[Action]:
        """Apply every deadline due at ``now``; returns the resulting actions."""
        self._now = now
        actions: list[Action] = []
        while self._timers and self._timers[0][0] <= now:
            entry = heapq.heappop(self._timers)
            p = self._timer_valid(entry)
            if p is None:
                continue
            what = entry[4]
            if p.kind == "query":
                if what == _LOCAL:
                    actions.extend(self._query_fallback(p))
                else:
                    self._queries.pop(p.query_id, None)
                    actions.extend(self._respond(p, self._timeout_response(p, "no_answer")))
            elif what == _LOCAL:
                p.local_done = True
            else:
                self._cascades.pop(p.query_id, None)
        return actions

    def _response(self, p: _Pending, inner: HiveMessage) -> HiveMessage:
        """A response to request ``p`` answered by this node."""
        return HiveMessage(
            T.QUERY if p.kind == "query" else T.CASCADE,
            inner,
            node=self.node_id,
            route=[{"source": self.node_id, "targets": [p.origin] if p.origin else []}],
            metadata={
                "query_id": p.query_id,
                "originator_peer": p.originator,
                "responder_peer": self.node_id,
                "is_response": True,
            },
        )

    def _timeout_response(self, p: _Pending, error: str) -> HiveMessage:
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

    def _respond(self, p: _Pending, response: HiveMessage) -> list[Action]:
        """Send a response one hop back towards the request's originator."""
        if p.origin is None:
            return [Deliver(response, None, response.msg_type)]
        link = self.links.get(p.origin)
        if link is None:
            return [self._drop("the requester's link is gone", None, "unroutable")]
        if response.route and response.route[-1].get("source") != self.node_id:
            response.route.append({"source": self.node_id, "targets": [link.ident]})
        return self._outbound(link, response)

    # -- outbound ----------------------------------------------------------------

    def originate(self, message: HiveMessage, now: float = 0.0) -> list[Action]:
        """Route a transport message created at this node (by its agent or client).

        BROADCAST goes to the satellites (a node without satellites hands it
        to its master, as an admin client does), ESCALATE and QUERY to the master,
        PROPAGATE and CASCADE to every link; a bare PING is wrapped in
        PROPAGATE. Answers to a QUERY/CASCADE/PING started here come back as
        ``Deliver`` actions.
        """
        self._now = now
        mtype = message.msg_type
        if mtype is T.BROADCAST:
            up = self.upstream
            if up is not None and not any(True for _ in self.satellites()):
                # A plain satellite (an admin client) asks its hub to broadcast;
                # the hub checks is_admin/can_broadcast on this link.
                self._stamp(message, [up.ident])
                return self._outbound(up, message)
            self.floods.check_and_add(self._flood_id(message))
            return [a for a in self._fan_down(None, message) if not isinstance(a, Deliver)]
        if mtype is T.ESCALATE:
            up = self.upstream
            if up is None:
                return [self._drop("ESCALATE at the top of the hive", None)]
            self._stamp(message, [up.ident])
            return self._outbound(up, message)
        if mtype is T.PING:
            return self.originate(
                HiveMessage(T.PROPAGATE, message, metadata={"flood_id": uuid.uuid4().hex}), now
            )
        if mtype is T.PROPAGATE:
            flood = self._flood_id(message)
            self.floods.check_and_add(flood)
            inner = message.payload
            if isinstance(inner, HiveMessage) and inner.msg_type is T.PING:
                self._remember_ping(flood, None)
                if isinstance(inner.payload, dict):
                    inner.payload.setdefault("timestamp", now)
                    inner.payload.setdefault("flood_id", flood)
            targets = list(self.links.values())
            self._stamp(message, [lk.ident for lk in targets])
            return [a for lk in targets for a in self._outbound(lk, message)]
        if mtype is T.QUERY:
            return self._originate_query(message)
        if mtype is T.CASCADE:
            return self._originate_cascade(message)
        return [self._drop(f"cannot originate {mtype.value}", None)]

    def _originate_query(self, message: HiveMessage) -> list[Action]:
        md = message.metadata
        qid = md.setdefault("query_id", uuid.uuid4().hex)
        md.setdefault("originator_peer", self.node_id)
        p = _Pending("query", qid, None, message, str(md["originator_peer"]), self._now, self._now)
        up = self.upstream
        if up is None:
            return self._respond(p, self._timeout_response(p, "no_upstream"))
        p = self._add_pending("query", qid, None, message, str(md["originator_peer"]))
        p.forwarded = True
        self._stamp(message, [up.ident])
        return self._outbound(up, message)

    def _originate_cascade(self, message: HiveMessage) -> list[Action]:
        md = message.metadata
        qid = md.setdefault("query_id", uuid.uuid4().hex)
        md.setdefault("originator_peer", self.node_id)
        self.floods.check_and_add("cascade:" + qid)
        self._add_pending("cascade", qid, None, message, str(md["originator_peer"]))
        targets = list(self.links.values())
        self._stamp(message, [lk.ident for lk in targets])
        return [a for lk in targets for a in self._outbound(lk, message)]

    def send_to(self, peers: Iterable[str], message: HiveMessage) -> list[Action]:
        """Send a message to the given links, honouring each one's outbound blacklist."""
        actions: list[Action] = []
        for peer in peers:
            link = self.links.get(peer)
            if link is None:
                actions.append(Drop("no such link", peer))
                continue
            actions.extend(self._outbound(link, message))
        return actions

    def _outbound(self, link: Link, message: HiveMessage) -> list[Action]:
        blacklist = link.permissions.message_blacklist
        if blacklist:
            mtype = bus_type(message)
            if mtype in blacklist or message.msg_type.value in blacklist:
                self._count("filtered")
                return [
                    Drop(
                        f"{mtype or message.msg_type.value} is blacklisted for this client",
                        link.peer,
                    )
                ]
        self._count("sent")
        return [Send(link.peer, message)]

    # -- helpers -----------------------------------------------------------------

    @staticmethod
    def _flood_id(msg: HiveMessage) -> str:
        """The flood id of a flooding message, assigned when missing."""
        flood = msg.metadata.get("flood_id")
        if not isinstance(flood, str) or not flood:
            flood = msg.metadata["flood_id"] = uuid.uuid4().hex
        return flood

    def _stamp(self, msg: HiveMessage, targets: list[str]) -> bool:
        """Append this node's hop; False when the message looped or is over the hop limit."""
        route = msg.route
        for hop in route:
            if isinstance(hop, dict) and hop.get("source") == self.node_id:
                return False
        if len(route) >= self.hop_limit:
            return False
        route.append({"source": self.node_id, "targets": targets})
        return True

    def _drop(self, reason: str, link: Link | None, counter: str = "dropped") -> Drop:
        """The one place a message is discarded: counts and logs."""
        self._count(counter)
        if counter != "dropped":
            self._count("dropped")
        peer = link.peer if link else None
        if LOG.isEnabledFor(logging.DEBUG):
            LOG.debug("%s: drop (%s) from %s: %s", self.node_id, counter, peer, reason)
        return Drop(reason, peer)

    def _deny(
        self, link: Link, denied_type: str, code: str, reason: str, violation: bool = True
    ) -> Deny:
        """The one place a message is refused: counts, logs, and decides whether to close."""
        self._count("denied")
        self._count("denied:" + code)
        close = False
        if violation:
            link.violations += 1
            close = link.violations >= self.max_violations
        LOG.info(
            "%s: denied %s from %s (%s: %s)%s",
            self.node_id,
            denied_type,
            link.peer,
            code,
            reason,
            "; closing with 4003" if close else "",
        )
        return Deny(link.peer, denied_type, code, reason, close)


def _visited(msg: HiveMessage) -> set[Any]:
    """Node ids already on a message's route."""
    return {hop.get("source") for hop in msg.route if isinstance(hop, dict)}


_HANDLERS = {
    T.BUS: Router._on_bus,
    T.SHARED_BUS: Router._on_deliver,
    T.BINARY: Router._on_deliver,
    T.ESCALATE: Router._on_escalate,
    T.BROADCAST: Router._on_broadcast,
    T.PROPAGATE: Router._on_propagate,
    T.QUERY: Router._on_query,
    T.CASCADE: Router._on_cascade,
    T.INTERCOM: Router._on_intercom,
    T.PING: Router._on_bare_ping,
    T.PONG: Router._on_pong,
}
