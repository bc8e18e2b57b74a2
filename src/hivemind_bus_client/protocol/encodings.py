"""Text encodings for the fields of encrypted JSON frames.

Each encrypted text frame carries ``ciphertext``, ``tag`` and ``nonce`` as text
in the encoding the handshake negotiated. The wire names and algorithms are
those of the reference client (``docs/protocol.md``, encodings): standard Base64,
URL-safe Base64, Base32 and lowercase hex from the standard library, plus three
that no well-kept library provides with the reference's exact byte layout and
that are therefore written here:

* ``JSON-B91``: basE91 (Joachim Henke's alphabet and bit order);
* ``JSON-Z85P``: ZeroMQ Z85 of the input zero-padded to 4 bytes, behind one raw
  byte holding the pad count;
* ``JSON-Z85B``: Z85 digits of little-endian words, least significant digit
  first, with the padding characters trimmed.

Every decoder raises :class:`~hivemind_bus_client.exceptions.DecodingError`
(or its subclass ``Z85DecodeError``) for any input it cannot read.

Optional C accelerator: when the extension
``hivemind_bus_client.protocol._speedups`` is built (``pip install`` compiles
it if a C compiler is available), the basE91, Z85B, Z85P and Base32 functions
of this module and of
:func:`encoder` / :func:`decoder` / :func:`encode` / :func:`decode` are its C
versions, which return exactly what the pure-Python ones return.
:data:`ACCELERATED` tells which is in use; the pure functions stay available
in :data:`PURE_CODECS`. Set the environment variable ``HIVEMIND_PURE_PYTHON=1``
(before this module is imported) to force the pure-Python implementation.
"""

from __future__ import annotations

import base64
import binascii
import importlib
import os
import struct
from collections.abc import Callable
from enum import Enum
from types import ModuleType
from typing import TypeVar, cast

from hivemind_bus_client.exceptions import DecodingError, InvalidEncoding, Z85DecodeError
from hivemind_bus_client.protocol.limits import short_repr

__all__ = [
    "ACCELERATED",
    "PURE_CODECS",
    "SupportedEncodings",
    "b91_decode",
    "b91_encode",
    "decode",
    "encode",
    "get_encoding",
    "z85b_decode",
    "z85b_encode",
    "z85p_decode",
    "z85p_encode",
]


class SupportedEncodings(str, Enum):
    """Wire names of the text encodings, in the order the reference client offers them."""

    JSON_B91 = "JSON-B91"
    JSON_Z85B = "JSON-Z85B"
    JSON_Z85P = "JSON-Z85P"
    JSON_B64 = "JSON-B64"
    JSON_URLSAFE_B64 = "JSON-URLSAFE-B64"
    JSON_B32 = "JSON-B32"
    JSON_HEX = "JSON-HEX"

    def __str__(self) -> str:
        return self.value


_ENC_BY_NAME = {e.value: e for e in SupportedEncodings}


def get_encoding(name: str | SupportedEncodings) -> SupportedEncodings:
    """Resolve a wire name; raises :class:`InvalidEncoding` for unknown names."""
    if isinstance(name, SupportedEncodings):
        return name
    try:
        return _ENC_BY_NAME[name]
    except (KeyError, TypeError):
        raise InvalidEncoding(f"unknown encoding: {short_repr(name)}") from None


# --------------------------------------------------------------------------
# basE91

