"""HiveMind v3 transport: HiveMessages <-> Noise transport messages, sans-I/O.

See ``docs/protocol-v3.md`` ("Transport"). After the handshake every message
in either direction is one binary websocket frame holding one Noise
transport message: ``AEAD(k, nonce(n), ad = empty, marker || body)``, with an
implicit counter ``n`` per direction. The marker says what the body is:

===  =================================================
00   a HiveMessage as JSON (UTF-8, the v1 envelope)
01   a v1 bitstring (binary frame)
02   first chunk of a JSON body
03   first chunk of a bitstring body
04   middle chunk
05   last chunk
===  =================================================

A body over :data:`CHUNK_SIZE` bytes goes as chunks, each its own Noise
message, sent contiguously. Reassembly is bounded (``max_size``). Every
failure is fatal to the link: once :meth:`V3Transport.decode` has raised, the
transport refuses every further frame. On a v3 link the caller closes with
1008 ``invalid message`` (:data:`FATAL_CLOSE`) whatever the error class.

Not thread-safe: the caller encrypts and sends under one lock, in the order
:meth:`V3Transport.encode` returns the frames.
"""

from __future__ import annotations

from hivemind_bus_client.exceptions import (
    CloseCode,
    DecodingError,
    InvalidState,
    PayloadTooBig,
    ProtocolError,
)
from hivemind_bus_client.protocol.message import HiveMessage, HiveMessageType
from hivemind_bus_client.protocol.noise import TAGLEN, CipherState
from hivemind_bus_client.protocol.serialization import JSON_ONLY_TYPES, decode_frame, encode_frame
from hivemind_bus_client.protocol.v3handshake import V3Result

__all__ = [
    "CHUNK_SIZE",
    "DEFAULT_MAX_SIZE",
    "FATAL_CLOSE",
    "MARKER_BITS",
    "MARKER_FIRST_BITS",
    "MARKER_FIRST_JSON",
    "MARKER_JSON",
    "MARKER_LAST",
    "MARKER_MIDDLE",
    "V3Transport",
]

MARKER_JSON = 0x00
MARKER_BITS = 0x01
MARKER_FIRST_JSON = 0x02
MARKER_FIRST_BITS = 0x03
MARKER_MIDDLE = 0x04
MARKER_LAST = 0x05

#: The largest body sent in one Noise message; longer bodies are chunked.
CHUNK_SIZE = 65000
#: Default bound on a reassembled body (32 MiB).
DEFAULT_MAX_SIZE = 32 * 1024 * 1024
#: How a v3 link closes on any bad transport frame.
FATAL_CLOSE: tuple[int, str] = (CloseCode.POLICY, "invalid message")

#: Types that always travel as JSON, whatever the link's binarize flag.
_ALWAYS_JSON = frozenset({HiveMessageType.HELLO, HiveMessageType.HANDSHAKE}) | JSON_ONLY_TYPES


