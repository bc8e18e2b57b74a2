"""Property tests of the exception contract, for every decoder of the protocol.

Contract: whatever the input, every decoder either returns a value or raises
one of the exceptions its docstring lists under ``Raises:`` (or a subclass of
one); any other exception, even another HiveMindError, is a bug. Round trips
and tamper tests live with their modules (test_message, test_serialization,
test_encodings, test_encryption).
"""

from __future__ import annotations

import inspect
import json
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from hivemind_bus_client import exceptions
from hivemind_bus_client.exceptions import HiveMindError
from hivemind_bus_client.protocol import encodings
from hivemind_bus_client.protocol.connection import Connection, Role
from hivemind_bus_client.protocol.encodings import SupportedEncodings
from hivemind_bus_client.protocol.encryption import LinkCipher, SupportedCiphers
from hivemind_bus_client.protocol.message import HiveMessage, HiveMessageType
from hivemind_bus_client.protocol.serialization import decode_frame

from .strategies import FAST, KEYS, json_value


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
