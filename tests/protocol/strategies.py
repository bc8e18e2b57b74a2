"""Hypothesis strategies and helpers shared by the protocol's property tests."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from ovos_bus_client.message import Message

from hivemind_bus_client.protocol.encryption import SupportedCiphers
from hivemind_bus_client.protocol.message import (
    HiveMessage,
    HiveMessageType,
    HiveMindBinaryPayloadType,
)

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


KEYS = {
    SupportedCiphers.AES_GCM: bytes(range(32)),
    SupportedCiphers.CHACHA20_POLY1305: bytes(range(32)),
}
