"""PROPAGATE, BROADCAST and ESCALATE across whole meshes (star, chain, diamond, 200-node tree)."""

from __future__ import annotations

import pytest

from hivemind_bus_client.message import HiveMessage, HiveMessageType
from hivemind_bus_client.router import LinkKind, Permissions

from .conftest import bus
from .mesh import Mesh, chain, diamond, star, tree

T = HiveMessageType


def propagate(mesh: Mesh, origin: str, utt: str = "hello") -> None:
    mesh.originate(origin, HiveMessage(T.PROPAGATE, bus(utt)))
    mesh.run()


def deliveries(mesh: Mesh, msg_type: str = "hello") -> dict[str, int]:
    return {name: len(node.delivered_bus(msg_type)) for name, node in mesh.nodes.items()}


TOPOLOGIES = {
    "star": lambda: star(5, handshake="password"),
    "chain6": lambda: chain(6, handshake="password"),
    "diamond": lambda: diamond(handshake="password"),
    "tree200": lambda: tree(200),
}


@pytest.mark.parametrize("name", sorted(TOPOLOGIES))
def test_propagate_exactly_once_per_node(name: str) -> None:
    mesh = TOPOLOGIES[name]()
    names = sorted(mesh.nodes)
    for k, origin in enumerate((names[0], names[len(names) // 2], names[-1])):
        utt = f"hello-{k}"
        propagate(mesh, origin, utt)
        got = deliveries(mesh, utt)
        assert got.pop(origin) == 0, "the originator does not deliver its own flood"
        assert set(got.values()) == {1}, {n: c for n, c in got.items() if c != 1}


def test_diamond_cycle_suppresses_the_second_copy() -> None:
    mesh = diamond()
    propagate(mesh, "sat_r")
    # top and bottom both reach "left"'s side and "right"'s side: the cycle
    # offers a second path, which the route check or the flood cache stops.
    assert set(deliveries(mesh).values()) == {0, 1}
    sent = sum(n.sent for n in mesh.nodes.values())
    links = len(mesh.wires)
    assert sent <= 2 * links, "a flood costs at most one message per link direction"
    # Every node forwarded at most once per neighbour.
    for node in mesh.nodes.values():
        assert node.sent <= len(node.wires)


def test_tree_with_cross_links_still_exactly_once() -> None:
    mesh = tree(120)
    for a, b in [("t40", "t7"), ("t90", "t3"), ("t55", "t100"), ("t12", "t13")]:
        mesh.connect(a, b, kind=LinkKind.PEER)
    propagate(mesh, "t77")
    got = deliveries(mesh)
    assert got.pop("t77") == 0
    assert set(got.values()) == {1}
    assert mesh.totals().get("duplicate", 0) + mesh.totals().get("loop", 0) >= 1


def test_each_hop_appends_itself_to_the_route() -> None:
    mesh = chain(4)
    propagate(mesh, "n4")
    assert len(mesh["n0"].delivered_bus("hello")) == 1
    # The top saw the PROPAGATE after four hops; the wrapper route is on the
    # received message.
    (peer, received) = next((p, m) for p, m in mesh["n0"].received if m.msg_type is T.PROPAGATE)
    assert peer == "n1"
    assert [h["source"] for h in received.route] == ["n4", "n3", "n2", "n1", "n0"]


def test_hop_limit_bounds_a_flood() -> None:
    mesh = chain(6, hop_limit=3)
    propagate(mesh, "n6")
    got = deliveries(mesh)
    assert got["n5"] == got["n4"] == 1
    assert got["n3"] == 0 and got["n0"] == 0
    assert mesh["n3"].router.counters.get("loop") == 1


# -- BROADCAST -------------------------------------------------------------------


def test_broadcast_reaches_exactly_the_satellites_of_a_site() -> None:
    mesh = tree(200)
    mesh.originate("t0", HiveMessage(T.BROADCAST, bus("speak"), target_site_id="b"))
    mesh.run()
    got = {n for n, c in deliveries(mesh, "speak").items() if c}
    expected = {n for n, node in mesh.nodes.items() if node.router.site_id == "b" and n != "t0"}
    assert got == expected
    assert all(c <= 1 for c in deliveries(mesh, "speak").values())
    # Leaves of other sites never even received the frame.
    for name, node in mesh.nodes.items():
        if not node.is_hub and node.router.site_id != "b":
            assert not any(m.msg_type is T.BROADCAST for _, m in node.received), name


def test_untargeted_broadcast_goes_down_only() -> None:
    mesh = chain(4)
    mesh.originate("n2", HiveMessage(T.BROADCAST, bus("speak")))
    mesh.run()
    got = deliveries(mesh, "speak")
    assert got == {"n0": 0, "n1": 0, "n2": 0, "n3": 1, "n4": 1}


def test_broadcast_from_an_admin_satellite_and_refusal_of_others() -> None:
    mesh = Mesh()
    mesh.add("hub")
    for name in ("admin", "user", "other"):
        mesh.add(name, hub=False)
    mesh.connect("admin", "hub", permissions=Permissions(is_admin=True))
    mesh.connect("user", "hub")
    mesh.connect("other", "hub")
    mesh.originate("admin", HiveMessage(T.BROADCAST, bus("speak")))
    mesh.run()
    assert deliveries(mesh, "speak") == {"hub": 1, "admin": 0, "user": 1, "other": 1}
    mesh.originate("user", HiveMessage(T.BROADCAST, bus("speak")))
    mesh.run()
    (deny,) = mesh["hub"].denied
    assert (deny.peer, deny.code) == ("user", "broadcast_forbidden")
    assert deliveries(mesh, "speak")["other"] == 1
    assert mesh["user"].delivered_bus("hive.policy.denied")


def test_broadcast_through_a_cycle_is_delivered_once() -> None:
    mesh = diamond()
    mesh.originate("top", HiveMessage(T.BROADCAST, bus("speak")))
    mesh.run()
    got = deliveries(mesh, "speak")
    assert got == {"top": 0, "left": 1, "right": 1, "bottom": 1, "sat_b": 1, "sat_r": 1}
    # "right" sees "bottom" as one of its satellites and sends it a second copy,
    # which bottom's flood cache stops.
    assert mesh["bottom"].router.counters.get("duplicate") == 1


# -- ESCALATE ----------------------------------------------------------------------


def test_escalate_reaches_the_root_only() -> None:
    mesh = chain(6, handshake="password")
    mesh.originate("n6", HiveMessage(T.ESCALATE, bus("recognizer_loop:utterance")))
    mesh.run()
    got = deliveries(mesh, "recognizer_loop:utterance")
    assert got == {"n0": 1, **{f"n{i}": 0 for i in range(1, 7)}}
    (d,) = mesh["n0"].delivered_bus("recognizer_loop:utterance")
    assert d.origin == "n1" and d.via is T.ESCALATE


def test_escalate_in_tree_goes_up_the_authority_chain_only() -> None:
    mesh = tree(200)
    mesh.originate("t199", HiveMessage(T.ESCALATE, bus("up")))
    mesh.run()
    got = {n for n, c in deliveries(mesh, "up").items() if c}
    assert got == {"t0"}
    # Only the ancestors of t199 carried it.
    carried = {
        n
        for n, node in mesh.nodes.items()
        if any(m.msg_type is T.ESCALATE for _, m in node.received)
    }
    chain_up, i = set(), 199
    while i:
        i = (i - 1) // 4
        chain_up.add(f"t{i}")
    assert carried == chain_up


def test_escalate_never_goes_over_a_cross_link() -> None:
    mesh = diamond()
    mesh.originate("sat_b", HiveMessage(T.ESCALATE, bus("up")))
    mesh.run()
    assert deliveries(mesh, "up")["top"] == 1
    assert not any(m.msg_type is T.ESCALATE for _, m in mesh["right"].received)
