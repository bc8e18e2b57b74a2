"""PING inside PROPAGATE, PONG back along the flood, HiveMapper builds the map."""

from __future__ import annotations

from hivemind_bus_client.message import HiveMessage, HiveMessageType
from hivemind_core.hive_map import HiveMapper

from .mesh import LATENCY, Mesh, chain, diamond, tree

T = HiveMessageType


def mapped(mesh: Mesh, origin: str) -> HiveMapper:
    mesh.ping(origin)
    mesh.run()
    mapper = HiveMapper()
    for when, pong in mesh[origin].timed(T.PONG):
        mapper.on_pong(pong, when)
    return mapper


def depth(i: int, fanout: int = 4) -> int:
    d = 0
    while i:
        i = (i - 1) // fanout
        d += 1
    return d


def test_ping_maps_every_node_of_a_200_node_tree() -> None:
    mesh = tree(200)
    mapper = mapped(mesh, "t0")
    assert set(mapper.nodes) == set(mesh.nodes)
    assert len(mesh["t0"].timed(T.PONG)) == 199, "one PONG per node"
    for i in range(1, 200):
        info = mapper.nodes[f"t{i}"]
        assert info.hops == depth(i)
        assert info.parent == f"t{(i - 1) // 4}"
        assert abs(info.rtt - 2 * info.hops * LATENCY) < 1e-9
    text = mapper.to_ascii()
    assert len(text.splitlines()) == 200
    assert "t199 [b] (4 hops, 8.0 ms)" in text


def test_ping_from_a_leaf_in_a_cycle_maps_each_node_once() -> None:
    mesh = diamond()
    mapper = mapped(mesh, "sat_b")
    assert len(mesh["sat_b"].timed(T.PONG)) == 5
    assert set(mapper.nodes) == set(mesh.nodes)
    assert mapper.nodes["top"].hops == 3 and mapper.nodes["bottom"].hops == 1
    tree_text = mapper.to_ascii()
    assert tree_text.splitlines()[0] == "sat_b"
    assert "bottom (1 hop, 2.0 ms)" in tree_text


def test_pong_carries_the_route_the_ping_travelled() -> None:
    mesh = chain(3)
    mesh.ping("n3")
    mesh.run()
    pongs = {m.payload["peer"]: m for _, m in mesh["n3"].timed(T.PONG)}
    assert [h["source"] for h in pongs["n0"].route] == ["n3", "n2", "n1"]
    assert pongs["n0"].payload["hops"] == 3
    # Every node also saw the PING itself once (informational Deliver).
    for name in ("n0", "n1", "n2"):
        assert len(mesh[name].delivered_of(T.PING)) == 1


def test_mapper_ignores_repeats_and_exports() -> None:
    mesh = chain(2)
    mesh.ping("n2")
    mesh.run()
    mapper = HiveMapper()
    pongs = mesh["n2"].timed(T.PONG)
    for when, pong in pongs + pongs:
        mapper.on_pong(pong, when)
    assert len(mapper) == 3
    d = mapper.to_dict()
    assert {(e["source"], e["target"]) for e in d["edges"]} == {("n2", "n1"), ("n1", "n0")}
    assert mapper.on_pong(HiveMessage(T.BUS, {"type": "x"}), 0.0) is None


def test_bare_ping_is_not_flooded() -> None:
    mesh = chain(2)
    mesh.send_raw("n2", "n1", HiveMessage(T.PING, {"ping_id": "x", "peer": "n2"}))
    mesh.run()
    assert mesh["n1"].router.counters.get("malformed") == 1
    assert mesh["n0"].received == []