_B91 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&()*+,./:;<=>?@[]^_`{|}~"'
# Every 13/14-bit group becomes two characters; precomputing the pairs keeps
# the encoder's loop to one table lookup per group.
# 13-bit groups use 0..8191, 14-bit groups 0..88 and 8192..8280: all below 8281 = 91 * 91.
_B91_PAIRS = [_B91[v % 91] + _B91[v // 91] for v in range(91 * 91)]
_B91_DEC = {c: i for i, c in enumerate(_B91)}
_B91_PAIR_DEC = {a + b: _B91_DEC[a] + 91 * _B91_DEC[b] for a in _B91 for b in _B91}


def b91_encode(data: bytes) -> str:
    """basE91-encode bytes."""
    pairs = _B91_PAIRS
    out: list[str] = []
    append = out.append
    acc = 0
    n = 0
    for byte in data:
        acc |= byte << n
        n += 8
        if n > 13:
            v = acc & 8191
            if v > 88:
                acc >>= 13
                n -= 13
            else:
                v = acc & 16383
                acc >>= 14
                n -= 14
            append(pairs[v])
    if n:
        append(_B91[acc % 91])
        if n > 7 or acc > 90:
            append(_B91[acc // 91])
    return "".join(out)


def b91_decode(text: str | bytes) -> bytes:
    """Decode basE91 text; raises :class:`DecodingError` on characters outside the alphabet."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise DecodingError("basE91 text must be ASCII") from None
    pair_dec = _B91_PAIR_DEC
    out = bytearray()
    acc = 0
    n = 0
    length = len(text)
    even = length - (length & 1)
    try:
        for i in range(0, even, 2):
            v = pair_dec[text[i : i + 2]]
            acc |= v << n
            n += 13 if (v & 8191) > 88 else 14
            while n > 7:
                out.append(acc & 255)
                acc >>= 8
                n -= 8
        if length & 1:
            out.append((acc | _B91_DEC[text[-1]] << n) & 255)
    except KeyError:
        raise DecodingError("invalid character in basE91 text") from None
    return bytes(out)


# --------------------------------------------------------------------------
# Z85 (ZeroMQ alphabet), two layouts

_Z85 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
_B85_STD = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#$%&()*+-;<=>?@^_`{|}~"
# Z85P is plain big-endian base85 with another alphabet: the standard library's
# b85 codec does the arithmetic and a translation table swaps the alphabets.
_TO_Z85 = bytes.maketrans(_B85_STD.encode(), _Z85.encode())
_FROM_Z85 = bytes.maketrans(_Z85.encode(), _B85_STD.encode())
_Z85_SET = frozenset(_Z85.encode())
_Z85_DEC = {c: i for i, c in enumerate(_Z85)}
_Z85_PAIRS = [_Z85[v % 85] + _Z85[v // 85] for v in range(85 * 85)]


def z85p_encode(data: bytes) -> str:
    """Z85P: pad-count byte, then big-endian Z85 of the zero-padded input."""
    pad = -len(data) % 4
    body = base64.b85encode(data + b"\0" * pad).translate(_TO_Z85)
    return chr(pad) + body.decode("ascii")


def z85p_decode(text: str | bytes) -> bytes:
    """Decode Z85P; raises :class:`Z85DecodeError` on a bad pad byte, length or character."""
    raw = text.encode("latin-1", "replace") if isinstance(text, str) else bytes(text)
    if not raw:
        raise Z85DecodeError("empty Z85P text")
    pad = raw[0]
    body = raw[1:]
    if pad > 3 or len(body) % 5 or (pad and not body):
        raise Z85DecodeError("malformed Z85P text")
    if not _Z85_SET.issuperset(body):
        raise Z85DecodeError("invalid character in Z85P text")
    try:
        out = base64.b85decode(body.translate(_FROM_Z85))
    except ValueError as exc:
        raise Z85DecodeError(f"Z85P group out of range: {exc}") from None
    return out[: len(out) - pad] if pad else out


def z85b_encode(data: bytes) -> str:
    """Z85B: little-endian words, least significant digit first, padding trimmed."""
    pad = -len(data) % 4
    words = struct.unpack(f"<{(len(data) + pad) // 4}I", data + b"\0" * pad)
    pairs = _Z85_PAIRS
    z = _Z85
    out = [pairs[w % 7225] + pairs[(w // 7225) % 7225] + z[w // 52200625] for w in words]
    text = "".join(out)
    return text[: len(text) - pad] if pad else text


def z85b_decode(text: str | bytes) -> bytes:
    """Decode Z85B; raises :class:`Z85DecodeError` on a bad length, character or group."""
    if isinstance(text, (bytes, bytearray)):
        text = text.decode("latin-1")
    text = "".join(text.split())
    rem = len(text) % 5
    if rem == 1:
        raise Z85DecodeError("Z85B text length cannot be 1 mod 5")
    pad = (0, 4, 3, 2, 1)[rem]
    if pad:
        text += "0" * pad
    dec = _Z85_DEC
    words = []
    try:
        for i in range(0, len(text), 5):
            w = (
                dec[text[i]]
                + 85 * dec[text[i + 1]]
                + 7225 * dec[text[i + 2]]
                + 614125 * dec[text[i + 3]]
                + 52200625 * dec[text[i + 4]]
            )
            words.append(w)
        out = struct.pack(f"<{len(words)}I", *words)
    except KeyError:
        raise Z85DecodeError("invalid character in Z85B text") from None
    except struct.error:
        raise Z85DecodeError("Z85B group out of range") from None
    return out[: len(out) - pad] if pad else out


# --------------------------------------------------------------------------
# standard library encodings


def _b64_decode(text: str | bytes) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DecodingError(f"invalid base64: {exc}") from None


def _urlsafe_decode(text: str | bytes) -> bytes:
    try:
        if isinstance(text, str):
            text = text.encode("ascii")
        # The reference pads before decoding, so unpadded input is valid.
        text = bytes(text).rstrip(b"=")
        text += b"=" * (-len(text) % 4)
        return base64.b64decode(text.translate(_URLSAFE_TO_STD), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DecodingError(f"invalid url-safe base64: {exc}") from None


_URLSAFE_TO_STD = bytes.maketrans(b"-_", b"+/")


def _b32_decode(text: str | bytes) -> bytes:
    try:
        return base64.b32decode(text)
    except (binascii.Error, ValueError) as exc:
        raise DecodingError(f"invalid base32: {exc}") from None


def _hex_decode(text: str | bytes) -> bytes:
    try:
        if isinstance(text, (bytes, bytearray)):
            text = text.decode("ascii")
        return bytes.fromhex(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodingError(f"invalid hex: {exc}") from None


_CODECS: dict[SupportedEncodings, tuple[Callable[[bytes], str], Callable[..., bytes]]] = {
    SupportedEncodings.JSON_B91: (b91_encode, b91_decode),
    SupportedEncodings.JSON_Z85B: (z85b_encode, z85b_decode),
    SupportedEncodings.JSON_Z85P: (z85p_encode, z85p_decode),
    SupportedEncodings.JSON_B64: (lambda b: base64.b64encode(b).decode("ascii"), _b64_decode),
    SupportedEncodings.JSON_URLSAFE_B64: (
        lambda b: base64.urlsafe_b64encode(b).decode("ascii"),
        _urlsafe_decode,
    ),
    SupportedEncodings.JSON_B32: (lambda b: base64.b32encode(b).decode("ascii"), _b32_decode),
    SupportedEncodings.JSON_HEX: (bytes.hex, _hex_decode),
}


def encoder(encoding: str | SupportedEncodings) -> Callable[[bytes], str]:
    """The bytes -> text function of an encoding."""
    return _CODECS[get_encoding(encoding)][0]


def decoder(encoding: str | SupportedEncodings) -> Callable[[str | bytes], bytes]:
    """The text -> bytes function of an encoding."""
    return _CODECS[get_encoding(encoding)][1]


def encode(data: bytes, encoding: str | SupportedEncodings) -> str:
    """Encode bytes as text in the named encoding."""
    return _CODECS[get_encoding(encoding)][0](data)


def decode(text: str | bytes, encoding: str | SupportedEncodings) -> bytes:
    """Decode text in the named encoding.

    Raises:
        DecodingError: input that is not valid in that encoding (``Z85DecodeError``
            for the Z85 ones), or not text at all.
        InvalidEncoding: an unknown encoding name.
    """
    if not isinstance(text, (str, bytes, bytearray)):
        raise DecodingError(f"cannot decode a {type(text).__name__}")
    return _CODECS[get_encoding(encoding)][1](text)


# --------------------------------------------------------------------------
# optional C accelerator (hivemind_bus_client.protocol._speedups), for the
# encodings the standard library lacks or writes in Python (benchmarks/speedups.py).
# The pure functions above stay the specification, under private names and in
# PURE_CODECS; with the extension the public names and _CODECS switch to C. The C
# encoders cannot fail on bytes-like input; the C decoders raise ValueError, which
# a thin wrapper turns into DecodingError / Z85DecodeError.

_py_b91_encode = b91_encode
_py_b91_decode = b91_decode
_py_z85b_encode = z85b_encode
_py_z85b_decode = z85b_decode
_py_z85p_encode = z85p_encode
_py_z85p_decode = z85p_decode
_py_b32_encode = _CODECS[SupportedEncodings.JSON_B32][0]
_py_b32_decode = _b32_decode

#: The pure-Python (encode, decode) pair of every encoding, whatever is in use.
PURE_CODECS: dict[SupportedEncodings, tuple[Callable[[bytes], str], Callable[..., bytes]]] = dict(
    _CODECS
)


def _load_speedups() -> ModuleType | None:
    """The extension module, or None if it is not built or HIVEMIND_PURE_PYTHON is set."""
    if os.environ.get("HIVEMIND_PURE_PYTHON", "").strip().lower() not in ("", "0", "false", "no"):
        return None
    try:
        # Imported by name: the extension is an optional, private part of this module.
        return importlib.import_module("hivemind_bus_client.protocol._speedups")
    except ImportError:
        return None


_speedups = _load_speedups()

#: True when the C accelerator is in use.
ACCELERATED: bool = _speedups is not None


_Decoder = TypeVar("_Decoder", bound=Callable[..., bytes])


def _c_decoder(
    c_decode: Callable[[str | bytes], bytes],
    pure: _Decoder,
    error: type[DecodingError],
    prefix: str = "",
) -> _Decoder:
    """``c_decode`` raising ``error`` where it raises ValueError, named and documented as ``pure``."""

    def decode(text: str | bytes) -> bytes:
        try:
            return c_decode(text)
        except ValueError as exc:
            raise error(prefix + str(exc)) from None

    decode.__name__, decode.__qualname__, decode.__doc__ = (
        pure.__name__,
        pure.__qualname__,
        pure.__doc__,
    )
    return cast(_Decoder, decode)


if _speedups is not None:
    b91_encode = _speedups.b91_encode
    z85b_encode = _speedups.z85b_encode
    z85p_encode = _speedups.z85p_encode
    b91_decode = _c_decoder(_speedups.b91_decode, b91_decode, DecodingError)
    z85b_decode = _c_decoder(_speedups.z85b_decode, z85b_decode, Z85DecodeError)
    z85p_decode = _c_decoder(_speedups.z85p_decode, z85p_decode, Z85DecodeError)
    _b32_decode = _c_decoder(_speedups.b32_decode, _b32_decode, DecodingError, "invalid base32: ")

    _CODECS[SupportedEncodings.JSON_B91] = (b91_encode, b91_decode)
    _CODECS[SupportedEncodings.JSON_Z85B] = (z85b_encode, z85b_decode)
    _CODECS[SupportedEncodings.JSON_Z85P] = (z85p_encode, z85p_decode)
    _CODECS[SupportedEncodings.JSON_B32] = (_speedups.b32_encode, _b32_decode)
