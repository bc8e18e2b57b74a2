"""Websocket frames <-> HiveMessages under a link's cipher.

A text frame is a JSON envelope, plain or sealed (``{"ciphertext", "tag",
"nonce"}`` in the link's text encoding); a binary frame is a binary v1 frame
(:mod:`~hivemind_bus_client.protocol.serialization`), plain or sealed. Which
frames a link may receive in which state (the plaintext rules) is the
connection's business; these functions only build and open frames.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any, NamedTuple

from hivemind_bus_client.exceptions import DecodingError, InvalidMessage, ProtocolError
from hivemind_bus_client.protocol.encryption import LinkCipher
from hivemind_bus_client.protocol.limits import check_wrap_depth
from hivemind_bus_client.protocol.message import HiveMessage, HiveMessageType
from hivemind_bus_client.protocol.serialization import JSON_ONLY_TYPES, decode_frame, encode_frame

__all__ = [
    "KEYED_PLAINTEXT_TYPES",
    "PLAINTEXT_TYPES",
    "Opened",
    "encode_message",
    "encode_once",
    "open_frame",
    "open_frame_with_nonce",
    "plaintext",
]

#: The message types that may cross in plaintext at all (before a key exists).
PLAINTEXT_TYPES = frozenset({HiveMessageType.HELLO, HiveMessageType.HANDSHAKE})
#: The only type that may still arrive in plaintext once a key exists: a
#: HANDSHAKE (the stock client repeats its own every 5 s until answered, and
#: a re-key starts with one). A HELLO comes encrypted from every client.
KEYED_PLAINTEXT_TYPES = frozenset({HiveMessageType.HANDSHAKE})


#: The serialized forms of one :func:`encode_once` block: (id, binary, compress)
#: -> (the message, kept alive so its id stays its own, the form).
_Memo = dict[tuple[int, bool, bool], tuple[HiveMessage, "str | bytes"]]
_ONCE: ContextVar[_Memo | None] = ContextVar("hivemind_encode_once", default=None)


@contextlib.contextmanager
def encode_once() -> Iterator[None]:
    """Inside the block, serialize each message once, whatever number of links it goes to.

    A hub's flood writes one :class:`HiveMessage` to N links: each link seals
    it under its own key, but the JSON text (or the compressed binary frame)
    under the seal is the same, so it is made once per form and reused; N
    links then cost one serialization and N encryptions. The messages must
    not change inside the block. Blocks nest (the outer one's memory is used).
    """
    if _ONCE.get() is not None:
        yield
        return
    token = _ONCE.set({})
    try:
        yield
    finally:
        _ONCE.reset(token)


def plaintext(message: HiveMessage, binary: bool, compress: bool = True) -> str | bytes:
    """What a frame of ``message`` carries under its seal: JSON text, or a binary frame.

    Remembered inside an :func:`encode_once` block.
    """
    memo = _ONCE.get()
    key = (id(message), binary, binary and compress)
    if memo is not None:
        hit = memo.get(key)
        if hit is not None and hit[0] is message:
            return hit[1]
    out: str | bytes
    if binary:
        out = encode_frame(message, compressed=True if compress else None)
    else:
        out = message.serialize()
    if memo is not None:
        memo[key] = (message, out)
    return out


def encode_message(
    message: HiveMessage,
    cipher: LinkCipher | None,
    binarize: bool,
    compress: bool,
    nonce: bytes | None = None,
) -> str | bytes:
    """The frame for ``message``: binary when it is BINARY or the link binarizes it.

    HELLO, HANDSHAKE and the JSON-only types always go as text. ``nonce``:
    seal with this one instead of a fresh random one (a connection that
    remembers what it sent draws it itself).
    """
    mtype = message.msg_type
    if mtype is HiveMessageType.BINARY or (
        binarize and mtype not in PLAINTEXT_TYPES and mtype not in JSON_ONLY_TYPES
    ):
        raw = plaintext(message, True, compress)
        assert isinstance(raw, bytes)
        return cipher.seal_bytes(raw, nonce) if cipher else raw
    text = plaintext(message, False)
    assert isinstance(text, str)
    return cipher.seal_text(text, nonce) if cipher else text


class Opened(NamedTuple):
    """A received frame, opened: what :func:`open_frame_with_nonce` returns."""

    message: HiveMessage
    binary: bool  #: came as a binary frame
    sealed: bool  #: was encrypted (and authenticated)
    nonce: bytes | None  #: the nonce it was sealed with (None when plaintext)


def open_frame(
    data: str | bytes, cipher: LinkCipher | None, max_size: int
) -> tuple[HiveMessage, bool, bool]:
    """Parse a frame into (message, came-as-binary, was-encrypted).

    A binary frame is opened with ``cipher`` when there is one; a text frame
    only when it is a sealed envelope. ``max_size`` bounds what a compressed
    binary frame may inflate to.

    Raises:
        DecodingError: not JSON, nested too deeply, or not a valid binary frame.
        InvalidMessage: parsed, but not a valid HiveMessage (transport messages
            wrapped more than ``MAX_WRAP_DEPTH`` deep included).
        ProtocolError: a sealed frame without a key, or one sealed twice.
        CryptoError: the frame does not authenticate under ``cipher``.
        PayloadTooBig: a compressed binary frame that inflates past ``max_size``.
    """
    opened = open_frame_with_nonce(data, cipher, max_size)
    return opened.message, opened.binary, opened.sealed


def open_frame_with_nonce(data: str | bytes, cipher: LinkCipher | None, max_size: int) -> Opened:
    """:func:`open_frame`, also giving the nonce of a sealed frame (replay checks)."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
        nonce = None
        if cipher is not None:
            raw, nonce = cipher.open_bytes_with_nonce(raw)
        msg = decode_frame(raw, max_size)
        check_wrap_depth(msg.msg_type, msg.raw_payload)
        return Opened(msg, True, cipher is not None, nonce)
    obj = _loads(data, "text frame")
    nonce = None
    if isinstance(obj, dict) and "ciphertext" in obj and "msg_type" not in obj:
        if cipher is None:
            raise ProtocolError("encrypted frame before a key was agreed")
        plain, nonce = cipher.open_text_with_nonce(obj)
        obj = _loads(plain, "decrypted frame")
        if not isinstance(obj, dict):
            raise InvalidMessage("decrypted frame is not a JSON object")
        if "ciphertext" in obj and "msg_type" not in obj:
            raise ProtocolError("nested encrypted frame")
    if isinstance(obj, dict):
        check_wrap_depth(obj.get("msg_type"), obj.get("payload"))
    return Opened(HiveMessage.deserialize(obj), False, nonce is not None, nonce)


def _loads(data: str | bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, TypeError) as exc:  # UnicodeDecodeError is a ValueError
        raise DecodingError(f"{what} is not JSON: {exc}") from None
    except RecursionError:
        raise DecodingError(f"{what} is nested too deeply") from None
