"""In-process mesh harness: many nodes, real handshakes, in-memory links, a fake clock.

Each :class:`MeshNode` is what a hub service or a satellite client would be,
minus sockets: one :class:`Router`, one sans-I/O :class:`Connection` per link
(``Role.HUB`` for every satellite below it, ``Role.CLIENT`` for its master and
its cross links), a fake local agent, and records of every action the router
returned. :class:`Mesh` joins nodes through the real handshake code (pre-shared
key by default, or the password handshake) and then runs a discrete-event
simulation: every frame takes ``latency`` seconds of fake time to cross its
link, router timers fire in time order, and nothing ever sleeps.

Every node's router actions are carried out by a real
:class:`~hivemind_core.node.HubNode` (its one executor: ``Send`` to a link,
``Deliver`` through the admission step to the agent or a handler, ``Deny``
answered then closed 4003 when asked, ``Drop``, ``AskLocal`` to the agent);
the harness only provides what the node sees of the world: a :class:`WireSink`
per link, an agent that asks the node's :class:`FakeAgent`, the fake clock,
and ``handle_timer`` when ``get_timer`` says so.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ovos_bus_client.message import Message

from hivemind_bus_client import crypto
from hivemind_bus_client.connection import (
    CloseRequested,
    Connection,
    HelloReceived,
    MessageReceived,
    Role,
    State,
)
from hivemind_bus_client.message import HiveMessage, HiveMessageType
from hivemind_bus_client.router import (
    Action,
    AskLocal,
    Deliver,
    Deny,
    Drop,
    Link,
    LinkKind,
    Permissions,
    Router,
)
from hivemind_core.agents.base import Agent, AnswerCallback
from hivemind_core.config import HubConfig
from hivemind_core.node import HubNode

T = HiveMessageType

#: Default one-way link latency, in fake seconds.
LATENCY = 0.001

_KEYS: list[crypto.PrivateKey] = []


def rsa_key(index: int) -> crypto.PrivateKey:
    """A cached RSA key (generating one costs tens of milliseconds)."""
    while len(_KEYS) <= index:
        _KEYS.append(crypto.create_private_key())
    return _KEYS[index]


class FakeAgent:
    """A node's local agent for QUERY/CASCADE.

    ``mode``: ``"answer"`` replies after ``delay`` fake seconds, ``"decline"``
    says it cannot answer at once, ``"silent"`` never responds (the router's
    timeout must act).
    """

    def __init__(self, mode: str = "decline", delay: float = 0.0) -> None:
        self.mode = mode
        self.delay = delay
        self.asked: list[AskLocal] = []

    def reply(self, node: MeshNode, ask: AskLocal) -> Message:
        return Message("speak", {"utterance": f"{node.name} answers"}, {"source": node.name})


@dataclass
class Wire:
    """One in-memory link: ``upper`` runs the hub end, ``lower`` the client end."""

    upper: MeshNode
    lower: MeshNode
    upper_conn: Connection
    lower_conn: Connection
    latency: float
    closed: bool = False
    close_code: int | None = None
    #: Frames as they crossed, (direction, frame): "down" = to the lower node.
    tap: list[tuple[str, str | bytes]] = field(default_factory=list)

    def conn_of(self, node: MeshNode) -> Connection:
        return self.upper_conn if node is self.upper else self.lower_conn

    def other(self, node: MeshNode) -> MeshNode:
        return self.lower if node is self.upper else self.upper


class WireSink:
    """What a node's :class:`HubNode` sees of one wire: write to it, close it."""

    def __init__(self, mesh: Mesh, node: MeshNode, wire: Wire) -> None:
        self.mesh, self.node, self.wire = mesh, node, wire

    def send_message(self, message: HiveMessage) -> None:
        if not self.wire.closed:
            self.mesh._send(self.node, self.wire, message)

    def close(self, code: int, reason: str) -> None:
        if not self.wire.closed:
            self.wire.conn_of(self.node).close(code, reason)
            self.mesh._close(self.wire, code)


class AgentOfNode(Agent):
    """The node's agent: QUERY/CASCADE questions go to whatever :class:`FakeAgent` it has now."""

    name = "mesh"

    def __init__(self, mesh: Mesh, node: MeshNode) -> None:
        super().__init__(HubConfig(identity_trust=False))
        self.mesh, self.node = mesh, node
        self.injected: list[dict[str, Any]] = []
        self.pending: AskLocal | None = None

    def inject(self, message: dict[str, Any]) -> None:
        self.injected.append(message)

    def ask(self, message: dict[str, Any], answer: AnswerCallback) -> None:
        node, fake, ask = self.node, self.node.agent, self.pending
        assert ask is not None
        if fake.mode == "answer":
            if fake.delay:
                self.mesh._later(fake.delay, "agent", (answer, fake, node, ask))
            else:
                answer(fake.reply(node, ask))  # type: ignore[arg-type]
        elif fake.mode == "decline":
            answer(None)


