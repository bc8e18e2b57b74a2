"""The sans-I/O connection, driven frame by frame with no sockets."""

from __future__ import annotations

import json

import pytest
from ovos_bus_client.message import Message

from hivemind_bus_client import crypto
from hivemind_bus_client.connection import (
    CloseRequested,
    Connection,
    HandshakeComplete,
    HelloReceived,
    MessageReceived,
    Role,
    State,
)
from hivemind_bus_client.exceptions import InvalidState
from hivemind_bus_client.message import HiveMessage, HiveMessageType, HiveMindBinaryPayloadType

from .linkpair import LinkPair

HUB_KEY = crypto.create_private_key()
CLIENT_KEY = crypto.create_private_key()
BUS = HiveMessage(HiveMessageType.BUS, Message("speak", {"utterance": "olá Büro"}, {}))


def pair(hub_kw=None, client_kw=None) -> LinkPair:
    hub = Connection(
        Role.HUB, private_key=HUB_KEY, peer="ua::1::sat::x", node_id="hub", **(hub_kw or {})
    )
    client = Connection(
        Role.CLIENT,
        hello={"session": {"session_id": "s1"}, "site_id": "kitchen"},
        **(client_kw or {}),
    )
    return LinkPair(client, hub).start()


def received(events):
    return [e.message for e in events if isinstance(e, MessageReceived)]


def test_password_handshake_and_round_trip():
    lp = pair({"password": "pw"}, {"password": "pw"})
    assert lp.client.state is State.READY and lp.hub.state is State.READY
    done = [e for e in lp.hub_events if isinstance(e, HandshakeComplete)]
    assert done and done[0].mode == "password" and done[0].encoding == "JSON-B64"
    hello = [e for e in lp.hub_events if isinstance(e, HelloReceived)]
    assert hello[0].payload["site_id"] == "kitchen"
    lp.client.send(BUS)
    lp.hub.send(BUS)
    lp.pump()
    assert received(lp.hub_events) == [BUS]
    assert received(lp.client_events) == [BUS]
    # Everything after the handshake is encrypted on the wire.
    after = lp.tap[4:]
    assert after and all("ciphertext" in f for _, f in after if isinstance(f, str))


def _wire(tap):
    """(direction, msg_type or "sealed") of every frame that crossed."""
    out = []
    for direction, frame in tap:
        assert isinstance(frame, str), "no binary frame in these tests"
        obj = json.loads(frame)
        out.append((direction, "sealed" if "ciphertext" in obj else obj["msg_type"]))
    return out


@pytest.mark.parametrize(
    ("hub_kw", "client_kw"),
    [({"password": "pw"}, {"password": "pw"}), ({}, {"private_key": CLIENT_KEY})],
    ids=["password", "rsa"],
)
def test_hello_and_handshake_are_the_only_plaintext_frames(hub_kw, client_kw):
    lp = pair(hub_kw, client_kw)
    lp.hub.announce("ua::1::sat::final")
    lp.pump()
    # Exactly the hub's HELLO and offer, the client's reply and the hub's answer
    # cross in plaintext; both HELLOs sent once keyed (the client's, then the
    # hub's final-peer HELLO) are sealed, and they did arrive.
    assert _wire(lp.tap) == [
        ("down", "hello"),
        ("down", "shake"),
        ("up", "shake"),
        ("down", "shake"),
        ("up", "sealed"),
        ("down", "sealed"),
    ]
    assert any(isinstance(e, HelloReceived) for e in lp.hub_events)
    assert lp.client.peer == "ua::1::sat::final"


@pytest.mark.parametrize("wrong_side", ["client", "hub"])
def test_wrong_password_is_refused_at_the_handshake(wrong_side):
    hub_pw, client_pw = ("pw", "nope") if wrong_side == "client" else ("nope", "pw")
    lp = pair({"password": hub_pw}, {"password": client_pw})
    closes = lp.closes("hub")
    assert closes and closes[0].code == 1008 and "wrong password" in closes[0].reason
    assert lp.hub.state is State.CLOSING
    assert lp.client.state is not State.READY


