"""Every permission denial happens at the right link, and is answered, counted, logged."""

from __future__ import annotations

import logging

import pytest

from hivemind_bus_client.message import HiveMessage, HiveMessageType
from hivemind_bus_client.router import Permissions

from .conftest import bus
from .mesh import Mesh, chain

T = HiveMessageType


def hub_with(perms: Permissions) -> Mesh:
    mesh = Mesh()
    mesh.add("hub")
    mesh.add("bad", hub=False)
    mesh.add("good", hub=False)
    mesh.connect("bad", "hub", permissions=perms)
    mesh.connect("good", "hub")
    return mesh


@pytest.mark.parametrize(
    ("kind", "perms", "code"),
    [
        (T.PROPAGATE, Permissions(can_propagate=False), "propagate_forbidden"),
        (T.ESCALATE, Permissions(can_escalate=False), "escalate_forbidden"),
        (T.BROADCAST, Permissions(is_admin=False), "broadcast_forbidden"),
        (T.BROADCAST, Permissions(is_admin=True, can_broadcast=False), "broadcast_forbidden"),
        (T.QUERY, Permissions(can_escalate=False), "query_forbidden"),
        (T.CASCADE, Permissions(can_propagate=False), "cascade_forbidden"),
    ],
)
def test_each_forbidden_transport_is_denied_at_its_link(kind, perms, code, caplog) -> None:
    mesh = hub_with(perms)
    caplog.set_level(logging.INFO)  # whatever the router module calls its logger
    mesh.send_raw("bad", "hub", HiveMessage(kind, bus("x")))
    mesh.run()
    (deny,) = mesh["hub"].denied
    assert (deny.peer, deny.code, deny.denied_type, deny.close) == ("bad", code, kind.value, False)
    assert mesh["hub"].router.counters[f"denied:{code}"] == 1
    assert any(code in r.getMessage() for r in caplog.records)
    (answer,) = mesh["bad"].delivered_bus("hive.policy.denied")
    assert answer.message.payload.data["code"] == code
    assert not any(m.msg_type is kind for _, m in mesh["good"].received)
    assert not [d for d in mesh["hub"].delivered if d.message.msg_type is T.BUS]


def test_denial_deep_in_a_chain_is_at_the_relay_that_lacks_permission() -> None:
    mesh = chain(6)
    mesh["n1"].router.links["n2"].permissions = Permissions(can_escalate=False)
    mesh.originate("n6", HiveMessage(T.ESCALATE, bus("up")))
    mesh.run()
    assert [(n.name, d.peer) for n in mesh.nodes.values() for d in n.denied] == [("n1", "n2")]
    assert mesh["n0"].received == []


def test_propagate_denied_at_one_link_still_floods_from_elsewhere() -> None:
    mesh = chain(3)
    mesh["n1"].router.links["n2"].permissions = Permissions(can_propagate=False)
    mesh.originate("n3", HiveMessage(T.PROPAGATE, bus("hi")))
    mesh.run()
    assert len(mesh["n2"].delivered_bus("hi")) == 1
    assert mesh["n1"].delivered_bus("hi") == [] and mesh["n0"].delivered_bus("hi") == []
    assert [d.peer for d in mesh["n1"].denied] == ["n2"]


def test_repeated_violations_close_the_link_with_4003() -> None:
    mesh = hub_with(Permissions(can_propagate=False))
    for _ in range(3):
        mesh.send_raw("bad", "hub", HiveMessage(T.PROPAGATE, bus("x")))
    mesh.run()
    assert [d.close for d in mesh["hub"].denied] == [False, False, True]
    wire = mesh["hub"].router.links.get("bad")
    assert wire is None, "the router forgot the kicked link"
    (w,) = [w for w in mesh.wires if w.lower.name == "bad"]
    assert w.closed and w.close_code == 4003
    assert "good" in mesh["hub"].router.links


def test_disallowed_bus_type_is_denied_without_a_violation() -> None:
    mesh = hub_with(Permissions(allowed_types=frozenset({"recognizer_loop:utterance"})))
    for _ in range(5):
        mesh.send_raw("bad", "hub", bus("skill.secret"))
    mesh.send_raw("bad", "hub", bus("recognizer_loop:utterance"))
    mesh.run()
    assert {d.code for d in mesh["hub"].denied} == {"acl_disallowed_type"}
    assert not any(d.close for d in mesh["hub"].denied)
    assert [d.message.payload.msg_type for d in mesh["hub"].delivered] == [
        "recognizer_loop:utterance"
    ]


def test_outbound_blacklist_filters_what_a_satellite_gets() -> None:
    mesh = Mesh()
    mesh.add("hub")
    mesh.add("a", hub=False)
    mesh.add("b", hub=False)
    mesh.connect("a", "hub", permissions=Permissions(message_blacklist=frozenset({"speak"})))
    mesh.connect("b", "hub")
    mesh.originate("hub", HiveMessage(T.BROADCAST, bus("speak")))
    mesh.run()
    assert mesh["a"].delivered_bus("speak") == [] and len(mesh["b"].delivered_bus("speak")) == 1
    assert mesh["hub"].router.counters["filtered"] == 1


def test_untrusted_link_propagate_bus_is_relayed_but_not_injected() -> None:
    mesh = Mesh()
    for name in ("top", "mid", "leaf"):
        mesh.add(name, hub=name != "leaf")
    mesh.connect("mid", "top", trusted=False)
    mesh.connect("leaf", "mid")
    mesh.originate("top", HiveMessage(T.PROPAGATE, bus("hi")))
    mesh.run()
    assert mesh["mid"].delivered_bus("hi") == []
    assert mesh["mid"].router.counters["propagate_untrusted"] == 1
    assert len(mesh["leaf"].delivered_bus("hi")) == 1
