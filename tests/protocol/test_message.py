"""protocol/message.py: the message model, its JSON form and its documented errors."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from ovos_bus_client.message import Message

from hivemind_bus_client.exceptions import DecodingError, InvalidMessage
from hivemind_bus_client.protocol.message import HiveMessage, HiveMessageType

from .strategies import FAST, messages, same

T = HiveMessageType


@FAST
@given(messages(binary_ok=False))
def test_json_round_trip(msg):
    back = HiveMessage.deserialize(msg.serialize())
    assert same(msg, back, binary=False)


def test_an_ovos_payload_round_trips_through_json_with_every_envelope_key() -> None:
    msg = HiveMessage(
        T.BUS,
        Message("speak", {"utterance": "olá"}, {"source": "a"}),
        metadata={"k": 1},
        route=[{"source": "n1", "targets": ["n2"]}],
        node="n1",
        target_site_id="kitchen",
        source_peer="p",
    )
    back = HiveMessage.deserialize(msg.serialize())
    assert back == msg and back.as_dict == msg.as_dict
    assert back.payload.msg_type == "speak" and back.payload.data == {"utterance": "olá"}
    assert (back.route, back.node, back.target_site_id) == (msg.route, "n1", "kitchen")


def test_a_transport_payload_is_a_nested_message() -> None:
    inner = HiveMessage(T.BUS, Message("x", {}, {}))
    back = HiveMessage.deserialize(HiveMessage(T.PROPAGATE, inner).serialize())
    assert isinstance(back.payload, HiveMessage) and back.payload == inner


def test_a_bare_ovos_dict_is_read_as_bus() -> None:
    msg = HiveMessage.deserialize('{"type": "speak", "data": {"a": 1}}')
    assert msg.msg_type is T.BUS and msg.payload.data == {"a": 1}


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("not json", DecodingError),
        ("[1, 2]", InvalidMessage),
        ('{"msg_type": "nope", "payload": {}}', InvalidMessage),
    ],
)
def test_malformed_text_raises_the_documented_errors(text: str, error: type) -> None:
    with pytest.raises(error):
        HiveMessage.deserialize(text)


def test_constructor_validates_type_and_binary_payload() -> None:
    with pytest.raises(InvalidMessage):
        HiveMessage("nope", {})
    with pytest.raises(InvalidMessage):
        HiveMessage(T.BINARY, "text, not bytes")
    with pytest.raises(InvalidMessage):
        HiveMessage(T.BINARY, b"\x00").as_dict  # noqa: B018  (BINARY has no JSON form)


def test_raw_payload_is_the_stored_form_and_builds_no_view() -> None:
    msg = HiveMessage.deserialize('{"msg_type": "bus", "payload": {"type": "x", "data": {}}}')
    assert isinstance(msg.raw_payload, dict) and msg.raw_payload["type"] == "x"
    view = msg.payload
    assert msg.raw_payload is view and view.msg_type == "x"
    assert json.loads(msg.serialize())["payload"]["type"] == "x"
