"""The v3 transport (v3transport) against the captured frames.

Every captured transport frame must decrypt to its captured plaintext, and
re-encrypting the same HiveMessage under the same key and counter must give
the captured bytes. Chunking, the reassembly bound and every fatal frame are
checked on fresh keys.
"""

from __future__ import annotations

import os

import pytest

from hivemind_bus_client.exceptions import (
    CloseCode,
    DecodingError,
    DecryptionKeyError,
    InvalidState,
    PayloadTooBig,
    ProtocolError,
)
from hivemind_bus_client.protocol.message import HiveMessage, HiveMessageType
from hivemind_bus_client.protocol.noisecipher import CipherState
from hivemind_bus_client.protocol.serialization import decode_frame
from hivemind_bus_client.protocol.v3transport import (
    CHUNK_SIZE,
    DEFAULT_MAX_SIZE,
    FATAL_CLOSE,
    MARKER_BITS,
    MARKER_FIRST_BITS,
    MARKER_FIRST_JSON,
    MARKER_JSON,
    MARKER_LAST,
    MARKER_MIDDLE,
    V3Transport,
)

from .v3data import LIVE_KK, LIVE_XX, SYNTH, frame_bytes


def keyed(hex_key: str, n: int = 0) -> CipherState:
    state = CipherState("ChaChaPoly", bytes.fromhex(hex_key))
    state.n = n
    return state


def link(
    binarize: bool = False, max_size: int = DEFAULT_MAX_SIZE, cipher: str = "ChaChaPoly"
) -> tuple[V3Transport, V3Transport, CipherState]:
    """(sender, receiver, a raw CipherState that writes to the receiver)."""
    k1, k2 = os.urandom(32), os.urandom(32)
    sender = V3Transport(CipherState(cipher, k1), CipherState(cipher, k2), binarize=binarize)
    receiver = V3Transport(
        CipherState(cipher, k2), CipherState(cipher, k1), binarize=binarize, max_size=max_size
    )
    return sender, receiver, CipherState(cipher, k1)


def markers(frames: list[bytes], raw: CipherState) -> list[int]:
    return [raw.decrypt(f)[0] for f in frames]


# -- synthetic vectors ----------------------------------------------------------------


@pytest.mark.parametrize("which", ["xx", "kk"])
def test_synthetic_transport_frames(which):
    vec = SYNTH[which]
    c2s = V3Transport(keyed(vec["k_c2s"]), keyed(vec["k_s2c"]))
    s2c = V3Transport(keyed(vec["k_s2c"]), keyed(vec["k_c2s"]))
    for frame in vec["transport"]:
        sender, receiver = (c2s, s2c) if frame["dir"] == "c2s" else (s2c, c2s)
        if frame["marker"] == MARKER_JSON:
            message = HiveMessage.deserialize(frame["body"])
        else:
            # The hub's last frame is the same BUS speak as a (compressed) bitstring.
            message = decode_frame(bytes.fromhex(frame["body"]))
            sender.binarize = True
        assert sender.encode(message) == [bytes.fromhex(frame["ciphertext"])]
        got = receiver.decode(bytes.fromhex(frame["ciphertext"]))
        assert got == message
        assert got.msg_type in (HiveMessageType.HELLO, HiveMessageType.BUS)
    assert c2s._send.n == 2 and s2c._send.n == 2  # implicit counters, per direction


def test_synthetic_bitstring_frame_sealed_as_given():
    frame = SYNTH["xx"]["transport"][3]
    hub = V3Transport(keyed(SYNTH["xx"]["k_s2c"], n=1), keyed(SYNTH["xx"]["k_c2s"]))
    sealed = hub.seal_body(bytes.fromhex(frame["body"]), bitstring=True)
    assert sealed == [bytes.fromhex(frame["ciphertext"])]


# -- live captures ------------------------------------------------------------------


def live_frames(run, names):
    return [(name, run["frames"][name]["dir"], frame_bytes(run, name)) for name in names]


