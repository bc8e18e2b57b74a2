"""protocol/encryption.py: link ciphers, sealed frames, tamper detection."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hivemind_bus_client.exceptions import (
    DecodingError,
    DecryptionKeyError,
    InvalidCipher,
    InvalidKeySize,
)
from hivemind_bus_client.protocol import encodings
from hivemind_bus_client.protocol.encodings import SupportedEncodings
from hivemind_bus_client.protocol.encryption import LinkCipher, SupportedCiphers, get_cipher

from .strategies import FAST, KEYS


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


def test_each_cipher_takes_its_key_sizes_and_names() -> None:
    assert get_cipher("AES-GCM") is SupportedCiphers.AES_GCM
    with pytest.raises(InvalidCipher):
        get_cipher("ROT13")
    with pytest.raises(InvalidKeySize):
        LinkCipher(b"short", "AES-GCM")
    # the legacy 16-character pre-shared key is a valid AES-128 key
    lc = LinkCipher("0123456789abcdef", "AES-GCM", "JSON-HEX")
    assert lc.open_text(lc.seal_text(b"x")) == b"x"


def test_frames_under_another_key_do_not_open() -> None:
    a = LinkCipher(bytes(32), "AES-GCM")
    b = LinkCipher(bytes(range(32)), "AES-GCM")
    with pytest.raises(DecryptionKeyError):
        b.open_bytes(a.seal_bytes(b"secret"))
    with pytest.raises(DecryptionKeyError):
        b.open_text(a.seal_text(b"secret"))


@pytest.mark.parametrize(
    "frame",
    ["nope", '{"ciphertext": "x"}', '["not", "an", "envelope"]'],
)
def test_malformed_text_frames_raise_decoding_error(frame: str) -> None:
    with pytest.raises(DecodingError):
        LinkCipher(bytes(32), "AES-GCM").open_text(frame)


def test_a_short_binary_frame_raises_decoding_error() -> None:
    with pytest.raises(DecodingError):
        LinkCipher(bytes(32), "AES-GCM").open_bytes(b"abc")


def test_text_envelope_fields_are_in_the_link_encoding() -> None:
    lc = LinkCipher(bytes(32), "CHACHA20-POLY1305", "JSON-HEX")
    env = json.loads(lc.seal_text(b"hello"))
    assert set(env) == {"ciphertext", "tag", "nonce"}
    assert len(bytes.fromhex(env["nonce"])) == 12 and len(bytes.fromhex(env["tag"])) == 16
