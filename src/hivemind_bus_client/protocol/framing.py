"""Websocket frames <-> HiveMessages under a link's cipher.

A text frame is a JSON envelope, plain or sealed (``{"ciphertext", "tag",
"nonce"}`` in the link's text encoding); a binary frame is a binary v1 frame
(:mod:`~hivemind_bus_client.protocol.serialization`), plain or sealed. Which
frames a link may receive in which state (the plaintext rules) is the
connection's business; these functions only build and open frames.
"""

from __future__ import annotations

import json

from hivemind_bus_client.exceptions import DecodingError, InvalidMessage, ProtocolError
from hivemind_bus_client.protocol.encryption import LinkCipher
from hivemind_bus_client.protocol.message import HiveMessage, HiveMessageType
from hivemind_bus_client.protocol.serialization import JSON_ONLY_TYPES, decode_frame, encode_frame

__all__ = ["PLAINTEXT_TYPES", "encode_message", "open_frame"]

#: The only message types that may cross in plaintext once a key exists.
PLAINTEXT_TYPES = frozenset({HiveMessageType.HELLO, HiveMessageType.HANDSHAKE})


def encode_message(
    message: HiveMessage, cipher: LinkCipher | None, binarize: bool, compress: bool
) -> str | bytes:
    """The frame for ``message``: binary when it is BINARY or the link binarizes it.

    HELLO, HANDSHAKE and the JSON-only types always go as text.
    """
    mtype = message.msg_type
    if mtype is HiveMessageType.BINARY or (
        binarize and mtype not in PLAINTEXT_TYPES and mtype not in JSON_ONLY_TYPES
    ):
        raw = encode_frame(message, compressed=True if compress else None)
        return cipher.seal_bytes(raw) if cipher else raw
    text = message.serialize()
    return cipher.seal_text(text) if cipher else text


def open_frame(
    data: str | bytes, cipher: LinkCipher | None, max_size: int
) -> tuple[HiveMessage, bool, bool]:
    """Parse a frame into (message, came-as-binary, was-encrypted).

    A binary frame is opened with ``cipher`` when there is one; a text frame
    only when it is a sealed envelope.

    Raises:
        DecodingError: not JSON, or not a valid binary frame.
        InvalidMessage: parsed, but not a valid HiveMessage.
        ProtocolError: a sealed frame without a key, or one sealed twice.
        CryptoError: the frame does not authenticate under ``cipher``.
        PayloadTooBig: a binary payload over ``max_size``.
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
        if cipher is not None:
            raw = cipher.open_bytes(raw)
        return decode_frame(raw, max_size), True, cipher is not None
    try:
        obj = json.loads(data)
    except (ValueError, TypeError) as exc:
        raise DecodingError(f"text frame is not JSON: {exc}") from None
    if isinstance(obj, dict) and "ciphertext" in obj and "msg_type" not in obj:
        if cipher is None:
            raise ProtocolError("encrypted frame before a key was agreed")
        plain = cipher.open_text(obj)
        try:
            obj = json.loads(plain)
        except (ValueError, UnicodeDecodeError) as exc:
            raise DecodingError(f"decrypted frame is not JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise InvalidMessage("decrypted frame is not a JSON object")
        if "ciphertext" in obj and "msg_type" not in obj:
            raise ProtocolError("nested encrypted frame")
        return HiveMessage.deserialize(obj), False, True
    return HiveMessage.deserialize(obj), False, False