def test_live_xx_frames_decrypt_and_reencrypt_byte_for_byte():
    client = V3Transport(keyed(LIVE_XX["k_c2s"]), keyed(LIVE_XX["k_s2c"]))
    hub = V3Transport(keyed(LIVE_XX["k_s2c"]), keyed(LIVE_XX["k_c2s"]))
    plaintexts = iter(LIVE_XX["plaintexts"])
    for _name, direction, raw in live_frames(LIVE_XX, ["F6", "F7", "F8"]):
        expected = next(plaintexts)
        assert (expected["dir"], expected["len"]) == (direction, len(raw))
        sender, receiver = (client, hub) if direction == "c2s" else (hub, client)
        assert receiver.open_frame(raw) == (False, expected["body"].encode())
        message = HiveMessage.deserialize(expected["body"])
        assert sender.encode(message) == [raw]
    assert (client._send.n, client._recv.n) == (2, 1)


def test_live_xx_frames_decode_to_the_session_messages():
    hub = V3Transport(keyed(LIVE_XX["k_s2c"]), keyed(LIVE_XX["k_c2s"]))
    hello = hub.decode(frame_bytes(LIVE_XX, "F6"))
    assert hello.msg_type is HiveMessageType.HELLO
    assert hello.payload["session"]["session_id"] == "v3-vector-session"
    utterance = hub.decode(frame_bytes(LIVE_XX, "F7"))
    assert utterance.payload.msg_type == "recognizer_loop:utterance"
    assert utterance.payload.data["utterances"] == ["hello world"]


def test_live_kk_frames_decrypt_and_reencrypt_byte_for_byte():
    client = V3Transport(keyed(LIVE_KK["k_c2s"]), keyed(LIVE_KK["k_s2c"]))
    hub = V3Transport(keyed(LIVE_KK["k_s2c"]), keyed(LIVE_KK["k_c2s"]))
    types = []
    for _name, direction, raw in live_frames(LIVE_KK, ["F5", "F6", "F7"]):
        sender, receiver = (client, hub) if direction == "c2s" else (hub, client)
        bitstring, body = receiver.open_frame(raw)
        assert not bitstring and len(body) == len(raw) - 17
        message = HiveMessage.deserialize(body.decode())
        assert message.serialize().encode() == body
        assert sender.encode(message) == [raw]
        types.append(message.msg_type)
    assert types == [HiveMessageType.HELLO, HiveMessageType.BUS, HiveMessageType.BUS]


def test_live_kk_hello_is_the_run_one_hello():
    hub = V3Transport(keyed(LIVE_KK["k_s2c"]), keyed(LIVE_KK["k_c2s"]))
    assert (
        hub.open_frame(frame_bytes(LIVE_KK, "F5"))[1] == LIVE_XX["plaintexts"][0]["body"].encode()
    )


def test_live_frame_under_the_other_run_key_refused():
    hub = V3Transport(keyed(LIVE_KK["k_s2c"]), keyed(LIVE_KK["k_c2s"]))
    with pytest.raises(DecryptionKeyError):
        hub.decode(frame_bytes(LIVE_XX, "F6"))


# -- chunking -----------------------------------------------------------------------


def big_bus(size: int) -> HiveMessage:
    return HiveMessage(
        HiveMessageType.BUS, {"type": "speak", "data": {"utterance": "x" * size}, "context": {}}
    )


def test_150kb_message_chunked_and_reassembled():
    sender, receiver, raw = link()
    message = big_bus(150_000)
    frames = sender.encode(message)
    body = message.serialize().encode()
    assert len(frames) == 3 and len(body) > 2 * CHUNK_SIZE
    assert markers(frames, raw) == [MARKER_FIRST_JSON, MARKER_MIDDLE, MARKER_LAST]
    assert all(len(f) <= 65535 for f in frames)
    assert len(frames[0]) == CHUNK_SIZE + 1 + 16
    assert receiver.decode(frames[0]) is None
    assert receiver.decode(frames[1]) is None
    assert receiver.decode(frames[2]) == message
    # The link goes on after a reassembly.
    small = big_bus(10)
    assert receiver.decode(sender.encode(small)[0]) == small


