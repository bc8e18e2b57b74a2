"""The v3 opening (v3offer, v3handshake) against the captured sessions.

The client and hub objects, given the captured secrets and ephemerals, must
produce every captured HANDSHAKE text frame byte for byte (wrapped in the v1
envelope) and accept the other side's; every refusal carries its close code
and reason.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from hivemind_bus_client.exceptions import (
    AuthenticationFailed,
    CloseCode,
    HandshakeError,
    InvalidState,
    NegotiationFailed,
)
from hivemind_bus_client.protocol.message import HiveMessage, HiveMessageType
from hivemind_bus_client.protocol.v3handshake import (
    KK,
    REASON_FAILURE,
    REASON_HUB_PIN_MISMATCH,
    REASON_NEEDS_NOISE,
    REASON_PIN_MISMATCH,
    XX,
    V3ClientHandshake,
    V3HubHandshake,
    build_prologue,
    canonical_json,
    client_choice,
    derive_psk,
    hub_offer,
)

from .v3data import (
    CLIENT_EPHEMERAL,
    CLIENT_STATIC,
    CLIENT_STATIC_PUB,
    HUB_EPHEMERAL,
    HUB_STATIC,
    HUB_STATIC_PUB,
    LIVE_KK,
    LIVE_PSK,
    LIVE_XX,
    PASSWORD,
    SYNTH,
    SYNTH_PSK,
    frame_payload,
    frame_text,
    live_kk_hello,
)

CHACHA = "25519_ChaChaPoly_SHA256"
AES = "25519_AESGCM_SHA256"


def shake(payload: dict) -> str:
    """A HANDSHAKE payload as the cleartext text frame."""
    return HiveMessage(HiveMessageType.HANDSHAKE, payload).serialize()


def sides(
    hello,
    offer,
    pattern=XX,
    suite=CHACHA,
    *,
    client_psk=SYNTH_PSK,
    hub_psk=SYNTH_PSK,
    client_pin=None,
    hub_pin=None,
    client_static=CLIENT_STATIC,
):
    client = V3ClientHandshake(
        hello,
        offer,
        pattern=pattern,
        suite=suite,
        psk=client_psk,
        static_private=client_static,
        pinned_hub_key=client_pin,
        ephemeral_private=CLIENT_EPHEMERAL,
    )
    hub = V3HubHandshake(
        hello,
        offer,
        psk=hub_psk,
        static_private=HUB_STATIC,
        pinned_client_key=hub_pin,
        ephemeral_private=HUB_EPHEMERAL,
    )
    return client, hub


# -- PSK, canonical JSON, prologue, offer ---------------------------------------


def test_psk_synthetic_vector():
    assert hashlib.sha256(SYNTH["node_id"].encode()).hexdigest() == SYNTH["salt"]
    assert derive_psk(PASSWORD, SYNTH["node_id"]) == SYNTH_PSK


def test_psk_live_vector_node_id_is_the_pem():
    node_id = frame_payload(LIVE_XX, "F1")["node_id"]
    assert hashlib.sha256(node_id.encode()).hexdigest() == LIVE_XX["salt"]
    assert derive_psk(PASSWORD, node_id) == LIVE_PSK


def test_psk_empty_node_id_and_other_password():
    empty = derive_psk(PASSWORD, "")
    assert len(empty) == 32
    assert empty != derive_psk("another password", "")


def test_canonical_json():
    assert canonical_json({"b": 1, "a": {"d": [1, "é"], "c": "x\ny"}}) == (
        '{"a":{"c":"x\\ny","d":[1,"é"]},"b":1}'.encode()
    )


@pytest.mark.parametrize(("which", "pinned"), [("xx", False), ("kk", True)])
def test_synthetic_prologue(which, pinned):
    pattern = KK if pinned else XX
    prologue = build_prologue(SYNTH["hello"], hub_offer(pinned=pinned), pattern, CHACHA)
    assert prologue == SYNTH[which]["prologue"].encode()


@pytest.mark.parametrize(("run", "pattern"), [(LIVE_XX, XX), (LIVE_KK, KK)])
def test_live_prologue(run, pattern):
    hello = frame_payload(LIVE_XX, "F1") if run is LIVE_XX else live_kk_hello()
    prologue = build_prologue(hello, frame_payload(run, "F2"), pattern, CHACHA)
    assert len(prologue) == run["prologue_len"]
    assert hashlib.sha256(prologue).hexdigest() == run["prologue_sha256"]


def test_captured_hellos_are_v1_envelopes():
    # The HELLO frame the prologue is built from: the v1 envelope, unchanged in v3.
    for hello, text in (
        (frame_payload(LIVE_XX, "F1"), frame_text(LIVE_XX, "F1")),
        (live_kk_hello(), None),
    ):
        wire = HiveMessage(HiveMessageType.HELLO, hello).serialize()
        assert len(wire.encode()) == 1178
        if text is not None:
            assert wire == text


def test_hub_offer_is_the_captured_offer_byte_for_byte():
    assert shake(hub_offer(pinned=False)) == frame_text(LIVE_XX, "F2")
    assert shake(hub_offer(pinned=True)) == frame_text(LIVE_KK, "F2")
    assert list(hub_offer(pinned=False)) == [
        "max_protocol_version",
        "binarize",
        "encodings",
        "ciphers",
        "noise",
    ]
    assert hub_offer(pinned=False, binarize=True)["binarize"] is True


# -- the client's choice ----------------------------------------------------------


def test_client_choice():
    xx_only, both = hub_offer(pinned=False), hub_offer(pinned=True)
    assert client_choice(xx_only) == (XX, CHACHA)
    assert client_choice(both) == (XX, CHACHA)  # no pin of its own
    assert client_choice(both, has_pin=True) == (KK, CHACHA)
    assert client_choice(xx_only, has_pin=True) == (XX, CHACHA)  # KK not offered
    assert client_choice(both, has_pin=True, kk_failed=True) == (XX, CHACHA)
    aes_only = {**both, "noise": {"patterns": [KK, XX], "suites": [AES]}}
    assert client_choice(aes_only) == (XX, AES)


@pytest.mark.parametrize(
    ("offer", "kwargs"),
    [
        (hub_offer(pinned=False), {"has_password": False}),
        (hub_offer(pinned=False), {"max_protocol_version": 1}),
        ({k: v for k, v in hub_offer(pinned=False).items() if k != "max_protocol_version"}, {}),
        ({**hub_offer(pinned=False), "max_protocol_version": 2}, {}),
        ({**hub_offer(pinned=False), "noise": None}, {}),
        ({**hub_offer(pinned=False), "noise": {"patterns": [XX], "suites": ["448_X"]}}, {}),
        ({**hub_offer(pinned=False), "noise": {"patterns": [KK], "suites": [CHACHA]}}, {}),
        ({"password": True, "max_protocol_version": 1}, {}),
    ],
)
def test_client_choice_falls_back_to_v1(offer, kwargs):
    assert client_choice(offer, **kwargs) is None


# -- live captures replayed byte for byte ---------------------------------------------


def test_live_xx_capture_both_roles():
    hello, offer = frame_payload(LIVE_XX, "F1"), frame_payload(LIVE_XX, "F2")
    client, hub = sides(hello, offer, client_psk=LIVE_PSK, hub_psk=LIVE_PSK)
    f3 = client.start()
    assert shake(f3) == frame_text(LIVE_XX, "F3")
    f4 = hub.receive(frame_payload(LIVE_XX, "F3"))
    assert f4 is not None and shake(f4) == frame_text(LIVE_XX, "F4")
    f5 = client.receive(frame_payload(LIVE_XX, "F4"))
    assert f5 is not None and shake(f5) == frame_text(LIVE_XX, "F5")
    assert not hub.done
    assert hub.receive(frame_payload(LIVE_XX, "F5")) is None
    assert client.done and hub.done
    c, h = client.result, hub.result
    assert c is not None and h is not None
    assert c.handshake_hash.hex() == h.handshake_hash.hex() == LIVE_XX["handshake_hash"]
    assert c.send.k.hex() == h.recv.k.hex() == LIVE_XX["k_c2s"]
    assert c.recv.k.hex() == h.send.k.hex() == LIVE_XX["k_s2c"]
    assert (c.remote_static, h.remote_static) == (HUB_STATIC_PUB, CLIENT_STATIC_PUB)
    assert (c.pattern, c.suite, h.pattern, h.suite) == (XX, CHACHA, XX, CHACHA)
    assert (c.binarize, h.binarize, h.encoding) == (False, False, "JSON-B91")


def test_live_kk_capture_both_roles():
    hello, offer = live_kk_hello(), frame_payload(LIVE_KK, "F2")
    client, hub = sides(
        hello,
        offer,
        KK,
        client_psk=LIVE_PSK,
        hub_psk=LIVE_PSK,
        client_pin=HUB_STATIC_PUB,
        hub_pin=CLIENT_STATIC_PUB,
    )
    assert shake(client.start()) == frame_text(LIVE_KK, "F3")
    f4 = hub.receive(frame_payload(LIVE_KK, "F3"))
    assert f4 is not None and shake(f4) == frame_text(LIVE_KK, "F4")
    assert hub.done  # KK completes with m2
    assert client.receive(frame_payload(LIVE_KK, "F4")) is None
    c, h = client.result, hub.result
    assert c is not None and h is not None
    assert c.handshake_hash.hex() == h.handshake_hash.hex() == LIVE_KK["handshake_hash"]
    assert c.send.k.hex() == h.recv.k.hex() == LIVE_KK["k_c2s"]
    assert c.recv.k.hex() == h.send.k.hex() == LIVE_KK["k_s2c"]
    assert (c.pattern, h.pattern) == (KK, KK)


@pytest.mark.parametrize("which", ["xx", "kk"])
def test_synthetic_handshake_objects(which):
    vec = SYNTH[which]
    kk = which == "kk"
    client, hub = sides(
        SYNTH["hello"],
        hub_offer(pinned=kk),
        KK if kk else XX,
        client_pin=HUB_STATIC_PUB if kk else None,
        hub_pin=CLIENT_STATIC_PUB if kk else None,
    )
    m1 = client.start()
    assert m1["noise"]["msg"] == vec["m1"]
    m2 = hub.receive(m1)
    assert m2 == {"noise": {"msg": vec["m2"]}}
    m3 = client.receive(m2)
    assert (m3 and m3["noise"]["msg"]) == (vec["m3"] or None)
    if m3 is not None:
        hub.receive(m3)
    assert client.result.send.k.hex() == hub.result.recv.k.hex() == vec["k_c2s"]


def run(client, hub):
    """Drive both objects to the end; return the frames' payloads in order."""
    sent = [client.start()]
    reply = hub.receive(sent[-1])
    while reply is not None:
        sent.append(reply)
        reply = (client if len(sent) % 2 == 0 else hub).receive(reply)
    return sent


