"""Link encryption: ciphers, binary frames and encrypted JSON text frames.

Two AEAD ciphers, both from ``cryptography``, with no associated data, laid
out as the reference implementation lays them out:

=====================  ==============  =====  ===  ==============================
cipher                 key bytes       nonce  tag  binary frame
=====================  ==============  =====  ===  ==============================
``AES-GCM``            16, 24 or 32    16     16   ``nonce || ciphertext || tag``
``CHACHA20-POLY1305``  32              12     16   ``nonce || ciphertext || tag``
=====================  ==============  =====  ===  ==============================

AES-GCM uses a 16-byte nonce (GCM's non-96-bit IV path), not the usual 12.
A text frame is the JSON object ``{"ciphertext", "tag", "nonce"}`` (that key
order, default ``json.dumps`` spacing) with each field in the negotiated text
encoding. A text frame without ``tag`` carries the tag as the last 16 bytes of
the ciphertext (WebCrypto style); we accept it.

:class:`LinkCipher` holds one key and its negotiated cipher and encoding; it is
what a connection uses on its hot path. The module-level functions are
conveniences with the reference's names.
"""

from __future__ import annotations

import json
import os
from enum import Enum
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from hivemind_bus_client.exceptions import (
    DecodingError,
    DecryptionKeyError,
    InvalidCipher,
    InvalidKeySize,
)
from hivemind_bus_client.protocol import encodings
from hivemind_bus_client.protocol.crypto import secret_bytes
from hivemind_bus_client.protocol.encodings import SupportedEncodings, get_encoding
from hivemind_bus_client.protocol.limits import short_repr

__all__ = [
    "TAG_SIZE",
    "LinkCipher",
    "SupportedCiphers",
    "SupportedEncodings",
    "decrypt_bin",
    "decrypt_from_json",
    "encrypt_as_json",
    "encrypt_bin",
    "get_cipher",
    "nonce_size",
]

TAG_SIZE = 16


class SupportedCiphers(str, Enum):
    """Wire names of the AEAD ciphers."""

    AES_GCM = "AES-GCM"
    CHACHA20_POLY1305 = "CHACHA20-POLY1305"

    def __str__(self) -> str:
        return self.value


_CIPHER_BY_NAME = {c.value: c for c in SupportedCiphers}
_NONCE = {SupportedCiphers.AES_GCM: 16, SupportedCiphers.CHACHA20_POLY1305: 12}


def get_cipher(name: str | SupportedCiphers) -> SupportedCiphers:
    """Resolve a cipher wire name; raises :class:`InvalidCipher` for unknown names."""
    if isinstance(name, SupportedCiphers):
        return name
    try:
        return _CIPHER_BY_NAME[name]
    except (KeyError, TypeError):
        raise InvalidCipher(f"unknown cipher: {short_repr(name)}") from None


def nonce_size(cipher: str | SupportedCiphers) -> int:
    """Nonce length in bytes of a cipher."""
    return _NONCE[get_cipher(cipher)]


def _key_bytes(key: bytes | str) -> bytes:
    # The reference uses a str key as its raw UTF-8 bytes (no KDF, no truncation).
    return secret_bytes(key) if isinstance(key, str) else bytes(key)


def _aead(key: bytes, cipher: SupportedCiphers) -> AESGCM | ChaCha20Poly1305:
    if cipher is SupportedCiphers.AES_GCM:
        if len(key) not in (16, 24, 32):
            raise InvalidKeySize("AES-GCM requires a 16, 24 or 32 byte key")
        return AESGCM(key)
    if len(key) != 32:
        raise InvalidKeySize("CHACHA20-POLY1305 requires a 32-byte key")
    return ChaCha20Poly1305(key)


# Field encoders whose alphabets never need JSON escaping, so a text frame can be
# assembled by concatenation; basE91 needs its double quote escaped, Z85P its
# leading control byte, which json.dumps does.
_PLAIN_JSON_SAFE = frozenset(
    {
        SupportedEncodings.JSON_HEX,
        SupportedEncodings.JSON_B64,
        SupportedEncodings.JSON_URLSAFE_B64,
        SupportedEncodings.JSON_B32,
        SupportedEncodings.JSON_Z85B,
    }
)