def test_client_rejects_hub_with_other_password():
    # A hub that does not check the client's envelope (like the reference) still
    # cannot fool the client: its own envelope is checked against our password.
    client = Connection(Role.CLIENT, password="pw")
    client.start()
    client.receive_frame(HiveMessage(HiveMessageType.HANDSHAKE, {"password": True}).serialize())
    assert json.loads(client.frames_to_send()[0])["payload"]["envelope"]
    reply = {
        "envelope": crypto.password_envelope("other"),
        "encoding": "JSON-HEX",
        "cipher": "AES-GCM",
    }
    client.receive_frame(HiveMessage(HiveMessageType.HANDSHAKE, reply).serialize())
    closes = [e for e in client.events() if isinstance(e, CloseRequested)]
    assert closes and closes[0].code == 1008 and client.state is State.CLOSING


def test_rsa_handshake():
    lp = pair({}, {"private_key": CLIENT_KEY})
    assert lp.client.state is State.READY and lp.client.mode == "rsa"
    lp.client.send(BUS)
    lp.pump()
    assert received(lp.hub_events) == [BUS]


def test_rsa_handshake_refused_when_row_has_password():
    lp = pair({"password": "pw"}, {"private_key": CLIENT_KEY})
    # The client sees the hub wants a password it does not have.
    closes = lp.closes("client")
    assert closes and closes[0].code == 1008


def test_preshared_key_only():
    lp = pair({"crypto_key": "0123456789abcdef"}, {"crypto_key": "0123456789abcdef"})
    assert lp.client.state is State.READY and lp.hub.state is State.READY
    lp.client.send(BUS)
    lp.pump()
    assert received(lp.hub_events) == [BUS]


@pytest.mark.parametrize("binarize", [True, False])
def test_binarize_needs_both_sides(binarize):
    lp = pair({"password": "pw", "binarize": True}, {"password": "pw", "binarize": binarize})
    assert lp.client.binarize is binarize and lp.hub.binarize is binarize
    n = len(lp.tap)
    lp.client.send(BUS)
    lp.pump()
    assert isinstance(lp.tap[n][1], bytes) is binarize
    assert received(lp.hub_events) == [BUS]


def test_binary_message_always_binary_frame():
    lp = pair({"password": "pw"}, {"password": "pw"})
    audio = HiveMessage(
        HiveMessageType.BINARY, b"\x00\x01" * 100, bin_type=HiveMindBinaryPayloadType.RAW_AUDIO
    )
    n = len(lp.tap)
    lp.client.send(audio)
    lp.pump()
    assert isinstance(lp.tap[n][1], bytes)
    assert received(lp.hub_events) == [audio]


@pytest.mark.parametrize(
    "enc", ["JSON-B91", "JSON-Z85B", "JSON-Z85P", "JSON-B32", "JSON-HEX", "JSON-URLSAFE-B64"]
)
@pytest.mark.parametrize("cipher", ["AES-GCM", "CHACHA20-POLY1305"])
def test_negotiation_each_encoding_and_cipher(enc, cipher):
    lp = pair({"password": "pw", "encodings": [enc], "ciphers": [cipher]}, {"password": "pw"})
    assert lp.hub.cipher.encoding.value == enc and lp.client.cipher.encoding.value == enc
    assert lp.client.cipher.cipher.value == cipher
    lp.client.send(BUS)
    lp.pump()
    assert received(lp.hub_events) == [BUS]


def test_no_common_encoding_closes():
    lp = pair(
        {"password": "pw", "encodings": ["JSON-HEX"]}, {"password": "pw", "encodings": ["JSON-B64"]}
    )
    assert lp.closes("hub")[0].code == 1008


def test_client_order_when_hub_defers():
    lp = pair(
        {"password": "pw", "prefer_own_order": False},
        {"password": "pw", "encodings": ["JSON-B32", "JSON-B64"]},
    )
    assert lp.hub.cipher.encoding.value == "JSON-B32"


def test_application_frame_before_handshake_closes():
    hub = Connection(Role.HUB, password="pw", private_key=HUB_KEY)
    hub.start()
    hub.receive_frame(BUS.serialize())
    events = hub.events()
    assert isinstance(events[-1], CloseRequested) and events[-1].code == 1002


