"""protocol/ping.py: the PING payload, the one PONG format, the PING token bucket,
and a client node (a Router whose only link is its hub) answering PINGs."""

from __future__ import annotations

from collections import deque

from hivemind_bus_client.protocol.hive_map import HiveMapper
from hivemind_bus_client.protocol.message import HiveMessage, HiveMessageType
from hivemind_bus_client.protocol.ping import (
    PingBucket,
    PingRoutes,
    ping_message,
    ping_payload,
    pong_flood_id,
    pong_message,
)
from hivemind_bus_client.protocol.router import Action, Deliver, Link, LinkKind, Router, Send

T = HiveMessageType


def test_ping_payload_and_its_flood() -> None:
    payload = ping_payload("f1", "sat", "kitchen", 12.5, lang="en-US")
    assert payload == {
        "ping_id": "f1",
        "flood_id": "f1",
        "peer": "sat",
        "site_id": "kitchen",
        "timestamp": 12.5,
        "lang": "en-US",
    }
    flood = ping_message("f1", payload)
    assert flood.msg_type is T.PROPAGATE and flood.metadata == {"flood_id": "f1"}
    assert flood.payload.msg_type is T.PING and flood.payload.payload == payload


def test_pong_carries_the_flood_id_in_payload_and_metadata() -> None:
    ping = HiveMessage(T.PING, ping_payload("f1", "origin", None, 3.0))
    route = [{"source": "origin", "targets": ["hub"]}, {"source": "hub", "targets": ["me"]}]
    pong = pong_message(
        ping,
        flood_id="f1",
        peer="me",
        site_id="office",
        public_key="PEM",
        route=route,
        session_id="s1",
    )
    assert pong.msg_type is T.PONG and pong.node == "me"
    assert pong.payload == {
        "flood_id": "f1",
        "ping_id": "f1",
        "peer": "me",
        "site_id": "office",
        "timestamp": 3.0,
        "hops": 2,
        "public_key": "PEM",
        "session_id": "s1",
    }
    assert pong.metadata == {"flood_id": "f1"}
    assert pong.route == route and pong.route is not route
    assert pong_flood_id(pong) == "f1"
    # either place is enough to route it back; neither means unroutable
    assert pong_flood_id(HiveMessage(T.PONG, {}, metadata={"flood_id": "f2"})) == "f2"
    assert pong_flood_id(HiveMessage(T.PONG, {"peer": "x"})) is None


def test_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = PingBucket(rate=2.0, burst=3)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(0.25) is False  # half a token back
    assert bucket.take(0.5) is True  # a whole one
    assert PingBucket(rate=0, burst=1).take(0.0) is True  # 0 = no limit


def test_ping_routes_forget_the_oldest_flood() -> None:
    routes = PingRoutes(size=2)
    routes.remember("a", None)
    routes.remember("b", "sat")
    routes.remember("c", "hub")
    assert "a" not in routes and len(routes) == 2
    assert routes.parent("b") == "sat" and routes.parent("c") == "hub"


class Hive:
    """A hub Router with client Routers below it, each client knowing only its hub.

    Every message crosses as its JSON text, as it would over a websocket.
    """

    def __init__(self, *clients: str) -> None:
        self.nodes = {"hub": Router("hub")}
        for name in clients:
            self.nodes["hub"].add_link(Link(name, LinkKind.SATELLITE))
            client = Router(name, pong_fields={"session_id": f"session-{name}"})
            client.add_link(Link("hub", LinkKind.UPSTREAM))
            self.nodes[name] = client
        self.delivered: dict[str, list[Deliver]] = {name: [] for name in self.nodes}
        self.now = 0.0

    def run(self, origin: str, actions: list[Action]) -> None:
        queue = deque((origin, a) for a in actions)
        while queue:
            node, action = queue.popleft()
            if isinstance(action, Deliver):
                self.delivered[node].append(action)
            elif isinstance(action, Send):
                self.now += 0.001
                wire = HiveMessage.deserialize(action.message.serialize())
                got = self.nodes[action.peer].handle(node, wire, self.now)
                queue.extend((action.peer, a) for a in got)


def test_a_client_router_answers_a_ping_from_its_hub_and_the_hub_routes_the_pong_back() -> None:
    hive = Hive("a", "b", "c")
    flood, sends = hive.nodes["a"].ping(hive.now)
    assert [s.peer for s in sends if isinstance(s, Send)] == ["hub"]
    hive.run("a", sends)

    # b and c saw the PING arrive from their only link, the hub ...
    for name in ("b", "c"):
        (seen,) = hive.delivered[name]
        assert seen.message.msg_type is T.PING and seen.via is T.PROPAGATE
    # ... and the hub passed their PONGs on: nothing unroutable or dropped there
    assert "unroutable" not in hive.nodes["hub"].counters
    assert "dropped" not in hive.nodes["hub"].counters

    pongs = [d.message for d in hive.delivered["a"] if d.message.msg_type is T.PONG]
    by_peer = {p.payload["peer"]: p for p in pongs}
    assert sorted(by_peer) == ["b", "c", "hub"]
    for peer in ("b", "c"):
        pong = by_peer[peer]
        assert pong.payload["flood_id"] == pong.metadata["flood_id"] == flood
        assert pong.payload["session_id"] == f"session-{peer}"
        assert pong.payload["hops"] == 2

    mapper = HiveMapper()
    for pong in pongs:
        mapper.on_pong(pong, hive.now)
    assert {"hub", "b", "c"} <= set(mapper.nodes)
    assert mapper.nodes["hub"].hops == 1 and mapper.nodes["b"].hops == 2
    assert mapper.nodes["b"].parent == "hub"


def test_a_client_router_never_rate_limits_pings_from_its_hub() -> None:
    client = Router("sat", ping_rate=0.001, ping_burst=1)
    client.add_link(Link("hub", LinkKind.UPSTREAM))
    for i in range(5):
        msg = ping_message(f"f{i}", ping_payload(f"f{i}", "far", None, 0.0))
        acts = client.handle("hub", msg, 0.0)
        assert any(isinstance(a, Send) and a.message.msg_type is T.PONG for a in acts)
    assert "ping_rate_limited" not in client.counters