class MeshHub(HubNode):
    """A real :class:`HubNode` that also records what its executor did."""

    def __init__(self, mesh: Mesh, node: MeshNode) -> None:
        cfg = HubConfig(identity_trust=False)
        self.record = node
        self.mesh_agent = AgentOfNode(mesh, node)
        super().__init__(
            cfg,
            None,
            self.mesh_agent,
            private_key=rsa_key(0),
            router=node.router,
            clock=lambda: mesh.now,
        )

    def deliver(self, action: Deliver) -> None:
        self.record.delivered.append(action)
        self.record.delivered_at.append(self.now())
        super().deliver(action)

    def deny(self, deny: Deny) -> None:
        self.record.denied.append(deny)
        super().deny(deny)

    def drop(self, drop: Drop) -> None:
        self.record.dropped.append(drop)
        super().drop(drop)

    def ask_local(self, action: AskLocal) -> None:
        self.record.agent.asked.append(action)
        self.mesh_agent.pending = action
        try:
            super().ask_local(action)
        finally:
            self.mesh_agent.pending = None


class MeshNode:
    """One node: a router, its connections, a fake agent, and what happened to it."""

    def __init__(self, name: str, router: Router, agent: FakeAgent, is_hub: bool) -> None:
        self.name = name
        self.router = router
        self.agent = agent
        self.is_hub = is_hub
        self.hub: MeshHub | None = None
        self.wires: dict[str, Wire] = {}
        self.delivered: list[Deliver] = []
        #: Fake time of each delivery, parallel to ``delivered``.
        self.delivered_at: list[float] = []
        self.denied: list[Deny] = []
        self.dropped: list[Drop] = []
        #: Every application message its connections decoded (after link decryption).
        self.received: list[tuple[str, HiveMessage]] = []
        self.sent = 0
        self.timer_at: float | None = None

    def __repr__(self) -> str:
        return f"<MeshNode {self.name}>"

    def delivered_bus(self, msg_type: str) -> list[Deliver]:
        """Deliveries of BUS messages of one OVOS type."""
        out = []
        for d in self.delivered:
            m = d.message
            if m.msg_type is T.BUS and m.payload.msg_type == msg_type:
                out.append(d)
        return out

    def delivered_of(self, msg_type: HiveMessageType) -> list[Deliver]:
        return [d for d in self.delivered if d.message.msg_type is msg_type]

    def timed(self, msg_type: HiveMessageType) -> list[tuple[float, HiveMessage]]:
        """(time, message) of every delivery of one type."""
        return [
            (t, d.message)
            for t, d in zip(self.delivered_at, self.delivered, strict=True)
            if d.message.msg_type is msg_type
        ]

    def responses(self, msg_type: HiveMessageType) -> list[HiveMessage]:
        """QUERY/CASCADE responses delivered to this node (it originated the request)."""
        return [
            d.message
            for d in self.delivered
            if d.message.msg_type is msg_type and d.message.metadata.get("is_response")
        ]