def test_plaintext_after_handshake_closes():
    lp = pair({"password": "pw"}, {"password": "pw"})
    lp.hub.receive_frame(BUS.serialize())
    assert lp.hub.events()[-1].code == 1008


def test_tampered_frame_closes_with_1008():
    lp = pair({"password": "pw"}, {"password": "pw"})
    frame = lp.client.encode(BUS)
    env = json.loads(frame)
    ct = bytearray(__import__("base64").b64decode(env["ciphertext"]))
    ct[0] ^= 1
    env["ciphertext"] = __import__("base64").b64encode(bytes(ct)).decode()
    lp.hub.receive_frame(json.dumps(env))
    ev = lp.hub.events()[-1]
    assert isinstance(ev, CloseRequested) and ev.code == 1008


def test_handshake_timeout():
    hub = Connection(
        Role.HUB, password="pw", private_key=HUB_KEY, handshake_timeout=5, resend_offer=()
    )
    hub.start(100.0)
    assert hub.get_timer() == 105.0
    hub.handle_timer(104.9)
    assert hub.state is State.HANDSHAKING
    hub.handle_timer(105.0)
    assert hub.state is State.CLOSING and hub.events()[-1].code == 1013


def test_send_before_ready_is_local_error():
    client = Connection(Role.CLIENT, password="pw")
    with pytest.raises(InvalidState):
        client.send(BUS)


def test_oversized_frame_closes_1009():
    lp = pair({"password": "pw", "max_size": 1000}, {"password": "pw"})
    lp.hub.receive_frame("x" * 2000)
    assert lp.hub.events()[-1].code == 1009


def test_repeated_late_handshake_rekeys():
    lp = pair({"password": "pw"}, {"password": "pw"})
    old = lp.hub.cipher.key
    # A reference client that missed the offer repeats its HANDSHAKE.
    env = crypto.password_envelope("pw")
    shake = HiveMessage(
        HiveMessageType.HANDSHAKE,
        {"binarize": False, "encodings": ["JSON-HEX"], "ciphers": ["AES-GCM"], "envelope": env},
    )
    lp.hub.receive_frame(shake.serialize())
    assert lp.hub.state is State.READY and lp.hub.cipher.key != old


def test_hub_announces_final_peer():
    lp = pair({"password": "pw"}, {"password": "pw"})
    lp.hub.announce("ua::1::sat::s1")
    lp.pump()
    assert lp.client.peer == "ua::1::sat::s1"


def test_hub_resends_its_offer_to_a_silent_client_then_stops():
    hub = Connection(Role.HUB, password="pw", resend_offer=(0.5, 1.0))
    hub.start(now=0.0)
    first = hub.frames_to_send()
    assert len(first) == 2  # HELLO + HANDSHAKE offer
    assert hub.get_timer() == 0.5
    hub.handle_timer(0.5)
    assert hub.frames_to_send() == first
    assert hub.get_timer() == 1.0
    # once the client speaks, no more re-sends; only the handshake deadline remains
    client = Connection(Role.CLIENT, password="pw")
    for frame in first:
        client.receive_frame(frame)
    for frame in client.frames_to_send():
        hub.receive_frame(frame)
    hub.frames_to_send()
    hub.handle_timer(1.0)
    assert hub.frames_to_send() == []


def test_client_ignores_a_repeated_offer():
    hub = Connection(Role.HUB, password="pw", resend_offer=(0.5,))
    hub.start(now=0.0)
    offer = hub.frames_to_send()
    hub.handle_timer(0.5)
    again = hub.frames_to_send()
    client = Connection(Role.CLIENT, password="pw")
    for frame in offer + again:  # the re-send crossed the client's answer
        client.receive_frame(frame)
    answer = client.frames_to_send()
    assert len(answer) == 1  # one HANDSHAKE, not two
    hub.receive_frame(answer[0])
    for frame in hub.frames_to_send():
        client.receive_frame(frame)
    assert client.state.value == "ready" and hub.state.value == "ready"
