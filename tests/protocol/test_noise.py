"""The Noise state machine (noise, noisecipher) against the synthetic v3 vectors.

Both roles of XXpsk2 and KKpsk0 must write the captured handshake messages
byte for byte from the same keys and ephemerals, read the other role's, and
arrive at the captured handshake hash and transport keys.
"""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from hivemind_bus_client.exceptions import DecryptionKeyError, HandshakeError, InvalidState
from hivemind_bus_client.protocol.noise import HandshakeState, protocol_name, public_key
from hivemind_bus_client.protocol.noisecipher import CipherState

from .v3data import (
    CLIENT_EPHEMERAL,
    CLIENT_EPHEMERAL_PUB,
    CLIENT_STATIC,
    CLIENT_STATIC_PUB,
    HUB_EPHEMERAL,
    HUB_EPHEMERAL_PUB,
    HUB_STATIC,
    HUB_STATIC_PUB,
    SYNTH,
    SYNTH_PSK,
)

CHACHA = "25519_ChaChaPoly_SHA256"
AES = "25519_AESGCM_SHA256"
PATTERN = {"xx": "XXpsk2", "kk": "KKpsk0"}


def pair(
    which: str, suite: str = CHACHA, psk: bytes = SYNTH_PSK, prologue: bytes | None = None
) -> tuple[HandshakeState, HandshakeState]:
    """(initiator, responder) with the vector keys and ephemerals."""
    vec = SYNTH[which]
    pattern = PATTERN[which]
    kk = pattern == "KKpsk0"
    if prologue is None:
        prologue = vec["prologue"].encode("utf-8")
    init = HandshakeState(
        pattern,
        suite,
        initiator=True,
        prologue=prologue,
        static_private=CLIENT_STATIC,
        psk=SYNTH_PSK,
        remote_static=HUB_STATIC_PUB if kk else None,
        ephemeral_private=CLIENT_EPHEMERAL,
    )
    resp = HandshakeState(
        pattern,
        suite,
        initiator=False,
        prologue=prologue,
        static_private=HUB_STATIC,
        psk=psk,
        remote_static=CLIENT_STATIC_PUB if kk else None,
        ephemeral_private=HUB_EPHEMERAL,
    )
    return init, resp


def test_vector_keys_are_the_x25519_public_keys():
    assert public_key(CLIENT_STATIC) == CLIENT_STATIC_PUB
    assert public_key(HUB_STATIC) == HUB_STATIC_PUB
    assert public_key(CLIENT_EPHEMERAL) == CLIENT_EPHEMERAL_PUB
    assert public_key(HUB_EPHEMERAL) == HUB_EPHEMERAL_PUB


@pytest.mark.parametrize("which", ["xx", "kk"])
def test_prologue_vector_hash(which):
    vec = SYNTH[which]
    assert hashlib.sha256(vec["prologue"].encode()).hexdigest() == vec["prologue_sha256"]
    assert vec["prologue"].endswith(protocol_name(PATTERN[which], CHACHA))


@pytest.mark.parametrize("which", ["xx", "kk"])
def test_both_roles_reproduce_the_synthetic_handshake(which):
    vec = SYNTH[which]
    init, resp = pair(which)
    m1 = init.write_message(vec["m1_payload"].encode())
    assert m1.hex() == vec["m1"]
    assert len(m1) == 167
    assert resp.read_message(m1) == vec["m1_payload"].encode()
    m2 = resp.write_message(vec["m2_payload"].encode())
    assert m2.hex() == vec["m2"]
    assert init.read_message(m2) == vec["m2_payload"].encode()
    if vec["m3"] is not None:
        assert not init.complete and not resp.complete
        m3 = init.write_message(b"")
        assert m3.hex() == vec["m3"]
        assert resp.read_message(m3) == b""
    assert init.complete and resp.complete
    assert init.handshake_hash.hex() == resp.handshake_hash.hex() == vec["handshake_hash"]
    i_send, i_recv = init.split()
    r_send, r_recv = resp.split()
    # Split() gives (initiator -> responder, responder -> initiator) on both sides.
    assert i_send.k is not None and i_send.k.hex() == vec["k_c2s"]
    assert i_recv.k is not None and i_recv.k.hex() == vec["k_s2c"]
    assert (r_send.k, r_recv.k) == (i_send.k, i_recv.k)
    assert init.remote_static == HUB_STATIC_PUB
    assert resp.remote_static == CLIENT_STATIC_PUB


def test_xx_message_lengths():
    init, resp = pair("xx")
    m1 = init.write_message(SYNTH["xx"]["m1_payload"].encode())
    resp.read_message(m1)
    m2 = resp.write_message(b'{"encoding": "JSON-B91"}')
    init.read_message(m2)
    assert (len(m1), len(m2), len(init.write_message())) == (167, 120, 64)


@pytest.mark.parametrize("which", ["xx", "kk"])
def test_aesgcm_suite_round_trip(which):
    init, resp = pair(which, suite=AES)
    resp.read_message(init.write_message(b"one"))
    assert init.read_message(resp.write_message(b"two")) == b"two"
    if not init.complete:
        resp.read_message(init.write_message())
    (c2s, s2c), (r_c2s, r_s2c) = init.split(), resp.split()
    assert r_c2s.decrypt(c2s.encrypt(b"hello")) == b"hello"
    assert s2c.decrypt(r_s2c.encrypt(b"world")) == b"world"
    # Same keys and ephemerals, other cipher: a different session.
    chacha_init, _ = pair(which)
    assert chacha_init.write_message(b"one") != pair(which, suite=AES)[0].write_message(b"one")


