"""Noise CipherState and the cipher functions of the HiveMind v3 suites.

One direction of a Noise session: a key and a 64-bit counter used as the
nonce (``docs/protocol-v3.md``, "Transport"). ChaChaPoly encodes the counter
little-endian after four zero bytes, AESGCM big-endian, as the Noise
specification (revision 34) says. The AEADs come from ``cryptography``; their
tag check is constant time. An authentication failure raises
:class:`~hivemind_bus_client.exceptions.DecryptionKeyError` and leaves the
counter where it was.
"""

from __future__ import annotations

from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from hivemind_bus_client.exceptions import DecryptionKeyError, InvalidState

__all__ = ["CIPHERS", "SUITES", "CipherState"]

#: Nonce value reserved by the spec; reaching it means the key is exhausted.
_NONCE_LIMIT = 2**64 - 1

_Aead = ChaCha20Poly1305 | AESGCM


def _chacha_nonce(n: int) -> bytes:
    return b"\x00\x00\x00\x00" + n.to_bytes(8, "little")


def _aesgcm_nonce(n: int) -> bytes:
    return b"\x00\x00\x00\x00" + n.to_bytes(8, "big")


#: Cipher name -> (AEAD class, nonce encoding of the counter).
CIPHERS: dict[str, tuple[Callable[[bytes], _Aead], Callable[[int], bytes]]] = {
    "ChaChaPoly": (ChaCha20Poly1305, _chacha_nonce),
    "AESGCM": (AESGCM, _aesgcm_nonce),
}

#: Suite name (as HiveMind writes it) -> cipher name. DH is always 25519,
#: the hash always SHA-256.
SUITES: dict[str, str] = {
    "25519_ChaChaPoly_SHA256": "ChaChaPoly",
    "25519_AESGCM_SHA256": "AESGCM",
}


class CipherState:
    """A key and its counter: one direction of a link once the handshake is done.

    ``k`` is ``None`` before the handshake has mixed a key in; then encryption
    is the identity, as the spec says.
    """

    def __init__(self, cipher: str, key: bytes | None = None) -> None:
        if cipher not in CIPHERS:
            raise ValueError(f"unknown Noise cipher {cipher!r}")
        self.cipher = cipher
        self._factory, self._nonce = CIPHERS[cipher]
        self._aead: _Aead | None = None
        self.k: bytes | None = None
        self.n = 0
        self.initialize_key(key)

    def initialize_key(self, key: bytes | None) -> None:
        """Set a new key (or none) and reset the counter to 0."""
        self._aead = None if key is None else self._factory(key)
        self.k = key
        self.n = 0

    @property
    def has_key(self) -> bool:
        """Whether a key is set."""
        return self._aead is not None

    def _next_nonce(self) -> bytes:
        if self.n >= _NONCE_LIMIT:
            raise InvalidState("Noise nonce exhausted; the link must be re-established")
        return self._nonce(self.n)

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        """AEAD-encrypt under the current counter, then advance it."""
        if self._aead is None:
            return plaintext
        out = self._aead.encrypt(self._next_nonce(), plaintext, ad)
        self.n += 1
        return out

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        """AEAD-decrypt under the current counter; advance it only on success.

        Raises:
            DecryptionKeyError: the tag did not verify (tampered, replayed,
                reordered, or another key).
        """
        if self._aead is None:
            return ciphertext
        try:
            out = self._aead.decrypt(self._next_nonce(), ciphertext, ad)
        except InvalidTag:
            raise DecryptionKeyError("Noise message failed authentication") from None
        self.n += 1
        return out

    def encrypt(self, plaintext: bytes) -> bytes:
        """Transport encryption: empty associated data."""
        return self.encrypt_with_ad(b"", plaintext)

    def decrypt(self, ciphertext: bytes) -> bytes:
        """Transport decryption: empty associated data (see :meth:`decrypt_with_ad`)."""
        return self.decrypt_with_ad(b"", ciphertext)
