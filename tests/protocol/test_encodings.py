"""protocol/encodings.py: the seven text encodings, round trips and documented errors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hivemind_bus_client.exceptions import DecodingError, InvalidEncoding, Z85DecodeError
from hivemind_bus_client.protocol import encodings
from hivemind_bus_client.protocol.encodings import SupportedEncodings

from .strategies import FAST


@FAST
@given(st.binary(max_size=400), st.sampled_from(list(SupportedEncodings)))
def test_encoding_round_trip(data, enc):
    assert encodings.decode(encodings.encode(data, enc), enc) == data


#: A few bytes and their text in each encoding, as the reference writes them.
KNOWN = {
    "JSON-B64": (b"hive", "aGl2ZQ=="),
    "JSON-URLSAFE-B64": (b"\xfb\xff", "-_8="),
    "JSON-B32": (b"hive", "NBUXMZI="),
    "JSON-HEX": (b"hive", "68697665"),
}


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_stdlib_encodings_write_the_standard_text(name: str) -> None:
    data, text = KNOWN[name]
    assert encodings.encode(data, name) == text and encodings.decode(text, name) == data


@pytest.mark.parametrize("enc", list(SupportedEncodings))
def test_empty_input_round_trips(enc: SupportedEncodings) -> None:
    assert encodings.decode(encodings.encode(b"", enc), enc) == b""


@pytest.mark.parametrize(
    ("text", "name", "error"),
    [
        ("!!!", "JSON-B64", DecodingError),
        ("zz", "JSON-HEX", DecodingError),
        ("1", "JSON-B32", DecodingError),
        ("\u00e9", "JSON-B91", DecodingError),
        ("~~~~~", "JSON-Z85B", Z85DecodeError),
        ("\x01~~~~~", "JSON-Z85P", Z85DecodeError),
    ],
)
def test_bad_text_raises_the_documented_error(text: str, name: str, error: type) -> None:
    with pytest.raises(error):
        encodings.decode(text, name)


def test_unknown_names_and_non_text_are_refused() -> None:
    with pytest.raises(InvalidEncoding):
        encodings.get_encoding("JSON-NOPE")
    with pytest.raises(InvalidEncoding):
        encodings.decode("aa", "JSON-NOPE")
    with pytest.raises(DecodingError):
        encodings.decode(12, "JSON-B64")  # type: ignore[arg-type]
    assert encodings.get_encoding("JSON-B91") is SupportedEncodings.JSON_B91
