"""protocol/serialization.py: binary v1 frames, round trips and documented errors."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ovos_bus_client.message import Message

from hivemind_bus_client.exceptions import (
    DecodingError,
    HiveMindError,
    InvalidMessage,
    PayloadTooBig,
)
from hivemind_bus_client.protocol.connection import Connection, MessageReceived, Role
from hivemind_bus_client.protocol.message import HiveMessage, HiveMessageType
from hivemind_bus_client.protocol.serialization import decode_frame, encode_frame

from .strategies import FAST, json_obj, messages, same

T = HiveMessageType


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


def test_a_bus_message_round_trips_in_every_frame_form() -> None:
    msg = HiveMessage(T.BUS, Message("speak", {"u": "olá"}, {}), metadata={"m": 1})
    for compressed in (True, False, None):
        for versioned in (True, False):
            back = decode_frame(encode_frame(msg, compressed=compressed, versioned=versioned))
            assert same(msg, back, binary=True)


@pytest.mark.parametrize(
    ("frame", "error"),
    [(b"", "DecodingError"), (b"\x00\x00", "DecodingError")],
)
def test_malformed_frames_raise_decoding_error(frame: bytes, error: str) -> None:
    with pytest.raises(HiveMindError) as caught:
        decode_frame(frame)
    assert type(caught.value).__name__ == error


def test_a_truncated_frame_and_too_much_metadata_are_refused() -> None:
    msg = HiveMessage(T.BUS, Message("x", {}, {}))
    frame = encode_frame(msg, compressed=True)
    with pytest.raises(DecodingError):
        decode_frame(frame[:-3])
    with pytest.raises(InvalidMessage, match="255"):
        encode_frame(HiveMessage(T.BUS, Message("x", {}, {}), metadata={"k": "v" * 300}), False)


def test_a_zlib_bomb_is_cut_at_max_size() -> None:
    big = HiveMessage(T.BUS, Message("x", {"pad": "a" * 100_000}, {}))
    frame = encode_frame(big, compressed=True)
    assert len(frame) < 2_000
    with pytest.raises(PayloadTooBig):
        decode_frame(frame, max_size=10_000)
