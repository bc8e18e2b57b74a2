"""The hub's v1 key derivation handed out as an event (``defer_keys``, ``KeyNeeded``)."""

from __future__ import annotations

import pytest
from ovos_bus_client.message import Message

from hivemind_bus_client import crypto
from hivemind_bus_client.connection import (
    CloseRequested,
    Connection,
    HandshakeComplete,
    MessageReceived,
    Role,
    State,
)
from hivemind_bus_client.exceptions import CloseCode, HandshakeThrottled, InvalidState
from hivemind_bus_client.message import HiveMessage, HiveMessageType
from hivemind_bus_client.protocol import handshake
from hivemind_bus_client.protocol.events import KeyNeeded
from hivemind_bus_client.protocol.linksteps import HOLD_FRAMES

from .linkpair import LinkPair

HUB_KEY = crypto.create_private_key()
CLIENT_KEY = crypto.create_private_key()
BUS = HiveMessage(HiveMessageType.BUS, Message("speak", {"utterance": "deferred"}, {}))


def deferred_pair(hub_kw: dict | None = None, client_kw: dict | None = None) -> LinkPair:
    hub = Connection(Role.HUB, private_key=HUB_KEY, node_id="hub", **(hub_kw or {}))
    hub.defer_keys = True
    client = Connection(Role.CLIENT, hello={"session": {"session_id": "s"}}, **(client_kw or {}))
    return LinkPair(client, hub).start()


def key_needed(lp: LinkPair) -> list[KeyNeeded]:
    return [e for e in lp.hub_events if isinstance(e, KeyNeeded)]


def test_the_hub_sends_0_answers_until_the_key_is_provided_then_the_link_works() -> None:
    lp = deferred_pair({"password": "pw"}, {"password": "pw"})
    asked = key_needed(lp)
    assert len(asked) == 1 and asked[0].mode == "password" and not asked[0].rekey
    assert lp.hub.state is State.HANDSHAKING and lp.client.state is State.HANDSHAKING
    assert not lp.hub.frames_to_send(), "the hub answered before it had the key"
    assert "pw" not in repr(asked[0]), "the password shows in the event's repr"
    lp.hub.provide_key(handshake.hub_finish(asked[0].job))
    lp.pump()
    assert lp.hub.state is State.READY and lp.client.state is State.READY
    lp.client.send(BUS)
    lp.pump()
    assert [e.message for e in lp.hub_events if isinstance(e, MessageReceived)] == [BUS]


def test_rsa_is_deferred_too() -> None:
    lp = deferred_pair({}, {"private_key": CLIENT_KEY})
    asked = key_needed(lp)
    assert [e.mode for e in asked] == ["rsa"]
    lp.hub.provide_key(handshake.hub_finish(asked[0].job))
    lp.pump()
    assert lp.client.state is State.READY
    assert any(isinstance(e, HandshakeComplete) for e in lp.hub_events)


def test_frames_during_the_derivation_are_held_and_read_in_order_after_it() -> None:
    lp = deferred_pair({"password": "pw"}, {"password": "pw"})
    job = key_needed(lp)[0].job
    # A stock client repeats its HANDSHAKE (5 s) while unanswered: held, then a re-key.
    repeat = [f for d, f in lp.tap if d == "up"][-1]
    lp.hub.receive_frame(repeat)
    assert not lp.hub.events(), "a held frame was acted on before the key"
    lp.hub.provide_key(handshake.hub_finish(job))
    events = lp.hub.events()
    assert any(isinstance(e, HandshakeComplete) for e in events)
    # The repeat is a replayed IV here (no fresh_iv set: so a second KeyNeeded, a re-key).
    again = [e for e in events if isinstance(e, KeyNeeded)]
    assert len(again) == 1 and again[0].rekey


def test_more_than_hold_frames_during_the_derivation_close_the_link_1009() -> None:
    lp = deferred_pair({"password": "pw"}, {"password": "pw"})
    for _ in range(HOLD_FRAMES + 1):
        lp.hub.receive_frame('{"msg_type": "bus", "payload": {}}')
    closes = [e for e in lp.hub.events() if isinstance(e, CloseRequested)]
    assert [c.code for c in closes] == [CloseCode.TOO_BIG]


def test_held_bytes_are_bounded_before_any_frame_is_read() -> None:
    lp = deferred_pair({"password": "pw"}, {"password": "pw"})
    big = "x" * (lp.hub.hold_bytes() // 2 + 1)
    lp.hub.receive_frame(big)
    assert not lp.hub.events()
    lp.hub.receive_frame(big)
    assert [e.code for e in lp.hub.events() if isinstance(e, CloseRequested)] == [1009]


def test_refuse_key_closes_with_the_refusal_s_code_and_a_late_key_is_ignored() -> None:
    lp = deferred_pair({"password": "pw"}, {"password": "pw"})
    job = key_needed(lp)[0].job
    lp.hub.refuse_key(HandshakeThrottled("too many", CloseCode.TRY_AGAIN))
    closes = [e for e in lp.hub.events() if isinstance(e, CloseRequested)]
    assert [c.code for c in closes] == [CloseCode.TRY_AGAIN]
    assert isinstance(closes[0].error, HandshakeThrottled) and closes[0].pre_handshake
    lp.hub.provide_key(handshake.hub_finish(job))  # finished late: ignored
    assert lp.hub.state is State.CLOSING and not lp.hub.frames_to_send()


def test_provide_key_without_a_request_is_an_invalid_state() -> None:
    lp = deferred_pair({"password": "pw"}, {"password": "pw"})
    lp.hub.provide_key(handshake.hub_finish(key_needed(lp)[0].job))
    with pytest.raises(InvalidState):
        lp.hub.provide_key(handshake.hub_finish(key_needed(lp)[0].job))


def test_without_defer_keys_the_hub_answers_at_once() -> None:
    hub = Connection(Role.HUB, password="pw", node_id="hub")
    client = Connection(Role.CLIENT, password="pw")
    lp = LinkPair(client, hub).start()
    assert lp.client.state is State.READY and not key_needed(lp)