class Mesh:
    """A set of nodes and wires driven by a fake clock (see the module docstring)."""

    def __init__(
        self,
        *,
        latency: float = LATENCY,
        handshake: str = "preshared",
        **router_defaults: Any,
    ) -> None:
        self.now = 0.0
        self.latency = latency
        self.handshake = handshake
        self.router_defaults = router_defaults
        self.nodes: dict[str, MeshNode] = {}
        self.wires: list[Wire] = []
        self._queue: list[tuple[float, int, str, Any]] = []
        self._seq = itertools.count()
        self.events_run = 0

    def __getitem__(self, name: str) -> MeshNode:
        return self.nodes[name]

    # -- building ------------------------------------------------------------------

    def add(
        self,
        name: str,
        *,
        site_id: str | None = None,
        hub: bool = True,
        agent: FakeAgent | None = None,
        key: crypto.PrivateKey | None = None,
        trusted_keys: Any = (),
        **router_kw: Any,
    ) -> MeshNode:
        """Add a node (``hub=False`` for a plain satellite)."""
        kw = {**self.router_defaults, **router_kw}
        router = Router(name, site_id, private_key=key, trusted_keys=trusted_keys, **kw)
        node = MeshNode(name, router, agent or FakeAgent(), hub)
        node.hub = MeshHub(self, node)
        self.nodes[name] = node
        return node

    def connect(
        self,
        lower: str,
        upper: str,
        *,
        permissions: Permissions | None = None,
        kind: LinkKind = LinkKind.UPSTREAM,
        trusted: bool = True,
        handshake: str | None = None,
        latency: float | None = None,
    ) -> Wire:
        """Connect ``lower`` to ``upper``'s listener, as its master (or as a cross link).

        The handshake runs through the real :class:`Connection` code; the links
        are registered with both routers from what the handshake told each side.
        ``trusted`` marks each end's link as trusted (PROPAGATE(BUS) injection).
        """
        lo, up = self.nodes[lower], self.nodes[upper]
        mode = handshake or self.handshake
        secret = hashlib.sha256(f"{lower}->{upper}".encode()).hexdigest()
        auth: dict[str, Any] = (
            {"password": secret} if mode == "password" else {"crypto_key": secret[:16]}
        )
        up_key = up.router.private_key
        hub_conn = Connection(Role.HUB, private_key=up_key, peer=lower, node_id=upper, **auth)
        client_conn = Connection(
            Role.CLIENT,
            hello={
                "session": {"session_id": lower},
                "site_id": lo.router.site_id,
                "pubkey": lo.router.public_key,
                "node_id": lower,
                "is_hub": lo.is_hub,
            },
            **auth,
        )
        wire = Wire(up, lo, hub_conn, client_conn, self.latency if latency is None else latency)
        hello = self._handshake(wire)
        up.wires[lower] = wire
        lo.wires[upper] = wire
        assert up.hub is not None and lo.hub is not None
        up.hub.add_link(
            Link(
                peer=lower,
                kind=LinkKind.SATELLITE,
                permissions=permissions or Permissions(),
                site_id=hello.get("site_id"),
                pubkey=hello.get("pubkey"),
                is_hub=bool(hello.get("is_hub")),
                node_id=hello.get("node_id"),
                trusted=trusted,
            ),
            WireSink(self, up, wire),
        )
        lo.hub.add_link(
            Link(
                peer=upper,
                kind=kind,
                node_id=client_conn.node_id,
                pubkey=up.router.public_key,
                trusted=trusted,
            ),
            WireSink(self, lo, wire),
        )
        self.wires.append(wire)
        return wire

    def _handshake(self, wire: Wire) -> dict[str, Any]:
        hub, client = wire.upper_conn, wire.lower_conn
        hub.start(self.now)
        client.start(self.now)
        hello: dict[str, Any] | None = None
        for _ in range(20):
            moved = False
            for frame in hub.frames_to_send():
                wire.tap.append(("down", frame))
                client.receive_frame(frame)
                moved = True
            for frame in client.frames_to_send():
                wire.tap.append(("up", frame))
                hub.receive_frame(frame)
                moved = True
            for ev in hub.events():
                if isinstance(ev, HelloReceived):
                    hello = ev.payload
                elif isinstance(ev, CloseRequested):
                    raise AssertionError(f"handshake refused: {ev}")
            client.events()
            if not moved:
                break
        assert hub.state is State.READY and client.state is State.READY, "handshake incomplete"
        assert hello is not None, "no HELLO from the satellite"
        return hello

    # -- driving -----------------------------------------------------------------

    def originate(self, name: str, message: HiveMessage) -> list[Action]:
        """Have node ``name`` originate ``message`` now (its agent or client API)."""
        node = self.nodes[name]
        actions = node.router.originate(message, now=self.now)
        self._execute(node, actions)
        return actions

    def ping(self, name: str) -> str:
        """Start a PING flood at ``name``; returns its flood id."""
        node = self.nodes[name]
        flood, actions = node.router.ping(self.now)
        self._execute(node, actions)
        return flood

    def send_raw(self, src: str, dst: str, message: HiveMessage) -> None:
        """Write ``message`` from ``src`` to its neighbour ``dst`` without asking ``src``'s router.

        Models a misbehaving or stock peer that sends whatever it likes.
        """
        node = self.nodes[src]
        self._send(node, node.wires[dst], message)

    def run(self, until: float | None = None, max_events: int = 10_000_000) -> None:
        """Process events in time order until the queue is empty (or ``until``)."""
        q = self._queue
        while q and max_events > 0:
            when = q[0][0]
            if until is not None and when > until:
                break
            _, _, kind, data = heapq.heappop(q)
            self.now = max(self.now, when)
            max_events -= 1
            self.events_run += 1
            if kind == "frame":
                wire, node, frame = data
                self._on_frame(wire, node, frame)
            elif kind == "timer":
                node = data
                node.timer_at = None
                due = node.router.get_timer()
                if due is not None and due <= self.now:
                    self._execute(node, node.router.handle_timer(self.now))
                else:
                    self._schedule_timer(node)
            elif kind == "agent":
                answer, fake, node, ask = data
                answer(fake.reply(node, ask))
        if until is not None:
            self.now = max(self.now, until)

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` of fake time pass, running whatever falls due."""
        self.run(until=self.now + seconds)

    # -- the service's part --------------------------------------------------------

    def _on_frame(self, wire: Wire, node: MeshNode, frame: str | bytes) -> None:
        if wire.closed:
            return
        conn = wire.conn_of(node)
        conn.receive_frame(frame)
        peer = wire.other(node).name
        for ev in conn.events():
            if isinstance(ev, MessageReceived):
                node.received.append((peer, ev.message))
                self._execute(node, node.router.handle(peer, ev.message, self.now))
            elif isinstance(ev, CloseRequested):
                self._close(wire, ev.code)

    def _execute(self, node: MeshNode, actions: Iterable[Action]) -> None:
        """The node's own executor carries the actions out; then its timer is armed."""
        assert node.hub is not None
        node.hub.execute(actions)
        self._schedule_timer(node)

    def _later(self, delay: float, kind: str, data: Any) -> None:
        heapq.heappush(self._queue, (self.now + delay, next(self._seq), kind, data))

    def _send(self, node: MeshNode, wire: Wire, message: HiveMessage) -> None:
        conn = wire.conn_of(node)
        conn.send(message)
        node.sent += 1
        dest = wire.other(node)
        direction = "down" if node is wire.upper else "up"
        for frame in conn.frames_to_send():
            wire.tap.append((direction, frame))
            heapq.heappush(
                self._queue,
                (self.now + wire.latency, next(self._seq), "frame", (wire, dest, frame)),
            )

    def _schedule_timer(self, node: MeshNode) -> None:
        due = node.router.get_timer()
        if due is None:
            return
        if node.timer_at is None or due < node.timer_at:
            node.timer_at = due
            heapq.heappush(self._queue, (max(due, self.now), next(self._seq), "timer", node))

    def _close(self, wire: Wire, code: int) -> None:
        if wire.closed:
            return
        wire.closed = True
        wire.close_code = code
        for node in (wire.upper, wire.lower):
            other = wire.other(node)
            wire.conn_of(node).connection_lost(code)
            node.wires.pop(other.name, None)
            assert node.hub is not None
            sink = node.hub.sinks.get(other.name)
            if sink is not None:
                node.hub.remove_link(other.name, sink)
            else:
                self._execute(node, node.router.remove_link(other.name))
            self._schedule_timer(node)

    # -- topologies ------------------------------------------------------------------

    def totals(self) -> dict[str, int]:
        """Sum of every router's counters."""
        out: dict[str, int] = {}
        for node in self.nodes.values():
            for k, v in node.router.counters.items():
                out[k] = out.get(k, 0) + v
        return out


def star(n_sats: int = 5, **kw: Any) -> Mesh:
    """One hub ``hub`` with satellites ``sat0..``."""
    mesh = Mesh(**kw)
    mesh.add("hub")
    for i in range(n_sats):
        mesh.add(f"sat{i}", hub=False, site_id="kitchen" if i % 2 else "office")
        mesh.connect(f"sat{i}", "hub")
    return mesh


def chain(depth: int = 6, **kw: Any) -> Mesh:
    """``n0`` (top) <- ``n1`` <- ... <- ``n{depth}`` (a plain satellite at the bottom)."""
    mesh = Mesh(**kw)
    for i in range(depth + 1):
        mesh.add(f"n{i}", hub=i < depth)
    for i in range(1, depth + 1):
        mesh.connect(f"n{i}", f"n{i - 1}")
    return mesh


def diamond(**kw: Any) -> Mesh:
    """``top`` with relays ``left`` and ``right``; ``bottom`` below ``left`` with a
    cross link to ``right`` (a cycle top-left-bottom-right-top); satellites
    ``sat_b`` (under bottom) and ``sat_r`` (under right)."""
    mesh = Mesh(**kw)
    for name in ("top", "left", "right", "bottom"):
        mesh.add(name)
    mesh.add("sat_b", hub=False)
    mesh.add("sat_r", hub=False)
    mesh.connect("left", "top")
    mesh.connect("right", "top")
    mesh.connect("bottom", "left")
    mesh.connect("bottom", "right", kind=LinkKind.PEER)
    mesh.connect("sat_b", "bottom")
    mesh.connect("sat_r", "right")
    return mesh


def tree(
    n_nodes: int = 200, fanout: int = 4, sites: tuple[str, ...] = ("a", "b", "c"), **kw: Any
) -> Mesh:
    """A tree of ``n_nodes``: node ``t0`` is the root, ``t{i}``'s master is
    ``t{(i-1)//fanout}``. Nodes with children are hubs, leaves plain satellites."""
    mesh = Mesh(**kw)
    for i in range(n_nodes):
        has_kids = i * fanout + 1 < n_nodes
        mesh.add(f"t{i}", hub=has_kids, site_id=sites[i % len(sites)])
    for i in range(1, n_nodes):
        mesh.connect(f"t{i}", f"t{(i - 1) // fanout}")
    return mesh