class LinkCipher:
    """One key with its cipher and text encoding: seals and opens frames.

    Args:
        key: the session key (32 bytes after a handshake) or the legacy
            pre-shared key (its 16 UTF-8 characters, so AES-128).
        cipher: cipher wire name.
        encoding: text encoding wire name for text frames.

    Raises:
        InvalidCipher, InvalidEncoding, InvalidKeySize: unusable parameters.
    """

    __slots__ = ("_aead", "_dec", "_enc", "_nonce_size", "_safe", "cipher", "encoding", "key")

    def __init__(
        self,
        key: bytes | str,
        cipher: str | SupportedCiphers = SupportedCiphers.AES_GCM,
        encoding: str | SupportedEncodings = SupportedEncodings.JSON_HEX,
    ) -> None:
        self.key = _key_bytes(key)
        self.cipher = get_cipher(cipher)
        self.encoding = get_encoding(encoding)
        self._aead = _aead(self.key, self.cipher)
        self._nonce_size = _NONCE[self.cipher]
        self._enc = encodings.encoder(self.encoding)
        self._dec = encodings.decoder(self.encoding)
        self._safe = self.encoding in _PLAIN_JSON_SAFE

    @property
    def nonce_size(self) -> int:
        """Nonce length in bytes of this link's cipher."""
        return self._nonce_size

    def fresh_nonce(self) -> bytes:
        """A new random nonce for this cipher (callers that remember what they sealed)."""
        return os.urandom(self._nonce_size)

    # -- binary frames -------------------------------------------------------

    def seal_bytes(self, plaintext: bytes, nonce: bytes | None = None) -> bytes:
        """Encrypt to a binary frame ``nonce || ciphertext || tag``."""
        if nonce is None:
            nonce = os.urandom(self._nonce_size)
        elif len(nonce) != self._nonce_size:
            raise InvalidKeySize(f"{self.cipher.value} needs a {self._nonce_size}-byte nonce")
        return nonce + self._aead.encrypt(nonce, plaintext, None)

    def open_bytes(self, frame: bytes) -> bytes:
        """Decrypt a binary frame.

        Raises:
            DecodingError: the frame is shorter than nonce + tag.
            DecryptionKeyError: the tag does not verify (tampered, or another key).
        """
        return self.open_bytes_with_nonce(frame)[0]

    def open_bytes_with_nonce(self, frame: bytes) -> tuple[bytes, bytes]:
        """Decrypt a binary frame; returns (plaintext, nonce). Raises as :meth:`open_bytes`."""
        ns = self._nonce_size
        if len(frame) < ns + TAG_SIZE:
            raise DecodingError("encrypted frame too short")
        nonce = bytes(frame[:ns])
        try:
            return self._aead.decrypt(nonce, frame[ns:], None), nonce
        except InvalidTag:
            raise DecryptionKeyError("frame failed authentication") from None

    # -- text frames ---------------------------------------------------------

    def seal_text(self, plaintext: bytes | str, nonce: bytes | None = None) -> str:
        """Encrypt to a JSON text frame ``{"ciphertext", "tag", "nonce"}``."""
        if isinstance(plaintext, str):
            plaintext = plaintext.encode("utf-8")
        if nonce is None:
            nonce = os.urandom(self._nonce_size)
        elif len(nonce) != self._nonce_size:
            raise InvalidKeySize(f"{self.cipher.value} needs a {self._nonce_size}-byte nonce")
        sealed = self._aead.encrypt(nonce, plaintext, None)
        enc = self._enc
        ct, tag, nc = enc(sealed[:-TAG_SIZE]), enc(sealed[-TAG_SIZE:]), enc(nonce)
        if self._safe:
            return '{"ciphertext": "' + ct + '", "tag": "' + tag + '", "nonce": "' + nc + '"}'
        if self.encoding is SupportedEncodings.JSON_B91:
            return (
                '{"ciphertext": "'
                + ct.replace('"', '\\"')
                + '", "tag": "'
                + tag.replace('"', '\\"')
                + '", "nonce": "'
                + nc.replace('"', '\\"')
                + '"}'
            )
        return json.dumps({"ciphertext": ct, "tag": tag, "nonce": nc})

    def open_text(self, frame: str | bytes | dict[str, Any]) -> bytes:
        """Decrypt a JSON text frame (or its parsed dict).

        Raises:
            DecodingError: not a well-formed envelope in this link's encoding.
            DecryptionKeyError: the tag does not verify.
        """
        return self.open_text_with_nonce(frame)[0]

    def open_text_with_nonce(self, frame: str | bytes | dict[str, Any]) -> tuple[bytes, bytes]:
        """Decrypt a JSON text frame; returns (plaintext, nonce). Raises as :meth:`open_text`.

        The nonce is the decoded bytes, so two spellings of one frame (hex in
        upper or lower case, the tag apart or appended) give the same nonce.
        """
        if isinstance(frame, dict):
            env = frame
        else:
            try:
                env = json.loads(frame)
            except (ValueError, UnicodeDecodeError) as exc:
                raise DecodingError(f"encrypted frame is not JSON: {exc}") from None
            except RecursionError:
                raise DecodingError("encrypted frame is nested too deeply") from None
        if not isinstance(env, dict):
            raise DecodingError("encrypted frame is not a JSON object")
        try:
            ct_text = env["ciphertext"]
            nonce_text = env["nonce"]
        except KeyError as exc:
            raise DecodingError(f"encrypted frame lacks {exc}") from None
        dec = self._dec
        tag_text = env.get("tag")
        for value in (ct_text, nonce_text, tag_text):
            if value is not None and not isinstance(value, str):
                raise DecodingError("encrypted frame fields must be strings")
        ct = dec(ct_text)
        nonce = dec(nonce_text)
        if tag_text is not None:
            ct += dec(tag_text)
        if len(nonce) != self._nonce_size or len(ct) < TAG_SIZE:
            raise DecodingError("encrypted frame has a bad nonce or tag length")
        try:
            return self._aead.decrypt(nonce, ct, None), nonce
        except InvalidTag:
            raise DecryptionKeyError("frame failed authentication") from None


