"""The sans-I/O router on its own: actions for one message at a time, no connections."""

from __future__ import annotations

from ovos_bus_client.message import Message

from hivemind_bus_client.message import HiveMessage, HiveMessageType
from hivemind_bus_client.router import (
    AskLocal,
    Deliver,
    Deny,
    Drop,
    FloodCache,
    Link,
    LinkKind,
    Permissions,
    Router,
    Send,
    denial_message,
)

T = HiveMessageType


def bus(t: str = "speak") -> HiveMessage:
    return HiveMessage(T.BUS, Message(t, {}, {}))


def relay() -> Router:
    r = Router("relay", "kitchen")
    r.add_link(Link("master", LinkKind.UPSTREAM))
    r.add_link(Link("a", site_id="kitchen"))
    r.add_link(Link("b", site_id="office"))
    r.add_link(Link("sub", site_id="office", is_hub=True))
    return r


def test_public_api_shape_is_kept() -> None:
    r = relay()
    msg = bus("speak")
    acts = r.handle("a", msg)
    # the very message that arrived, stamped with the link it came on, as plain BUS
    assert acts == [Deliver(msg, "a", None, None)]
    assert acts[0].message is msg and msg.source_peer == "a"
    assert acts[0].message.payload.msg_type == "speak"
    assert r.send_to(["b", "nope"], bus()) == [Send("b", bus()), Drop("no such link", "nope")]
    assert r.remove_link("b") == [] and "b" not in r.links
    assert isinstance(r.handle("ghost", bus())[0], Drop)
    assert denial_message(Deny("a", "propagate", "c", "why")).payload.data["code"] == "c"


def test_escalate_goes_to_the_master_only_and_is_stamped() -> None:
    r = relay()
    (send,) = r.handle("a", HiveMessage(T.ESCALATE, bus()))
    assert isinstance(send, Send) and send.peer == "master"
    assert send.message.route[-1] == {"source": "relay", "targets": ["master"]}
    assert isinstance(r.handle("master", HiveMessage(T.ESCALATE, bus()))[0], Drop)


def test_a_message_that_already_passed_this_node_is_dropped() -> None:
    r = relay()
    looped = HiveMessage(T.ESCALATE, bus(), route=[{"source": "relay", "targets": []}])
    (drop,) = r.handle("a", looped)
    assert isinstance(drop, Drop) and r.counters["loop"] == 1


def test_site_targeted_broadcast_goes_to_site_satellites_and_relay_hubs() -> None:
    r = relay()
    acts = r.handle("master", HiveMessage(T.BROADCAST, bus(), target_site_id="office"))
    assert sorted(a.peer for a in acts if isinstance(a, Send)) == ["b", "sub"]
    assert not any(isinstance(a, Deliver) for a in acts)
    acts = r.handle("master", HiveMessage(T.BROADCAST, bus(), target_site_id="kitchen"))
    assert sorted(a.peer for a in acts if isinstance(a, Send)) == ["a", "sub"]
    assert [type(a) for a in acts].count(Deliver) == 1


def test_flood_ids_are_remembered_and_the_cache_is_bounded() -> None:
    r = relay()
    msg = HiveMessage(T.PROPAGATE, bus(), metadata={"flood_id": "f1"})
    first = r.handle("a", msg)
    assert {a.peer for a in first if isinstance(a, Send)} == {"master", "b", "sub"}
    again = HiveMessage(T.PROPAGATE, bus(), metadata={"flood_id": "f1"})
    assert isinstance(r.handle("b", again)[0], Drop)
    cache = FloodCache(2)
    assert cache.check_and_add("x") and cache.check_and_add("y") and cache.check_and_add("z")
    assert "x" not in cache and len(cache) == 2 and not cache.check_and_add("z")


def test_violations_close_after_max_and_acl_denials_never_do() -> None:
    r = relay()
    r.links["a"].permissions = Permissions(
        can_propagate=False, allowed_types=frozenset({"recognizer_loop:utterance"})
    )
    acl = [r.handle("a", bus("x"))[0] for _ in range(5)]
    assert all(isinstance(d, Deny) and not d.close for d in acl)
    closes = [r.handle("a", HiveMessage(T.PROPAGATE, bus()))[0].close for _ in range(3)]
    assert closes == [False, False, True]
    assert r.counters["denied"] == 8 and r.counters["denied:propagate_forbidden"] == 3


