"""protocol/cascade.py: the one query id format and the CASCADE aggregator."""

from __future__ import annotations

import re

from ovos_bus_client.message import Message

from hivemind_bus_client.protocol.cascade import (
    CascadeAggregator,
    is_response,
    new_query_id,
    query_id_of,
)
from hivemind_bus_client.protocol.message import HiveMessage, HiveMessageType
from hivemind_bus_client.protocol.router import AskLocal, Link, LinkKind, Router

T = HiveMessageType
HEX32 = re.compile(r"[0-9a-f]{32}")


def test_new_query_id_is_32_hex_digits_and_fresh() -> None:
    ids = {new_query_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(HEX32.fullmatch(i) for i in ids)


def test_the_router_assigns_the_same_format_to_requests_without_an_id() -> None:
    hub = Router("hub")
    hub.add_link(Link("sat", LinkKind.SATELLITE))
    query = HiveMessage(T.QUERY, HiveMessage(T.BUS, Message("what.time", {}, {})))
    (ask,) = hub.handle("sat", query, 0.0)
    assert isinstance(ask, AskLocal) and HEX32.fullmatch(ask.query_id)
    cascade = HiveMessage(T.CASCADE, HiveMessage(T.BUS, Message("who", {}, {})))
    asks = [a for a in hub.handle("sat", cascade, 0.0) if isinstance(a, AskLocal)]
    assert HEX32.fullmatch(asks[0].query_id)
    origin = Router("top")
    origin.originate(HiveMessage(T.QUERY, HiveMessage(T.BUS, Message("q", {}, {}))))
    mine = HiveMessage(T.CASCADE, HiveMessage(T.BUS, Message("q", {}, {})))
    origin.originate(mine)
    assert HEX32.fullmatch(query_id_of(mine) or "")


def _answer(qid: str, responder: str) -> HiveMessage:
    return HiveMessage(
        T.CASCADE,
        HiveMessage(T.BUS, Message("answer", {"by": responder}, {})),
        metadata={"query_id": qid, "responder_peer": responder, "is_response": True},
    )


def test_aggregator_resolves_when_the_expected_responders_answered() -> None:
    agg = CascadeAggregator(cascade_timeout=5.0)
    qid = new_query_id()
    agg.start(qid, now=0.0, expected=2)
    assert agg.add(_answer(qid, "a"), 0.1) == []
    assert agg.add(_answer(qid, "a"), 0.2) == []  # same responder twice: ignored
    (done,) = agg.add(_answer(qid, "b"), 0.3)
    assert done.complete and [r.metadata["responder_peer"] for r in done.responses] == ["a", "b"]
    assert done.selected is done.responses[0] and is_response(done.selected)
    assert not agg.is_pending(qid)


def test_aggregator_times_out_with_what_it_has() -> None:
    agg = CascadeAggregator(cascade_timeout=1.0, cascade_select_callback=lambda rs: rs[-1])
    qid = new_query_id()
    agg.start(qid, now=0.0)
    agg.add(_answer(qid, "a"), 0.1)
    agg.add(_answer(qid, "b"), 0.2)
    assert agg.next_deadline() == 1.0 and agg.poll(0.9) == []
    (done,) = agg.poll(1.0)
    assert not done.complete and done.selected is done.responses[-1]