# -- reference-named conveniences ------------------------------------------------


def encrypt_bin(
    key: bytes | str,
    data: bytes | str,
    cipher: str | SupportedCiphers = SupportedCiphers.AES_GCM,
    nonce: bytes | None = None,
) -> bytes:
    """Encrypt to a binary frame ``nonce || ciphertext || tag``."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return LinkCipher(key, cipher).seal_bytes(data, nonce)


def decrypt_bin(
    key: bytes | str, frame: bytes, cipher: str | SupportedCiphers = SupportedCiphers.AES_GCM
) -> bytes:
    """Decrypt a binary frame."""
    return LinkCipher(key, cipher).open_bytes(frame)


def encrypt_as_json(
    key: bytes | str,
    data: bytes | str,
    cipher: str | SupportedCiphers = SupportedCiphers.AES_GCM,
    encoding: str | SupportedEncodings = SupportedEncodings.JSON_B64,
    nonce: bytes | None = None,
) -> str:
    """Encrypt to a JSON text frame (library default encoding: JSON-B64, as the reference)."""
    return LinkCipher(key, cipher, encoding).seal_text(data, nonce)


def decrypt_from_json(
    key: bytes | str,
    frame: str | bytes | dict[str, Any],
    cipher: str | SupportedCiphers = SupportedCiphers.AES_GCM,
    encoding: str | SupportedEncodings = SupportedEncodings.JSON_B64,
) -> bytes:
    """Decrypt a JSON text frame."""
    return LinkCipher(key, cipher, encoding).open_text(frame)