def test_binarize_offer_travels_in_m1():
    client, hub = sides(SYNTH["hello"], hub_offer(pinned=False, binarize=True))
    sent = run(client, hub)
    assert len(bytes.fromhex(sent[0]["noise"]["msg"])) == 166  # "true" is one byte shorter
    assert client.result.binarize is True and hub.result.binarize is True


@pytest.mark.parametrize("pattern", [XX, KK])
def test_aesgcm_suite(pattern):
    kk = pattern == KK
    client, hub = sides(
        SYNTH["hello"],
        hub_offer(pinned=kk),
        pattern,
        AES,
        client_pin=HUB_STATIC_PUB if kk else None,
        hub_pin=CLIENT_STATIC_PUB if kk else None,
    )
    run(client, hub)
    assert client.done and hub.done and hub.suite == AES
    assert hub.result.recv.decrypt(client.result.send.encrypt(b"x")) == b"x"


def test_fresh_ephemerals_by_default():
    offer = hub_offer(pinned=False)
    a = V3ClientHandshake(
        SYNTH["hello"], offer, pattern=XX, suite=CHACHA, psk=SYNTH_PSK, static_private=CLIENT_STATIC
    )
    b = V3ClientHandshake(
        SYNTH["hello"], offer, pattern=XX, suite=CHACHA, psk=SYNTH_PSK, static_private=CLIENT_STATIC
    )
    assert a.start()["noise"]["msg"][:64] != b.start()["noise"]["msg"][:64]