def test_chunked_bitstring():
    sender, receiver, raw = link(binarize=True)
    blob = os.urandom(150_000)
    message = HiveMessage(HiveMessageType.BINARY, blob, bin_type=3)
    frames = sender.encode(message)
    assert markers(frames, raw) == [MARKER_FIRST_BITS, MARKER_MIDDLE, MARKER_LAST]
    assert [receiver.decode(f) for f in frames[:2]] == [None, None]
    got = receiver.decode(frames[2])
    assert got.msg_type is HiveMessageType.BINARY and got.payload == blob and got.bin_type == 3


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (CHUNK_SIZE, [MARKER_JSON]),
        (CHUNK_SIZE + 1, [MARKER_FIRST_JSON, MARKER_LAST]),
        (2 * CHUNK_SIZE, [MARKER_FIRST_JSON, MARKER_LAST]),
        (2 * CHUNK_SIZE + 1, [MARKER_FIRST_JSON, MARKER_MIDDLE, MARKER_LAST]),
    ],
)
def test_chunk_boundaries(size, expected):
    sender, receiver, raw = link()
    body = b"y" * size
    frames = sender.seal_body(body, bitstring=False)
    assert markers(frames, raw) == expected
    opened = [receiver.open_frame(f) for f in frames]
    assert opened[-1] == (False, body) and all(o is None for o in opened[:-1])


def test_reassembly_over_the_limit_refused():
    sender, receiver, _ = link(max_size=100_000)
    frames = sender.encode(big_bus(150_000))
    assert receiver.decode(frames[0]) is None
    with pytest.raises(PayloadTooBig):
        receiver.decode(frames[1])
    with pytest.raises(InvalidState):  # fatal: nothing more is read
        receiver.decode(frames[2])


def test_single_frame_over_the_limit_refused():
    sender, receiver, _ = link(max_size=1000)
    with pytest.raises(PayloadTooBig):
        receiver.decode(sender.encode(big_bus(2000))[0])


# -- fatal frames ---------------------------------------------------------------------


def test_tampered_frame_refused_and_fatal():
    sender, receiver, _ = link()
    frames = [sender.encode(big_bus(5))[0], sender.encode(big_bus(6))[0]]
    bad = bytearray(frames[0])
    bad[3] ^= 0x01
    with pytest.raises(DecryptionKeyError) as exc:
        receiver.decode(bytes(bad))
    assert exc.value.close_code == CloseCode.POLICY
    assert receiver.failed
    with pytest.raises(InvalidState):
        receiver.decode(frames[0])


def test_replayed_frame_refused():
    sender, receiver, _ = link()
    frame = sender.encode(big_bus(5))[0]
    assert receiver.decode(frame) == big_bus(5)
    with pytest.raises(DecryptionKeyError):
        receiver.decode(frame)


def test_reordered_frames_refused():
    sender, receiver, _ = link()
    first, second = sender.encode(big_bus(1))[0], sender.encode(big_bus(2))[0]
    with pytest.raises(DecryptionKeyError):
        receiver.decode(second)
    # In order, on a fresh receiver with the same keys, both pass.
    fresh = V3Transport(CipherState("ChaChaPoly", os.urandom(32)), receiver._recv)
    fresh._recv.n = 0
    assert fresh.decode(first) == big_bus(1)
    assert fresh.decode(second) == big_bus(2)


def test_reordered_captured_frames_refused():
    hub = V3Transport(keyed(LIVE_XX["k_s2c"]), keyed(LIVE_XX["k_c2s"]))
    with pytest.raises(DecryptionKeyError):
        hub.decode(frame_bytes(LIVE_XX, "F7"))  # n=1 read as n=0


