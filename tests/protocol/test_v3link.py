"""Protocol v3 through Connection: a hub and a client joined in memory.

XX on first contact, KK with both pins, BUS both ways (bitstrings on and
off, chunked 150 KB messages), the PSK hand-off, every refusal with its close
code and reason, and v1 beside v3 on the same hub.
"""

from __future__ import annotations

import os

import pytest

from hivemind_bus_client.exceptions import (
    AuthenticationFailed,
    CloseCode,
    DecryptionKeyError,
    InvalidState,
    VersionRejected,
)
from hivemind_bus_client.protocol.connection import (
    HelloReceived,
    MessageReceived,
    State,
)
from hivemind_bus_client.protocol.message import HiveMessage, HiveMessageType
from hivemind_bus_client.protocol.noise import public_key
from hivemind_bus_client.protocol.v3handshake import (
    KK,
    REASON_FAILURE,
    REASON_HUB_PIN_MISMATCH,
    REASON_PIN_MISMATCH,
    XX,
)
from hivemind_bus_client.protocol.v3link import (
    REASON_INVALID_MESSAGE,
    REASON_REQUIRES_V3,
    V3FrameRejected,
)
from hivemind_bus_client.protocol.v3transport import CHUNK_SIZE

from .v3pair import (
    CLIENT_PUB,
    HELLO,
    HUB_PUB,
    bus,
    close_of,
    completed,
    offer_of,
    pair,
    received,
)

# -- XX, KK and the session --------------------------------------------------------------


def test_xx_on_first_contact():
    lp = pair()
    assert lp.client.state is State.READY and lp.hub.state is State.READY
    for events, peer_key in ((lp.hub_events, CLIENT_PUB), (lp.client_events, HUB_PUB)):
        done = completed(events)
        assert (done.mode, done.protocol, done.pattern) == ("noise", 3, XX)
        assert done.suite == "25519_ChaChaPoly_SHA256" and done.peer_static == peer_key
    assert lp.hub.v3.peer_static == CLIENT_PUB and lp.client.v3.peer_static == HUB_PUB
    hello = [e.payload for e in lp.hub_events if isinstance(e, HelloReceived)]
    assert hello == [HELLO]
    # HELLO, offer, m1, m2, m3 in cleartext text frames; then binary frames only.
    kinds = [(d, type(f).__name__) for d, f in lp.tap]
    down, up = ("down", "str"), ("up", "str")
    assert kinds[:5] == [down, down, up, down, up]
    assert kinds[5:] == [("up", "bytes")]


def test_the_offer_serves_v1_and_v3():
    offer = offer_of(pair())
    assert offer["max_protocol_version"] == 3 and offer["password"] is True
    assert offer["handshake"] is True and offer["min_protocol_version"] == 1
    assert offer["noise"] == {
        "patterns": [XX],
        "suites": ["25519_ChaChaPoly_SHA256", "25519_AESGCM_SHA256"],
    }
    assert list(offer)[-1] == "noise"


@pytest.mark.parametrize("binarize", [False, True])
def test_bus_both_ways(binarize):
    lp = pair(hub_kw={"binarize": binarize}, client_kw={"binarize": binarize})
    assert lp.hub.binarize is binarize and lp.client.binarize is binarize
    lp.client.send(bus("up"))
    lp.hub.send(bus("down"))
    lp.pump()
    assert received(lp.hub_events) == [bus("up")]
    assert received(lp.client_events) == [bus("down")]
    # MessageReceived.binary: the message came as a bitstring.
    assert [e.binary for e in lp.hub_events if isinstance(e, MessageReceived)] == [binarize]
    assert all(isinstance(f, bytes) for _, f in lp.tap[5:])


def test_150kb_message_both_ways_is_chunked():
    lp = pair()
    big = bus("x" * 150_000)
    start = len(lp.tap)
    lp.client.send(big)
    lp.hub.send(big)
    lp.pump()
    assert received(lp.hub_events) == [big] and received(lp.client_events) == [big]
    frames = lp.tap[start:]
    assert sum(d == "up" for d, _ in frames) == 3 and sum(d == "down" for d, _ in frames) == 3
    assert all(len(f) <= CHUNK_SIZE + 17 for _, f in frames)
    # The session goes on after a reassembly.
    lp.client.send(bus("after"))
    lp.pump()
    assert received(lp.hub_events)[-1] == bus("after")


def test_encode_refuses_a_chunked_message_without_breaking_the_link():
    lp = pair()
    with pytest.raises(InvalidState, match="encode_frames"):
        lp.hub.encode(bus("x" * (CHUNK_SIZE + 10)))
    # Nothing was encrypted: the next frame still has the counter the client expects.
    lp.client.receive_frame(lp.hub.encode(bus("small")))
    assert received(lp.client.events()) == [bus("small")]
    frames = lp.hub.encode_frames(bus("x" * (CHUNK_SIZE + 10)))
    assert len(frames) == 2
    for frame in frames:
        lp.client.receive_frame(frame)
    assert received(lp.client.events()) == [bus("x" * (CHUNK_SIZE + 10))]


