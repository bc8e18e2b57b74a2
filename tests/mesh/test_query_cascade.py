"""QUERY (first answer wins, nearest capable node) and CASCADE (every answer comes back)."""

from __future__ import annotations

from hivemind_bus_client.message import HiveMessage, HiveMessageType
from hivemind_bus_client.router import Permissions

from .conftest import bus
from .mesh import FakeAgent, Mesh, chain, diamond, tree

T = HiveMessageType
TIMEOUT = 8.0  # the router's default query_timeout


def query(mesh: Mesh, origin: str, qid: str = "q1") -> None:
    mesh.originate(
        origin,
        HiveMessage(T.QUERY, bus("recognizer_loop:utterance"), metadata={"query_id": qid}),
    )


def answer_text(msg: HiveMessage) -> tuple[str, str]:
    inner = msg.payload
    return inner.payload.msg_type, inner.payload.data.get("utterance", "")


def test_query_is_answered_by_the_nearest_capable_node() -> None:
    mesh = chain(6, handshake="password")
    mesh["n5"].agent = FakeAgent("decline")
    mesh["n4"].agent = FakeAgent("silent")
    for i in range(4):
        mesh[f"n{i}"].agent = FakeAgent("answer")
    query(mesh, "n6")
    mesh.run()
    (resp,) = mesh["n6"].responses(T.QUERY)
    md = resp.metadata
    assert md["query_id"] == "q1" and md["responder_peer"] == "n3"
    assert md["originator_peer"] == "n6" and md["is_response"] is True
    assert answer_text(resp) == ("speak", "n3 answers")
    # The silent agent cost one timeout; nodes above n3 were never asked.
    ((when, _),) = mesh["n6"].timed(T.QUERY)
    assert TIMEOUT <= when < TIMEOUT + 1
    assert [len(mesh[f"n{i}"].agent.asked) for i in range(6)] == [0, 0, 0, 1, 1, 1]
    # The answer came back down the chain it went up.
    assert [h["source"] for h in resp.route] == ["n3", "n4", "n5"]


def test_top_hub_without_an_answer_returns_hive_query_timeout() -> None:
    mesh = chain(3)
    for name in ("n0", "n1", "n2"):
        mesh[name].agent = FakeAgent("decline")
    query(mesh, "n3")
    mesh.run()
    (resp,) = mesh["n3"].responses(T.QUERY)
    assert resp.metadata["responder_peer"] == "n0"
    kind = resp.payload.payload
    assert kind.msg_type == "hive.query.timeout"
    assert kind.data == {"query_id": "q1", "error": "no_answer"}


def test_top_hub_with_a_silent_agent_times_out_after_query_timeout() -> None:
    mesh = chain(1)
    mesh["n0"].agent = FakeAgent("silent")
    query(mesh, "n1")
    mesh.run(until=TIMEOUT - 0.01)
    assert mesh["n1"].responses(T.QUERY) == []
    mesh.run()
    (resp,) = mesh["n1"].responses(T.QUERY)
    assert resp.payload.payload.msg_type == "hive.query.timeout"


def test_first_answer_wins_and_late_answers_are_dropped() -> None:
    mesh = chain(2)
    # n1's agent answers only after its deadline; by then n0 has answered.
    mesh["n1"].agent = FakeAgent("answer", delay=TIMEOUT + 5)
    mesh["n0"].agent = FakeAgent("answer")
    query(mesh, "n2")
    mesh.run()
    responses = mesh["n2"].responses(T.QUERY)
    assert [r.metadata["responder_peer"] for r in responses] == ["n0"]
    assert mesh["n1"].router.counters.get("late_answer") == 1


def test_query_needs_can_escalate_on_the_link_it_arrives_on() -> None:
    mesh = chain(3)
    mesh["n1"].router.links["n2"].permissions = Permissions(can_escalate=False)
    for name in ("n0", "n1", "n2"):
        mesh[name].agent = FakeAgent("decline")
    query(mesh, "n3")
    mesh.run()
    (deny,) = mesh["n1"].denied
    assert (deny.peer, deny.code) == ("n2", "query_forbidden")
    assert mesh["n0"].agent.asked == []
    assert mesh["n2"].delivered_bus("hive.policy.denied")


def test_losing_the_master_answers_pending_queries() -> None:
    mesh = chain(2)
    mesh["n1"].agent = FakeAgent("decline")
    mesh["n0"].agent = FakeAgent("silent")
    query(mesh, "n2")
    mesh.run(until=1.0)
    wire = next(w for w in mesh.wires if {w.upper.name, w.lower.name} == {"n0", "n1"})
    mesh._close(wire, 1001)
    mesh.run()
    (resp,) = mesh["n2"].responses(T.QUERY)
    assert resp.payload.payload.data["error"] == "upstream_lost"


# -- CASCADE -------------------------------------------------------------------------


def cascade(mesh: Mesh, origin: str, qid: str = "c1") -> None:
    mesh.originate(
        origin, HiveMessage(T.CASCADE, bus("recognizer_loop:utterance"), metadata={"query_id": qid})
    )


def test_cascade_collects_every_answer_in_a_cycle() -> None:
    mesh = diamond()
    for node in mesh.nodes.values():
        node.agent = FakeAgent("answer")
    cascade(mesh, "sat_b")
    mesh.run()
    responders = [r.metadata["responder_peer"] for r in mesh["sat_b"].responses(T.CASCADE)]
    assert sorted(responders) == sorted(set(mesh.nodes) - {"sat_b"})
    assert all(len(n.agent.asked) == (0 if n.name == "sat_b" else 1) for n in mesh.nodes.values())


def test_cascade_collects_every_answer_in_a_200_node_tree() -> None:
    mesh = tree(200)
    silent = {"t5", "t50", "t150"}
    for node in mesh.nodes.values():
        node.agent = FakeAgent("silent" if node.name in silent else "answer", delay=0.01)
    cascade(mesh, "t123")
    mesh.run()
    responders = [r.metadata["responder_peer"] for r in mesh["t123"].responses(T.CASCADE)]
    assert len(responders) == len(set(responders)) == 200 - 1 - len(silent)
    assert set(responders) == set(mesh.nodes) - silent - {"t123"}


def test_cascade_needs_can_propagate() -> None:
    mesh = Mesh()
    mesh.add("hub", agent=FakeAgent("answer"))
    mesh.add("a", hub=False, agent=FakeAgent("answer"))
    mesh.add("b", hub=False, agent=FakeAgent("answer"))
    mesh.connect("a", "hub", permissions=Permissions(can_propagate=False))
    mesh.connect("b", "hub")
    cascade(mesh, "a")
    mesh.run()
    (deny,) = mesh["hub"].denied
    assert (deny.peer, deny.code) == ("a", "cascade_forbidden")
    assert mesh["hub"].agent.asked == [] and mesh["b"].agent.asked == []
    assert mesh["a"].responses(T.CASCADE) == []
