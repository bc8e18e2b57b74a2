"""Sans-I/O routing core: who may send what, and where each message goes.

Theory of operation
-------------------
A node (a hub, a relay hub, or a satellite) keeps one :class:`Router`. Its
links are :class:`Link` records: satellites below it (``LinkKind.SATELLITE``,
with the :class:`Permissions` of their client record) and at most one master
above it (``LinkKind.UPSTREAM``). For every message that arrives on a link the
I/O layer calls :meth:`Router.handle` and carries out the returned actions:

* :class:`Deliver` — hand the message to this node (agent injection for BUS,
  observers for SHARED_BUS, the binary handler for BINARY, local handlers for
  the rest);
* :class:`Send` — write a message to one link;
* :class:`Deny` — answer the sender with ``hive.policy.denied`` and count it;
  ``close=True`` means the link must be closed with 4003;
* :class:`Drop` — log and count, nothing else.

Every permission decision is made here, once, and every denial goes through
:meth:`Router._deny`. The router never touches sockets, threads or clocks.

Routing rules (seed docs 002/003; the reference 4.0.0 hub implements few of them):

* BUS from a satellite: checked against ``allowed_types``, then delivered.
* ESCALATE goes up only: a relay forwards it to its master; the top node delivers it.
* BROADCAST goes down only: admins (with ``can_broadcast``) and the master may
  send it; each node delivers it when ``target_site_id`` is unset or its own
  site, and fans it out to its satellites (only those of ``target_site_id``
  when set, plus relay hubs, which pass it on).
* PROPAGATE floods every direction once per node (flood-id cache) and never
  goes back to a node already on its route.
* Every transport hop appends ``{"source": node_id, "targets": [...]}`` to the
  route; a message whose route is longer than ``hop_limit`` is dropped.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from ovos_bus_client.message import Message

from hivemind_bus_client.message import HiveMessage, HiveMessageType

__all__ = [
    "Action",
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

T = HiveMessageType


class LinkKind(Enum):
    """Where a link sits relative to this node."""

    SATELLITE = "satellite"
    UPSTREAM = "upstream"


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
    """One link of this node, as the router sees it."""

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


@dataclass(frozen=True, slots=True)
class Deliver:
    """Handle ``message`` at this node; ``origin`` is the link it came from."""

    message: HiveMessage
    origin: str | None


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
    """Discard a message (logged and counted by the caller)."""

    reason: str
    peer: str | None = None


Action = Deliver | Send | Deny | Drop


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


class Router:
    """The routing decisions of one node.

    Args:
        node_id: this node's id, written into route hops.
        site_id: this node's site (BROADCAST ``target_site_id`` matching).
        hop_limit: longest route a transport message may have.
        flood_cache_size: PROPAGATE ids remembered for duplicate suppression.
        max_violations: refused originations tolerated before a link is closed (4003).
    """

    def __init__(
        self,
        node_id: str,
        site_id: str | None = None,
        *,
        hop_limit: int = 16,
        flood_cache_size: int = 4096,
        max_violations: int = 3,
    ) -> None:
        self.node_id = node_id
        self.site_id = site_id
        self.hop_limit = hop_limit
        self.max_violations = max_violations
        self.links: dict[str, Link] = {}
        self.floods = FloodCache(flood_cache_size)
        self.counters: dict[str, int] = {}

    # -- links ---------------------------------------------------------------

    def add_link(self, link: Link) -> None:
        """Register a link (replacing one with the same peer)."""
        self.links[link.peer] = link

    def remove_link(self, peer: str) -> None:
        """Forget a link."""
        self.links.pop(peer, None)

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

    def _count(self, what: str) -> None:
        self.counters[what] = self.counters.get(what, 0) + 1

    # -- inbound ---------------------------------------------------------------

    def handle(self, peer: str, message: HiveMessage) -> list[Action]:
        """Decide what to do with ``message`` that arrived on link ``peer``."""
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

    def _on_escalate(self, link: Link, msg: HiveMessage) -> list[Action]:
        if link.kind is LinkKind.UPSTREAM:
            return [self._drop("ESCALATE from the master (escalate only goes up)", link)]
        if not link.permissions.can_escalate:
            return [
                self._deny(
                    link, T.ESCALATE.value, "escalate_forbidden", "this client may not escalate"
                )
            ]
        if not self._stamp(msg, [link.peer]):
            return [self._drop("ESCALATE looped or over the hop limit", link)]
        up = self.upstream
        if up is not None:
            return [Send(up.peer, msg)]
        inner = msg.payload
        if not isinstance(inner, HiveMessage):
            return [self._drop("ESCALATE without a nested message", link)]
        return [Deliver(inner, link.peer)]

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
        return self._fan_down(link, msg)

    def _fan_down(self, link: Link | None, msg: HiveMessage) -> list[Action]:
        peer = link.peer if link else None
        if not self._stamp(msg, [lk.peer for lk in self.satellites() if lk.peer != peer]):
            return [self._drop("BROADCAST looped or over the hop limit", link)]
        actions: list[Action] = []
        target = msg.target_site_id
        inner = msg.payload
        if isinstance(inner, HiveMessage) and (target is None or target == self.site_id):
            actions.append(Deliver(inner, peer))
        for sat in self.satellites():
            if sat.peer == peer:
                continue
            if target is not None and sat.site_id != target and not sat.is_hub:
                continue
            actions.extend(self._outbound(sat, msg))
        return actions

    def _on_propagate(self, link: Link, msg: HiveMessage) -> list[Action]:
        if link.kind is LinkKind.SATELLITE and not link.permissions.can_propagate:
            return [
                self._deny(
                    link, T.PROPAGATE.value, "propagate_forbidden", "this client may not propagate"
                )
            ]
        flood = msg.metadata.get("flood_id")
        if not isinstance(flood, str) or not flood:
            flood = msg.metadata["flood_id"] = uuid.uuid4().hex
        if not self.floods.check_and_add(flood):
            return [self._drop("duplicate PROPAGATE", link)]
        visited = {hop.get("source") for hop in msg.route if isinstance(hop, dict)}
        targets = [
            lk for lk in self.links.values() if lk.peer != link.peer and lk.peer not in visited
        ]
        if not self._stamp(msg, [lk.peer for lk in targets]):
            return [self._drop("PROPAGATE over the hop limit", link)]
        actions: list[Action] = []
        inner = msg.payload
        if isinstance(inner, HiveMessage):
            actions.append(Deliver(inner, link.peer))
        for lk in targets:
            actions.extend(self._outbound(lk, msg))
        return actions

    # -- outbound ----------------------------------------------------------------

    def originate(self, message: HiveMessage) -> list[Action]:
        """Route a transport message created at this node (e.g. by its agent)."""
        mtype = message.msg_type
        if mtype is T.BROADCAST:
            return [a for a in self._fan_down(None, message) if not isinstance(a, Deliver)]
        if mtype is T.ESCALATE:
            up = self.upstream
            if up is None:
                return [self._drop("ESCALATE at the top of the hive", None)]
            self._stamp(message, [up.peer])
            return [Send(up.peer, message)]
        if mtype is T.PROPAGATE:
            flood = message.metadata.setdefault("flood_id", uuid.uuid4().hex)
            self.floods.check_and_add(flood)
            targets = list(self.links.values())
            self._stamp(message, [lk.peer for lk in targets])
            return [a for lk in targets for a in self._outbound(lk, message)]
        return [self._drop(f"cannot originate {mtype.value}", None)]

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
        return [Send(link.peer, message)]

    # -- helpers -----------------------------------------------------------------

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

    def _drop(self, reason: str, link: Link | None) -> Drop:
        self._count("dropped")
        return Drop(reason, link.peer if link else None)

    def _deny(
        self, link: Link, denied_type: str, code: str, reason: str, violation: bool = True
    ) -> Deny:
        """The one place a message is refused: counts, and decides whether to close."""
        self._count("denied")
        close = False
        if violation:
            link.violations += 1
            close = link.violations >= self.max_violations
        return Deny(link.peer, denied_type, code, reason, close)


_HANDLERS = {
    T.BUS: Router._on_bus,
    T.SHARED_BUS: Router._on_deliver,
    T.BINARY: Router._on_deliver,
    T.ESCALATE: Router._on_escalate,
    T.BROADCAST: Router._on_broadcast,
    T.PROPAGATE: Router._on_propagate,
}