# -- refusals: close code 1008 and the reason text -------------------------------------


def refused(exc_info, reason):
    assert exc_info.value.close_code == CloseCode.POLICY
    assert str(exc_info.value) == reason


@pytest.mark.parametrize("payload", [{}, {"binarize": False}, {"noise": "XXpsk2"}, "x"])
def test_hub_refuses_a_v1_client(payload):
    _, hub = sides(SYNTH["hello"], hub_offer(pinned=False))
    with pytest.raises(HandshakeError) as exc:
        hub.receive(payload)
    refused(exc, REASON_NEEDS_NOISE)


@pytest.mark.parametrize(
    ("pattern", "suite"),
    [(KK, CHACHA), ("NNpsk0", CHACHA), (XX, "25519_ChaChaPoly_BLAKE2s"), (None, None)],
)
def test_hub_refuses_what_it_did_not_offer(pattern, suite):
    client, hub = sides(SYNTH["hello"], hub_offer(pinned=False))
    m1 = client.start()
    m1["noise"]["pattern"], m1["noise"]["suite"] = pattern, suite
    with pytest.raises(NegotiationFailed) as exc:
        hub.receive(m1)
    refused(exc, f"pattern/suite not offered: {pattern}/{suite}")


def test_wrong_password_kk_detected_by_the_hub_at_m1():
    client, hub = sides(
        SYNTH["hello"],
        hub_offer(pinned=True),
        KK,
        client_psk=bytes(32),
        client_pin=HUB_STATIC_PUB,
        hub_pin=CLIENT_STATIC_PUB,
    )
    with pytest.raises(AuthenticationFailed) as exc:
        hub.receive(client.start())
    refused(exc, REASON_FAILURE)