def test_nonce_encodings():
    key = bytes(range(32))
    for n in (0, 1, 258):
        chacha = CipherState("ChaChaPoly", key)
        aes = CipherState("AESGCM", key)
        chacha.n = aes.n = n
        little = b"\0" * 4 + n.to_bytes(8, "little")
        big = b"\0" * 4 + n.to_bytes(8, "big")
        assert chacha.encrypt(b"x") == ChaCha20Poly1305(key).encrypt(little, b"x", b"")
        assert aes.encrypt(b"x") == AESGCM(key).encrypt(big, b"x", b"")
        assert chacha.n == aes.n == n + 1


def test_failed_decrypt_does_not_advance_the_counter():
    key = bytes(32)
    send, recv = CipherState("ChaChaPoly", key), CipherState("ChaChaPoly", key)
    frame = send.encrypt(b"payload")
    bad = frame[:-1] + bytes([frame[-1] ^ 1])
    with pytest.raises(DecryptionKeyError):
        recv.decrypt(bad)
    assert recv.n == 0
    assert recv.decrypt(frame) == b"payload"
    assert recv.n == 1


def test_exhausted_nonce_refused():
    state = CipherState("ChaChaPoly", bytes(32))
    state.n = 2**64 - 1
    with pytest.raises(InvalidState):
        state.encrypt(b"x")


def test_keyless_cipher_state_is_the_identity():
    state = CipherState("AESGCM")
    assert not state.has_key
    assert state.encrypt(b"clear") == b"clear"
    with pytest.raises(ValueError):
        CipherState("Blowfish")


def test_wrong_psk_fails_kk_at_message_one():
    init, resp = pair("kk", psk=bytes(32))
    with pytest.raises(DecryptionKeyError):
        resp.read_message(init.write_message(b"{}"))


def test_wrong_psk_fails_xx_at_message_two():
    init, resp = pair("xx", psk=bytes(32))
    assert resp.read_message(init.write_message(b"{}")) == b"{}"  # psk2: m1 cannot tell
    with pytest.raises(DecryptionKeyError):
        init.read_message(resp.write_message(b"{}"))


def test_other_prologue_fails_at_message_one():
    init, _ = pair("xx")
    _, resp = pair("xx", prologue=b"something else")
    with pytest.raises(DecryptionKeyError):
        resp.read_message(init.write_message(b"{}"))


@pytest.mark.parametrize("which", ["xx", "kk"])
def test_tampered_handshake_message_refused(which):
    init, resp = pair(which)
    m1 = bytearray(init.write_message(b"{}"))
    m1[40] ^= 0x80
    with pytest.raises(DecryptionKeyError):
        resp.read_message(bytes(m1))


def test_kk_with_another_static_key_refused():
    init, _ = pair("kk")
    stranger = HandshakeState(
        "KKpsk0",
        CHACHA,
        initiator=False,
        prologue=SYNTH["kk"]["prologue"].encode(),
        static_private=bytes(range(200, 232)),
        psk=SYNTH_PSK,
        remote_static=CLIENT_STATIC_PUB,
    )
    with pytest.raises(DecryptionKeyError):
        stranger.read_message(init.write_message(b"{}"))


def test_short_message_is_a_handshake_error():
    _, resp = pair("xx")
    with pytest.raises(HandshakeError):
        resp.read_message(b"\x01" * 20)
    _, resp = pair("xx")
    with pytest.raises(HandshakeError):
        resp.read_message(CLIENT_EPHEMERAL_PUB + b"\x00" * 5)


def test_low_order_ephemeral_refused():
    _, resp = pair("kk")
    # KK m1 does es (DH with the ephemeral) before anything is decrypted.
    with pytest.raises(HandshakeError):
        resp.read_message(bytes(32) + bytes(64))


def test_turns_are_enforced():
    init, resp = pair("xx")
    with pytest.raises(InvalidState):
        resp.write_message(b"")
    with pytest.raises(InvalidState):
        init.read_message(b"")
    with pytest.raises(InvalidState):
        init.split()
    resp.read_message(init.write_message(b""))
    init.read_message(resp.write_message(b""))
    resp.read_message(init.write_message(b""))
    assert init.complete and not init.our_turn
    with pytest.raises(InvalidState):
        init.write_message(b"")
    with pytest.raises(InvalidState):
        resp.read_message(b"")


def test_constructor_checks():
    with pytest.raises(ValueError):
        HandshakeState(
            "IKpsk1",
            CHACHA,
            initiator=True,
            prologue=b"",
            static_private=CLIENT_STATIC,
            psk=SYNTH_PSK,
        )
    with pytest.raises(ValueError):
        HandshakeState(
            "XXpsk2",
            "448_AESGCM_SHA512",
            initiator=True,
            prologue=b"",
            static_private=CLIENT_STATIC,
            psk=SYNTH_PSK,
        )
    with pytest.raises(ValueError):
        HandshakeState(
            "XXpsk2",
            CHACHA,
            initiator=True,
            prologue=b"",
            static_private=CLIENT_STATIC,
            psk=b"short",
        )
    with pytest.raises(ValueError):
        HandshakeState(
            "KKpsk0",
            CHACHA,
            initiator=True,
            prologue=b"",
            static_private=CLIENT_STATIC,
            psk=SYNTH_PSK,
        )


def test_fresh_ephemerals_by_default():
    a = HandshakeState(
        "XXpsk2", CHACHA, initiator=True, prologue=b"", static_private=CLIENT_STATIC, psk=SYNTH_PSK
    )
    b = HandshakeState(
        "XXpsk2", CHACHA, initiator=True, prologue=b"", static_private=CLIENT_STATIC, psk=SYNTH_PSK
    )
    assert a.write_message(b"")[:32] != b.write_message(b"")[:32]
