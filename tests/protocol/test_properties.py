"""Property tests: round trips, tamper detection, and the exception contract.

Contract: whatever the input, every decoder either returns a value or raises
one of the exceptions its docstring lists under ``Raises:`` (or a subclass of
one); any other exception, even another HiveMindError, is a bug.
"""

from __future__ import annotations

import inspect
import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ovos_bus_client.message import Message

from hivemind_bus_client import exceptions
from hivemind_bus_client.exceptions import DecryptionKeyError, HiveMindError
from hivemind_bus_client.protocol import encodings
from hivemind_bus_client.protocol.connection import Connection, MessageReceived, Role
from hivemind_bus_client.protocol.encodings import SupportedEncodings
from hivemind_bus_client.protocol.encryption import LinkCipher, SupportedCiphers
from hivemind_bus_client.protocol.message import (
    HiveMessage,
    HiveMessageType,
    HiveMindBinaryPayloadType,
)
from hivemind_bus_client.protocol.serialization import decode_frame, encode_frame

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

text = st.text(max_size=40)
json_scalar = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | text
json_value = st.recursive(
    json_scalar,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
json_obj = st.dictionaries(text, json_value, max_size=5)
small_meta = st.dictionaries(
    st.text(max_size=8), st.integers(0, 1000) | st.text(max_size=8), max_size=4
)

JSON_TYPES = [t for t in HiveMessageType if t not in (HiveMessageType.BINARY,)]
TRANSPORT = [
    HiveMessageType.BROADCAST,
    HiveMessageType.PROPAGATE,
    HiveMessageType.ESCALATE,
    HiveMessageType.QUERY,
    HiveMessageType.CASCADE,
]


@st.composite
def messages(draw, binary_ok=True):
    kinds = JSON_TYPES + ([HiveMessageType.BINARY] if binary_ok else [])
    mtype = draw(st.sampled_from(kinds))
    meta = draw(small_meta)
    if mtype is HiveMessageType.BINARY:
        return HiveMessage(
            mtype,
            draw(st.binary(max_size=300)),
            bin_type=draw(st.sampled_from(list(HiveMindBinaryPayloadType))),
            metadata=meta,
        )
    if mtype in (HiveMessageType.BUS, HiveMessageType.SHARED_BUS):
        payload = Message(draw(text), draw(json_obj), draw(json_obj))
    elif mtype in TRANSPORT:
        payload = HiveMessage(HiveMessageType.BUS, Message(draw(text), draw(json_obj), {}))
    else:
        payload = draw(json_obj)
    return HiveMessage(
        mtype,
        payload,
        metadata=meta,
        target_site_id=draw(st.none() | text),
        source_peer=draw(st.none() | text),
    )


def same(a: HiveMessage, b: HiveMessage, binary: bool) -> bool:
    if binary:
        if a.msg_type is HiveMessageType.BINARY:
            return a == b
        return (
            a.msg_type == b.msg_type
            and a.payload_dict() == b.payload_dict()
            and a.metadata == b.metadata
        )
    return a.as_dict == b.as_dict


@FAST
@given(messages(binary_ok=False))
def test_json_round_trip(msg):
    back = HiveMessage.deserialize(msg.serialize())
    assert same(msg, back, binary=False)


@FAST
@given(messages(), st.sampled_from([True, False, None]), st.booleans())
def test_binary_round_trip(msg, compressed, versioned):
    meta_len = len(json.dumps(msg.metadata or {}).encode())
    if meta_len > 255 and not compressed:
        # The frame's metadata length is one byte: too much metadata is refused.
        with pytest.raises(HiveMindError):
            encode_frame(msg, compressed=compressed, versioned=versioned)
        return
    try:
        frame = encode_frame(msg, compressed=compressed, versioned=versioned)
    except HiveMindError:
        assert meta_len > 255  # compressed but still too large
        return
    back = decode_frame(frame)
    if msg.msg_type is HiveMessageType.INTERCOM:
        # No binary type code: the frame carries it as 3rdparty, payload intact
        # (which is why a connection never sends INTERCOM in a binary frame).
        assert back.msg_type is HiveMessageType.THIRDPRTY
        assert back.payload_dict() == msg.payload_dict() and back.metadata == msg.metadata
        return
    assert same(msg, back, binary=True)


def _binarized_pair():
    hub = Connection(Role.HUB, password="pw", binarize=True)
    client = Connection(Role.CLIENT, password="pw", binarize=True)
    hub.start()
    client.start()
    for _ in range(6):
        for f in hub.frames_to_send():
            client.receive_frame(f)
        for f in client.frames_to_send():
            hub.receive_frame(f)
    assert hub.binarize and client.binarize
    hub.events()
    return client, hub


@FAST
@given(json_obj)
def test_intercom_crosses_a_binarized_link_as_a_text_frame(payload):
    client, hub = _binarized_pair()
    sealed = HiveMessage(HiveMessageType.INTERCOM, payload)
    client.send(sealed)
    client.send(HiveMessage(HiveMessageType.BUS, Message("speak", {}, {})))
    intercom_frame, bus_frame = client.frames_to_send()
    assert isinstance(intercom_frame, str) and isinstance(bus_frame, bytes)
    hub.receive_frame(intercom_frame)
    (got,) = [e for e in hub.events() if isinstance(e, MessageReceived)]
    assert got.message.msg_type is HiveMessageType.INTERCOM and not got.binary
    assert got.message.payload_dict() == payload


@FAST
@given(st.binary(max_size=400), st.sampled_from(list(SupportedEncodings)))
def test_encoding_round_trip(data, enc):
    assert encodings.decode(encodings.encode(data, enc), enc) == data


KEYS = {
    SupportedCiphers.AES_GCM: bytes(range(32)),
    SupportedCiphers.CHACHA20_POLY1305: bytes(range(32)),
}


@FAST
@given(
    st.binary(max_size=300),
    st.sampled_from(list(SupportedCiphers)),
    st.sampled_from(list(SupportedEncodings)),
)
def test_cipher_round_trip(data, cipher, enc):
    lc = LinkCipher(KEYS[cipher], cipher, enc)
    assert lc.open_text(lc.seal_text(data)) == data
    assert lc.open_bytes(lc.seal_bytes(data)) == data


@FAST
@given(
    st.binary(min_size=1, max_size=200),
    st.sampled_from(list(SupportedCiphers)),
    st.data(),
)
def test_tampering_any_byte_of_a_binary_frame_fails_authentication(data, cipher, draw):
    lc = LinkCipher(KEYS[cipher], cipher)
    frame = bytearray(lc.seal_bytes(data))
    i = draw.draw(st.integers(0, len(frame) - 1))
    frame[i] ^= draw.draw(st.integers(1, 255))
    with pytest.raises(DecryptionKeyError):
        lc.open_bytes(bytes(frame))


@FAST
@given(
    st.binary(min_size=1, max_size=100),
    st.sampled_from(list(SupportedCiphers)),
    st.sampled_from(["ciphertext", "tag", "nonce"]),
    st.data(),
)
def test_tampering_any_field_of_a_text_frame_fails_authentication(data, cipher, fieldname, draw):
    lc = LinkCipher(KEYS[cipher], cipher, SupportedEncodings.JSON_B64)
    env = json.loads(lc.seal_text(data))
    raw = bytearray(encodings.decode(env[fieldname], "JSON-B64"))
    if not raw:
        return
    i = draw.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= draw.draw(st.integers(1, 255))
    env[fieldname] = encodings.encode(bytes(raw), "JSON-B64")
    with pytest.raises(DecryptionKeyError):
        lc.open_text(json.dumps(env))


def documented(fn) -> tuple[type[BaseException], ...]:
    """The exceptions the ``Raises:`` section of ``fn``'s docstring names."""
    doc = inspect.getdoc(fn) or ""
    section = doc.split("Raises:", 1)[1] if "Raises:" in doc else ""
    names = re.findall(r"^\s{4}(\w+):", section, flags=re.M)
    assert names, f"{fn.__qualname__} documents no exceptions"
    return tuple(getattr(exceptions, n) for n in names)


def _only_ours(fn, *args):
    """Call ``fn``: a value, or one of the exceptions its docstring lists."""
    allowed = documented(fn)
    try:
        fn(*args)
    except allowed:
        pass


def test_each_decoder_documents_a_set_of_our_exceptions() -> None:
    lc = LinkCipher(KEYS[SupportedCiphers.AES_GCM], "AES-GCM")
    for fn in (
        decode_frame,
        encodings.decode,
        lc.open_bytes,
        lc.open_text,
        HiveMessage.deserialize,
        HiveMessage.from_dict,
    ):
        allowed = documented(fn)
        assert all(issubclass(e, HiveMindError) for e in allowed), fn
        assert HiveMindError not in allowed, f"{fn.__qualname__}: the root is not a contract"


@FAST
@given(st.binary(max_size=300))
def test_random_bytes_never_escape_the_hierarchy(data):
    _only_ours(decode_frame, data)
    for cipher in SupportedCiphers:
        _only_ours(LinkCipher(KEYS[cipher], cipher).open_bytes, data)
    for enc in SupportedEncodings:
        _only_ours(encodings.decode, data, enc)


@FAST
@given(st.text(max_size=200), st.sampled_from(list(SupportedEncodings)))
def test_random_text_never_escapes_the_hierarchy(data, enc):
    _only_ours(encodings.decode, data, enc)
    _only_ours(LinkCipher(KEYS[SupportedCiphers.AES_GCM], "AES-GCM", enc).open_text, data)


@FAST
@given(json_value)
def test_random_json_never_escapes_the_hierarchy(value):
    text_ = json.dumps(value)
    _only_ours(HiveMessage.deserialize, text_)
    if isinstance(value, dict):
        _only_ours(HiveMessage.from_dict, value)
        for cipher in SupportedCiphers:
            _only_ours(LinkCipher(KEYS[cipher], cipher, "JSON-HEX").open_text, value)


@st.composite
def envelope_like(draw):
    base = {
        "msg_type": draw(st.sampled_from([t.value for t in HiveMessageType] + ["nope", 3, None])),
        "payload": draw(json_value),
    }
    for key in ("metadata", "route", "node", "source_peer", "target_site_id", "target_pubkey"):
        if draw(st.booleans()):
            base[key] = draw(json_value)
    return base


@FAST
@given(envelope_like())
def test_envelope_shaped_json_never_escapes(value):
    _only_ours(HiveMessage.deserialize, json.dumps(value))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=120) | st.text(max_size=120), max_size=6))
def test_connection_survives_any_frames(frames):
    """A hub-side connection fed garbage closes with a code; it never raises."""
    hub = Connection(Role.HUB, password="pw")
    hub.start()
    for f in frames:
        hub.receive_frame(f)
    for ev in hub.events():
        code = getattr(ev, "code", None)
        assert code is None or 1000 <= code < 5000