def test_wrong_password_xx_detected_by_the_client_at_m2():
    client, hub = sides(SYNTH["hello"], hub_offer(pinned=False), client_psk=bytes(32))
    m2 = hub.receive(client.start())  # psk2: the hub cannot tell at m1
    with pytest.raises(AuthenticationFailed) as exc:
        client.receive(m2)
    refused(exc, REASON_FAILURE)
    assert not client.done


def test_other_prologue_refused_at_m1():
    client, _ = sides(SYNTH["hello"], hub_offer(pinned=False))
    other_hello = {**SYNTH["hello"], "peer": "someone else"}
    _, hub = sides(other_hello, hub_offer(pinned=False))
    with pytest.raises(AuthenticationFailed):
        hub.receive(client.start())


def test_hub_refuses_an_xx_client_key_that_contradicts_its_pin():
    client, hub = sides(
        SYNTH["hello"], hub_offer(pinned=True), hub_pin=b"\x01" * 32, client_static=CLIENT_STATIC
    )
    m2 = hub.receive(client.start())
    m3 = client.receive(m2)
    with pytest.raises(AuthenticationFailed) as exc:
        hub.receive(m3)
    refused(exc, REASON_PIN_MISMATCH)
    assert not hub.done


def test_hub_with_the_right_pin_accepts_xx():
    client, hub = sides(SYNTH["hello"], hub_offer(pinned=True), hub_pin=CLIENT_STATIC_PUB)
    run(client, hub)
    assert hub.done and hub.result.remote_static == CLIENT_STATIC_PUB


