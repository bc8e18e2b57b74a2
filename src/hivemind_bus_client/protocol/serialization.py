"""Protocol v1 binary framing ("binarization"), byte-compatible with the reference.

A frame is a bit string, most significant bit first::

    [0..7 zero bits][1][versioned][version:8 if versioned][type:5][compressed:1]
    [metadata length N:8][metadata: N bytes][bin_type:4, BINARY only][payload...]

The zero bits in front pad the frame to whole bytes, so a BINARY frame (whose
4-bit ``bin_type`` field leaves it half a byte short) starts with a zero
nibble and its header is shifted by four bits, while its payload is byte
aligned. Metadata is the JSON of the metadata dict (``{}`` when empty);
with the compressed flag set, metadata and (non-BINARY) payload are zlib
streams. BINARY payloads are never compressed. The payload runs to the end
of the frame. Only ``msg_type``, ``payload``, ``metadata`` and ``bin_type``
survive this form.

Interop note: the reference decoder reads the compressed flag as always set,
so it can only read compressed frames. :func:`encode_frame` therefore
compresses by default; :func:`decode_frame` reads the flag correctly.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

from hivemind_bus_client.exceptions import (
    DecodingError,
    InvalidMessage,
    PayloadTooBig,
    UnsupportedProtocolVersion,
)
from hivemind_bus_client.protocol.message import (
    OVOS_TYPES,
    HiveMessage,
    HiveMessageType,
    HiveMindBinaryPayloadType,
    dumps_unicode,
    ovos_to_dict,
)

__all__ = [
    "CODE_OF_TYPE",
    "PROTOCOL_VERSION",
    "TYPE_OF_CODE",
    "decode_bitstring",
    "decode_frame",
    "encode_frame",
    "get_bitstring",
]

PROTOCOL_VERSION = 1

#: 5-bit type codes. INTERCOM has none in the reference (it degrades to
#: 3rdparty), so connections keep INTERCOM in JSON; PONG takes the free code 13.
CODE_OF_TYPE: dict[HiveMessageType, int] = {
    HiveMessageType.HANDSHAKE: 0,
    HiveMessageType.BUS: 1,
    HiveMessageType.SHARED_BUS: 2,
    HiveMessageType.BROADCAST: 3,
    HiveMessageType.PROPAGATE: 4,
    HiveMessageType.ESCALATE: 5,
    HiveMessageType.HELLO: 6,
    HiveMessageType.QUERY: 7,
    HiveMessageType.CASCADE: 8,
    HiveMessageType.PING: 9,
    HiveMessageType.RENDEZVOUS: 10,
    HiveMessageType.THIRDPRTY: 11,
    HiveMessageType.BINARY: 12,
    HiveMessageType.PONG: 13,
}
TYPE_OF_CODE: dict[int, HiveMessageType] = {v: k for k, v in CODE_OF_TYPE.items()}

#: Types that have no code of their own and must travel as JSON.
JSON_ONLY_TYPES = frozenset({HiveMessageType.INTERCOM})

_BINARY = HiveMessageType.BINARY
# Most frames carry no metadata; its JSON and zlib forms are constants.
_EMPTY_META = b"{}"
_EMPTY_META_Z = zlib.compress(_EMPTY_META)
DEFAULT_MAX_SIZE = 64 * 1024 * 1024


def _payload_bytes(msg: HiveMessage) -> bytes:
    # The reference serializes OVOS and nested-HiveMessage payloads with
    # ensure_ascii=False and plain dict payloads with ensure_ascii=True; 0.4.4
    # treats a QUERY payload as a plain dict.
    p = msg.raw_payload
    mtype = msg.msg_type
    if mtype in OVOS_TYPES:
        data = ovos_to_dict(p) if not isinstance(p, dict) else p
        return dumps_unicode(data).encode("utf-8")
    if mtype is HiveMessageType.QUERY:
        return json.dumps(p.as_dict if isinstance(p, HiveMessage) else p).encode("utf-8")
    if mtype in _NESTED:
        inner = msg.payload
        if isinstance(inner, HiveMessage):
            return inner.serialize().encode("utf-8")
    return json.dumps(p).encode("utf-8")


_NESTED = frozenset(
    {
        HiveMessageType.BROADCAST,
        HiveMessageType.PROPAGATE,
        HiveMessageType.ESCALATE,
        HiveMessageType.CASCADE,
    }
)


def _assemble(
    code: int,
    versioned: bool,
    compressed: bool,
    meta: bytes,
    bin_type: int | None,
    payload: bytes,
) -> bytes:
    if len(meta) > 255:
        raise InvalidMessage(f"metadata is {len(meta)} bytes; the binary frame allows 255")
    c = 1 if compressed else 0
    if versioned:
        header = bytes(
            (
                0xC0 | (PROTOCOL_VERSION >> 2),
                ((PROTOCOL_VERSION & 3) << 6) | (code << 1) | c,
                len(meta),
            )
        )
    else:
        header = bytes((0x80 | (code << 1) | c, len(meta)))
    if bin_type is None:
        return header + meta + payload
    # The 4-bit bin_type leaves header+metadata half a byte short: shift them
    # right by a nibble (zero nibble in front) so the payload stays aligned.
    head = header + meta
    value = (int.from_bytes(head, "big") << 4) | (bin_type & 0xF)
    return value.to_bytes(len(head) + 1, "big") + payload


def encode_frame(
    msg: HiveMessage, compressed: bool | None = True, versioned: bool = False
) -> bytes:
    """Encode a message as a protocol v1 binary frame.

    Args:
        msg: the message. INTERCOM has no binary type code and degrades to
            3rdparty, as in the reference: send it as JSON.
        compressed: ``True`` (default, what reference peers can read), ``False``,
            or ``None`` to pick the shorter form (uncompressed on ties).
        versioned: write the optional protocol-version byte.

    Raises:
        InvalidMessage: metadata over 255 bytes.
    """
    mtype = msg.msg_type
    # Like the reference, a type without a code (INTERCOM) is written as
    # 3rdparty and so arrives as 3rdparty; connections keep INTERCOM in JSON.
    code = CODE_OF_TYPE.get(mtype, CODE_OF_TYPE[HiveMessageType.THIRDPRTY])
    meta = json.dumps(msg.metadata).encode("utf-8") if msg.metadata else _EMPTY_META
    if mtype is _BINARY:
        bin_type = int(msg.bin_type)
        payload = msg.raw_payload
    else:
        bin_type = None
        payload = _payload_bytes(msg)
    if compressed is None:
        plain = _assemble(code, versioned, False, meta, bin_type, payload)
        packed = _assemble(
            code,
            versioned,
            True,
            _EMPTY_META_Z if meta is _EMPTY_META else zlib.compress(meta),
            bin_type,
            payload if bin_type is not None else zlib.compress(payload),
        )
        return plain if len(plain) <= len(packed) else packed
    if compressed:
        meta = _EMPTY_META_Z if meta is _EMPTY_META else zlib.compress(meta)
        if bin_type is None:
            payload = zlib.compress(payload)
    return _assemble(code, versioned, bool(compressed), meta, bin_type, payload)


def _read_bits(frame: bytes, pos: int, nbits: int) -> int:
    end = pos + nbits
    if end > len(frame) * 8:
        raise DecodingError("binary frame truncated")
    first, last = pos >> 3, (end + 7) >> 3
    chunk = int.from_bytes(frame[first:last], "big")
    return (chunk >> ((last << 3) - end)) & ((1 << nbits) - 1)


def _read_bytes(frame: bytes, pos: int, nbytes: int) -> bytes:
    if pos & 7 == 0:
        start = pos >> 3
        out = frame[start : start + nbytes]
        if len(out) != nbytes:
            raise DecodingError("binary frame truncated")
        return out
    if nbytes == 0:
        return b""
    return _read_bits(frame, pos, nbytes * 8).to_bytes(nbytes, "big")


def _inflate(data: bytes, limit: int) -> bytes:
    # max_length stops zlib once limit + 1 bytes are out: a bomb costs at most
    # that much memory, however far it would inflate.
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error as exc:
        raise DecodingError(f"bad zlib stream: {exc}") from None
    if len(out) > limit or d.unconsumed_tail:
        raise PayloadTooBig(f"decompressed payload exceeds {limit} bytes")
    if not d.eof:
        raise DecodingError("truncated zlib stream")
    return out


def _json_obj(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodingError(f"{what} is not JSON: {exc}") from None
    except RecursionError:
        raise DecodingError(f"{what} is nested too deeply") from None
    if not isinstance(value, dict):
        raise DecodingError(f"{what} must be a JSON object")
    return value


def decode_frame(frame: bytes, max_size: int = DEFAULT_MAX_SIZE) -> HiveMessage:
    """Decode a protocol v1 binary frame.

    Args:
        frame: the frame bytes (after decryption).
        max_size: limit on the decompressed metadata and payload together,
            against zlib bombs; nothing is inflated past it.

    Raises:
        DecodingError: truncated or malformed frame, bad zlib or JSON.
        UnsupportedProtocolVersion: a version byte above 1.
        PayloadTooBig: decompressed parts over ``max_size``.
        InvalidMessage: a payload that does not fit its type.
    """
    frame = bytes(frame)
    n = len(frame)
    i = 0
    while i < n and frame[i] == 0:
        i += 1
    if i == n:
        raise DecodingError("binary frame has no start marker")
    pos = i * 8 + (8 - frame[i].bit_length()) + 1  # just past the start marker
    versioned = _read_bits(frame, pos, 1)
    pos += 1
    if versioned:
        version = _read_bits(frame, pos, 8)
        pos += 8
        if version > PROTOCOL_VERSION:
            raise UnsupportedProtocolVersion(f"protocol version {version} is not supported")
    code = _read_bits(frame, pos, 5)
    compressed = _read_bits(frame, pos + 5, 1)
    meta_len = _read_bits(frame, pos + 6, 8)
    pos += 14
    meta_raw = _read_bytes(frame, pos, meta_len)
    pos += meta_len * 8
    mtype = TYPE_OF_CODE.get(code, HiveMessageType.THIRDPRTY)
    bin_type = 0
    if mtype is _BINARY:
        bin_type = _read_bits(frame, pos, 4)
        pos += 4
    rest_bits = n * 8 - pos
    if rest_bits & 7:
        raise DecodingError("binary frame payload is not a whole number of bytes")
    payload = _read_bytes(frame, pos, rest_bits >> 3)
    if compressed:
        meta_raw = _inflate(meta_raw, max_size)
        if mtype is not _BINARY:
            payload = _inflate(payload, max_size - len(meta_raw))
    metadata = _json_obj(meta_raw, "metadata") if meta_raw else {}
    if mtype is _BINARY:
        return HiveMessage(_BINARY, payload, bin_type=bin_type, metadata=metadata)
    body = _json_obj(payload, "payload") if payload else {}
    return HiveMessage(mtype, body, metadata=metadata)


# Reference-compatible names.
def get_bitstring(
    hive_type: HiveMessageType | str = HiveMessageType.BUS,
    payload: Any = None,
    compressed: bool | None = True,
    hivemeta: dict[str, Any] | None = None,
    binary_type: HiveMindBinaryPayloadType | int = HiveMindBinaryPayloadType.UNDEFINED,
    versioned: bool = False,
) -> bytes:
    """Build a binary frame from its parts (the reference's helper, returning bytes)."""
    if isinstance(payload, HiveMessage) and hive_type == payload.msg_type:
        msg = payload
    else:
        msg = HiveMessage(hive_type, payload, metadata=hivemeta, bin_type=binary_type)
    return encode_frame(msg, compressed=compressed, versioned=versioned)


def decode_bitstring(frame: bytes) -> HiveMessage:
    """Decode a binary frame (the reference's helper name)."""
    return decode_frame(frame)