class V3Transport:
    """Both directions of one v3 link after Split().

    Args:
        send: the CipherState for our outgoing frames.
        recv: the CipherState for the peer's frames.
        binarize: send every binarizable type as a bitstring (the link's flag).
        max_size: bound on a received body, chunked or not; over it is
            :class:`~hivemind_bus_client.exceptions.PayloadTooBig`.
    """

    def __init__(
        self,
        send: CipherState,
        recv: CipherState,
        *,
        binarize: bool = False,
        max_size: int = DEFAULT_MAX_SIZE,
    ) -> None:
        if not send.has_key or not recv.has_key:
            raise InvalidState("a v3 transport needs keyed CipherStates")
        self._send = send
        self._recv = recv
        self.binarize = binarize
        self.max_size = max_size
        self._parts: list[bytes] | None = None
        self._parts_len = 0
        self._parts_bits = False
        self.failed = False

    @classmethod
    def for_result(cls, result: V3Result, *, max_size: int = DEFAULT_MAX_SIZE) -> V3Transport:
        """The transport of a completed handshake, with the link's binarize flag."""
        return cls(result.send, result.recv, binarize=result.binarize, max_size=max_size)

    # -- sending ------------------------------------------------------------

    def is_bitstring(self, message: HiveMessage) -> bool:
        """Whether ``message`` goes as a bitstring on this link."""
        mtype = message.msg_type
        if mtype is HiveMessageType.BINARY:
            return True
        return self.binarize and mtype not in _ALWAYS_JSON

    def encode(self, message: HiveMessage) -> list[bytes]:
        """The binary frames carrying ``message``, to send contiguously in order.

        Raises:
            InvalidMessage: the message has no wire form (e.g. metadata too big
                for a bitstring).
        """
        if self.is_bitstring(message):
            return self.seal_body(encode_frame(message, compressed=True), bitstring=True)
        return self.seal_body(message.serialize().encode("utf-8"), bitstring=False)

    def seal_body(self, body: bytes, *, bitstring: bool) -> list[bytes]:
        """Encrypt an already serialized body: one frame, or chunks when over 65000 bytes."""
        if len(body) <= CHUNK_SIZE:
            marker = MARKER_BITS if bitstring else MARKER_JSON
            return [self._send.encrypt(bytes([marker]) + body)]
        frames = []
        last = len(body) - CHUNK_SIZE
        for start in range(0, len(body), CHUNK_SIZE):
            if start == 0:
                marker = MARKER_FIRST_BITS if bitstring else MARKER_FIRST_JSON
            else:
                marker = MARKER_LAST if start >= last else MARKER_MIDDLE
            chunk = body[start : start + CHUNK_SIZE]
            frames.append(self._send.encrypt(bytes([marker]) + chunk))
        return frames

    # -- receiving ----------------------------------------------------------

    def decode(self, frame: bytes | str) -> HiveMessage | None:
        """The message a received frame completes, or ``None`` mid-chunking.

        Raises (each fatal: the transport then refuses everything):
            ProtocolError: a text frame, an unknown marker, a stray middle or
                last chunk, or a single frame inside an open reassembly.
            DecryptionKeyError: the frame did not authenticate (tampered,
                replayed, reordered, or another key).
            PayloadTooBig: the body exceeds ``max_size``.
            DecodingError, InvalidMessage: the body is not a HiveMessage.
        """
        opened = self.open_frame(frame)
        if opened is None:
            return None
        bitstring, body = opened
        try:
            if bitstring:
                return decode_frame(body, self.max_size)
            return HiveMessage.deserialize(body.decode("utf-8"))
        except UnicodeDecodeError:
            self.failed = True
            raise DecodingError("v3 JSON body is not UTF-8") from None
        except Exception:
            self.failed = True
            raise

    def open_frame(self, frame: bytes | str) -> tuple[bool, bytes] | None:
        """Decrypt and reassemble: ``(is_bitstring, body)`` or ``None`` mid-chunking.

        Same errors as :meth:`decode`, without the HiveMessage parsing.
        """
        if self.failed:
            raise InvalidState("the v3 transport failed; the link must close")
        try:
            return self._open(frame)
        except Exception:
            self.failed = True
            raise

    def _open(self, frame: bytes | str) -> tuple[bool, bytes] | None:
        if not isinstance(frame, (bytes, bytearray, memoryview)):
            raise ProtocolError("text frame on a v3 session")
        if len(frame) < TAGLEN + 1:
            raise ProtocolError("v3 frame too short")
        plain = self._recv.decrypt(bytes(frame))
        marker, body = plain[0], plain[1:]
        if marker in (MARKER_JSON, MARKER_BITS):
            if self._parts is not None:
                raise ProtocolError("single v3 frame inside a chunked message")
            self._check_size(len(body))
            return marker == MARKER_BITS, body
        if marker in (MARKER_FIRST_JSON, MARKER_FIRST_BITS):
            if self._parts is not None:
                raise ProtocolError("new chunked v3 message inside another")
            self._check_size(len(body))
            self._parts, self._parts_len = [body], len(body)
            self._parts_bits = marker == MARKER_FIRST_BITS
            return None
        if marker in (MARKER_MIDDLE, MARKER_LAST):
            if self._parts is None:
                raise ProtocolError("stray v3 chunk")
            self._check_size(self._parts_len + len(body))
            self._parts.append(body)
            self._parts_len += len(body)
            if marker == MARKER_MIDDLE:
                return None
            whole = b"".join(self._parts)
            self._parts, self._parts_len = None, 0
            return self._parts_bits, whole
        raise ProtocolError(f"unknown v3 marker {marker:#04x}")

    def _check_size(self, size: int) -> None:
        if size > self.max_size:
            raise PayloadTooBig(f"v3 message over {self.max_size} bytes")