def test_hub_without_a_pin_learns_the_client_key():
    client, hub = sides(SYNTH["hello"], hub_offer(pinned=False))
    run(client, hub)
    assert hub.result.remote_static == CLIENT_STATIC_PUB  # the caller pins it (TOFU)


def test_kk_from_an_unpinned_client_refused_at_m1():
    client, hub = sides(
        SYNTH["hello"],
        hub_offer(pinned=True),
        KK,
        client_pin=HUB_STATIC_PUB,
        hub_pin=CLIENT_STATIC_PUB,
        client_static=bytes(range(200, 232)),
    )
    with pytest.raises(AuthenticationFailed) as exc:
        hub.receive(client.start())
    refused(exc, REASON_FAILURE)


def test_client_refuses_an_xx_hub_key_that_contradicts_its_pin():
    client, hub = sides(SYNTH["hello"], hub_offer(pinned=False), client_pin=b"\x02" * 32)
    with pytest.raises(AuthenticationFailed) as exc:
        client.receive(hub.receive(client.start()))
    refused(exc, REASON_HUB_PIN_MISMATCH)
    assert not client.done


def test_kk_client_to_a_hub_with_another_key_fails():
    client, hub = sides(
        SYNTH["hello"],
        hub_offer(pinned=True),
        KK,
        client_pin=b"\x03" * 32,
        hub_pin=CLIENT_STATIC_PUB,
    )
    with pytest.raises(AuthenticationFailed):
        hub.receive(client.start())


@pytest.mark.parametrize("msg", [None, 7, "zz", "00" * 10])
def test_malformed_noise_messages(msg):
    client, hub = sides(SYNTH["hello"], hub_offer(pinned=False))
    m1 = client.start()
    m1["noise"]["msg"] = msg
    with pytest.raises(HandshakeError) as exc:
        hub.receive(m1)
    assert str(exc.value).startswith(REASON_FAILURE)
    assert exc.value.close_code == CloseCode.POLICY


def test_m1_payload_must_name_encodings():
    client = V3ClientHandshake(
        SYNTH["hello"],
        hub_offer(pinned=False),
        pattern=XX,
        suite=CHACHA,
        psk=SYNTH_PSK,
        static_private=CLIENT_STATIC,
        encodings=[],
    )
    _, hub = sides(SYNTH["hello"], hub_offer(pinned=False))
    with pytest.raises(HandshakeError) as exc:
        hub.receive(client.start())
    assert str(exc.value) == REASON_FAILURE + "m1 payload has no encodings"


def test_misuse_is_a_local_error():
    with pytest.raises(InvalidState):
        V3ClientHandshake(
            SYNTH["hello"],
            hub_offer(pinned=True),
            pattern=KK,
            suite=CHACHA,
            psk=SYNTH_PSK,
            static_private=CLIENT_STATIC,
        )
    client, hub = sides(SYNTH["hello"], hub_offer(pinned=False))
    with pytest.raises(InvalidState):
        client.receive({"noise": {"msg": "00"}})  # before start()
    sent = run(client, hub)
    with pytest.raises(InvalidState):
        client.receive(sent[1])
    with pytest.raises(InvalidState):
        hub.receive(sent[2])
    assert InvalidState.close_code is None


def test_m2_payload_names_the_first_client_encoding():
    client, hub = sides(SYNTH["hello"], hub_offer(pinned=False))
    run(client, hub)
    assert hub.result.encoding == "JSON-B91" == client.result.encoding
    assert json.loads(SYNTH["xx"]["m2_payload"]) == {"encoding": "JSON-B91"}