def test_query_timers_fall_back_upstream_then_answer_timeout() -> None:
    r = relay()
    q = HiveMessage(T.QUERY, bus("recognizer_loop:utterance"), metadata={"query_id": "q"})
    (ask,) = r.handle("a", q, now=100.0)
    assert isinstance(ask, AskLocal) and ask.deadline == 108.0 and ask.kind == "query"
    assert r.get_timer() == 108.0
    assert r.handle_timer(107.9) == []
    (fwd,) = r.handle_timer(108.0)
    assert isinstance(fwd, Send) and fwd.peer == "master"
    # A late local answer still wins if the master has not answered yet.
    (ans,) = r.local_answer("q", Message("speak", {"utterance": "me"}), 109.0)
    assert isinstance(ans, Send) and ans.peer == "a"
    assert ans.message.metadata["responder_peer"] == "relay"
    # The master's answer now finds nothing pending.
    resp = HiveMessage(T.QUERY, bus(), metadata={"query_id": "q", "is_response": True})
    assert isinstance(r.handle("master", resp, now=110.0)[0], Drop)
    assert r.get_timer() is None


def test_forwarded_query_expires_with_a_timeout_answer() -> None:
    r = Router("top", query_ttl=50.0)
    r.add_link(Link("a"))
    (ask,) = r.handle("a", HiveMessage(T.QUERY, bus()), now=0.0)
    (resp,) = r.local_decline(ask.query_id, 1.0)
    assert resp.peer == "a"
    assert resp.message.payload.payload.msg_type == "hive.query.timeout"
    assert r.handle_timer(1000.0) == []


def test_query_responses_from_satellites_and_unknown_pongs_are_dropped() -> None:
    r = relay()
    fake = HiveMessage(T.QUERY, bus(), metadata={"query_id": "q", "is_response": True})
    assert isinstance(r.handle("a", fake)[0], Drop)
    pong = HiveMessage(T.PONG, {"flood_id": "nope", "peer": "x"})
    assert isinstance(r.handle("a", pong)[0], Drop)
    assert r.counters["unroutable"] == 2


def test_originated_query_at_the_top_answers_itself() -> None:
    r = Router("top")
    (d,) = r.originate(HiveMessage(T.QUERY, bus()), now=0.0)
    assert isinstance(d, Deliver) and d.message.payload.payload.data["error"] == "no_upstream"


def test_cascade_binding_routes_many_answers_back() -> None:
    r = relay()
    acts = r.handle("a", HiveMessage(T.CASCADE, bus(), metadata={"query_id": "c"}), now=0.0)
    assert isinstance(acts[0], AskLocal) and acts[0].kind == "cascade"
    assert {a.peer for a in acts[1:]} == {"master", "b", "sub"}
    for src in ("master", "b", "sub"):
        resp = HiveMessage(
            T.CASCADE, bus(), metadata={"query_id": "c", "is_response": True, "responder_peer": src}
        )
        (back,) = r.handle(src, resp, now=1.0)
        assert isinstance(back, Send) and back.peer == "a"
    # After the binding's lifetime, answers have nowhere to go.
    r.handle_timer(10_000.0)
    late = HiveMessage(T.CASCADE, bus(), metadata={"query_id": "c", "is_response": True})
    assert isinstance(r.handle("b", late, now=10_001.0)[0], Drop)


def _ping(n: int) -> HiveMessage:
    return HiveMessage(
        T.PROPAGATE, HiveMessage(T.PING, {"ping_id": f"p{n}"}), metadata={"flood_id": f"f{n}"}
    )


def _pongs(actions: list) -> int:
    return sum(1 for a in actions if isinstance(a, Send) and a.message.msg_type is T.PONG)


def test_ping_floods_from_a_satellite_are_rate_limited() -> None:
    r = Router("hub", ping_rate=2.0, ping_burst=3)
    r.add_link(Link("sat"))
    r.add_link(Link("other"))
    r.add_link(Link("master", LinkKind.UPSTREAM))
    # a burst of 3 is answered, the 4th at the same instant is dropped and not flooded
    answered = [_pongs(r.handle("sat", _ping(n), now=10.0)) for n in range(3)]
    assert answered == [1, 1, 1]
    (drop,) = r.handle("sat", _ping(3), now=10.0)
    assert isinstance(drop, Drop) and r.counters["ping_rate_limited"] == 1
    # tokens come back at ping_rate per second
    assert _pongs(r.handle("sat", _ping(4), now=10.5)) == 1
    assert isinstance(r.handle("sat", _ping(5), now=10.5)[0], Drop)
    # the bucket is per link, and floods from the master are not limited
    assert _pongs(r.handle("other", _ping(6), now=10.5)) == 1
    for n in range(7, 17):
        assert _pongs(r.handle("master", _ping(n), now=10.5)) == 1
    # 0 turns the limit off
    unlimited = Router("hub2", ping_rate=0)
    unlimited.add_link(Link("sat"))
    assert all(_pongs(unlimited.handle("sat", _ping(n))) == 1 for n in range(20))