@pytest.mark.parametrize(
    ("plaintexts", "error"),
    [
        ([b"\x06{}"], ProtocolError),  # unknown marker
        ([b"\xff"], ProtocolError),
        ([b""], ProtocolError),  # no marker
        ([b"\x04abc"], ProtocolError),  # stray middle
        ([b"\x05abc"], ProtocolError),  # stray last
        ([b"\x02abc", b"\x00{}"], ProtocolError),  # single frame inside a reassembly
        ([b"\x02abc", b"\x03abc"], ProtocolError),  # a new first chunk inside one
        ([b"\x00not json"], DecodingError),
        ([b"\x00\xff\xfe"], DecodingError),
        ([b"\x01\x00\x00"], DecodingError),  # not a bitstring
    ],
)
def test_bad_plaintexts_are_fatal(plaintexts, error):
    _, receiver, raw = link()
    frames = [raw.encrypt(p) for p in plaintexts]
    for frame in frames[:-1]:
        assert receiver.decode(frame) is None
    with pytest.raises(error):
        receiver.decode(frames[-1])
    assert receiver.failed
    with pytest.raises(InvalidState):
        receiver.decode(raw.encrypt(b"\x00{}"))


def test_text_frame_on_a_session_refused():
    _, receiver, _ = link()
    with pytest.raises(ProtocolError):
        receiver.decode('{"msg_type": "bus"}')
    assert receiver.failed


def test_short_frame_refused():
    _, receiver, _ = link()
    with pytest.raises(ProtocolError):
        receiver.decode(b"\x00" * 10)


def test_fatal_close_is_1008_invalid_message():
    assert FATAL_CLOSE == (1008, "invalid message")


# -- what goes as a bitstring -----------------------------------------------------------


@pytest.mark.parametrize("binarize", [False, True])
def test_marker_choice(binarize):
    sender, receiver, raw = link(binarize=binarize)
    cases = [
        (HiveMessage(HiveMessageType.HELLO, {"pubkey": None}), MARKER_JSON),
        (HiveMessage(HiveMessageType.HANDSHAKE, {"noise": {}}), MARKER_JSON),
        (HiveMessage(HiveMessageType.INTERCOM, {"ciphertext": "00"}), MARKER_JSON),
        (HiveMessage(HiveMessageType.BINARY, b"\x00\x01", bin_type=1), MARKER_BITS),
        (big_bus(3), MARKER_BITS if binarize else MARKER_JSON),
    ]
    for message, marker in cases:
        frames = sender.encode(message)
        assert markers(frames, raw) == [marker]
        got = receiver.decode(frames[0])
        assert got.msg_type is message.msg_type


def test_aesgcm_link():
    sender, receiver, _ = link(cipher="AESGCM")
    message = big_bus(70_000)
    frames = sender.encode(message)
    assert [receiver.decode(f) for f in frames] == [None, message]


def test_transport_needs_keys():
    with pytest.raises(InvalidState):
        V3Transport(CipherState("ChaChaPoly"), CipherState("ChaChaPoly", bytes(32)))


def test_for_result_after_a_handshake():
    from hivemind_bus_client.protocol.v3handshake import (
        V3ClientHandshake,
        V3HubHandshake,
        hub_offer,
    )

    from .v3data import CLIENT_STATIC, HUB_STATIC, SYNTH_PSK

    offer = hub_offer(pinned=False, binarize=True)
    hello = SYNTH["hello"]
    client = V3ClientHandshake(
        hello,
        offer,
        pattern="XXpsk2",
        suite="25519_ChaChaPoly_SHA256",
        psk=SYNTH_PSK,
        static_private=CLIENT_STATIC,
    )
    hub = V3HubHandshake(hello, offer, psk=SYNTH_PSK, static_private=HUB_STATIC)
    hub.receive(client.receive(hub.receive(client.start())))
    c, h = V3Transport.for_result(client.result), V3Transport.for_result(hub.result, max_size=1000)
    assert c.binarize and h.binarize and h.max_size == 1000
    message = HiveMessage(HiveMessageType.HELLO, {"pubkey": None})
    assert h.decode(c.encode(message)[0]) == message