def test_kk_on_the_second_connection_with_both_pins():
    first = pair()
    hub_pin = completed(first.hub_events).peer_static
    client_pin = completed(first.client_events).peer_static
    lp = pair({"pinned_key": hub_pin}, {"pinned_key": client_pin})
    assert offer_of(lp)["noise"]["patterns"] == [KK, XX]
    assert completed(lp.hub_events).pattern == KK == completed(lp.client_events).pattern
    # HELLO, offer, m1, m2: two Noise messages only, then the client's HELLO.
    assert [type(f) for _, f in lp.tap] == [str, str, str, str, bytes]
    lp.hub.send(bus())
    lp.pump()
    assert received(lp.client_events) == [bus()]


def test_a_client_with_a_pin_and_a_failed_kk_runs_xx():
    lp = pair({"pinned_key": CLIENT_PUB}, {"pinned_key": HUB_PUB, "kk_failed": True})
    assert completed(lp.client_events).pattern == XX
    assert lp.hub.state is State.READY


def test_an_unpinned_client_of_a_pinning_hub_runs_xx():
    lp = pair({"pinned_key": CLIENT_PUB})
    assert completed(lp.hub_events).pattern == XX and lp.hub.state is State.READY


# -- refusals ---------------------------------------------------------------------------


def test_wrong_password_xx_refused_by_the_client_at_m2():
    lp = pair(client_v3={"psk": os.urandom(32)})
    assert close_of(lp, "client") == (CloseCode.POLICY, REASON_FAILURE)
    assert isinstance(lp.closes("client")[0].error, AuthenticationFailed)
    # The hub sent m2 and waits for m3, as the reference hub does.
    assert lp.hub.state is State.HANDSHAKING and not lp.closes("hub")


def test_wrong_password_kk_refused_by_the_hub_at_m1():
    lp = pair({"pinned_key": CLIENT_PUB}, {"pinned_key": HUB_PUB, "psk": os.urandom(32)})
    assert close_of(lp, "hub") == (CloseCode.POLICY, REASON_FAILURE)
    assert lp.client.state is State.HANDSHAKING  # it learns from the hub's close


def test_hub_refuses_a_client_key_that_contradicts_its_pin():
    lp = pair({"pinned_key": public_key(os.urandom(32))}, {"kk_failed": True})
    assert close_of(lp, "hub") == (CloseCode.POLICY, REASON_PIN_MISMATCH)


def test_client_refuses_a_hub_key_that_contradicts_its_pin():
    lp = pair(client_v3={"pinned_key": public_key(os.urandom(32)), "kk_failed": True})
    assert close_of(lp, "client") == (CloseCode.POLICY, REASON_HUB_PIN_MISMATCH)


def test_hub_requiring_v3_refuses_a_v1_client_with_the_reason():
    lp = pair({"min_protocol_version": 3}, client_has_v3=False)
    assert close_of(lp, "hub") == (CloseCode.POLICY, REASON_REQUIRES_V3)
    assert isinstance(lp.closes("hub")[0].error, VersionRejected)
    assert offer_of(lp)["min_protocol_version"] == 3


def test_hub_requiring_v3_serves_a_v3_client():
    lp = pair({"min_protocol_version": 3})
    assert completed(lp.hub_events).protocol == 3


@pytest.mark.parametrize("tamper", ["replay", "flip", "truncate"])
def test_a_bad_session_frame_closes_1008_invalid_message(tamper):
    lp = pair()
    lp.client.send(bus())
    frame = lp.client.frames_to_send()[0]
    lp.hub.receive_frame(frame)
    assert received(lp.hub.events()) == [bus()]
    bad = {
        "replay": frame,
        "flip": frame[:-1] + bytes([frame[-1] ^ 1]),
        "truncate": frame[:10],
    }[tamper]
    lp.hub.receive_frame(bad)
    closes = [e for e in lp.hub.events() if not isinstance(e, MessageReceived)]
    assert [(c.code, c.reason) for c in closes] == [(CloseCode.POLICY, REASON_INVALID_MESSAGE)]
    assert isinstance(closes[0].error, V3FrameRejected) and lp.hub.state is State.CLOSING


def test_replay_cause_is_the_authentication_failure():
    lp = pair()
    lp.client.send(bus())
    frame = lp.client.frames_to_send()[0]
    lp.hub.receive_frame(frame)
    lp.hub.receive_frame(frame)
    error = lp.hub.events()[-1].error
    assert isinstance(error.__cause__, DecryptionKeyError)


def test_a_text_frame_on_a_session_closes_the_hub_and_is_dropped_by_the_client():
    lp = pair()
    text = bus().serialize()
    lp.client.receive_frame(text)
    assert lp.client.events() == [] and lp.client.state is State.READY
    lp.hub.receive_frame(text)
    assert [(e.code, e.reason) for e in lp.hub.events()] == [
        (CloseCode.POLICY, REASON_INVALID_MESSAGE)
    ]


def test_a_handshake_inside_the_session_is_ignored():
    lp = pair()
    lp.client.send(HiveMessage(HiveMessageType.HANDSHAKE, {"noise": {"msg": "00"}}))
    lp.client.send(bus())
    lp.pump()
    assert received(lp.hub_events) == [bus()] and lp.hub.state is State.READY
    assert not lp.closes("hub")
