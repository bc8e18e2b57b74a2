"""The Noise Protocol Framework state machine for the two HiveMind v3 patterns.

Implements CipherState, SymmetricState and HandshakeState of the Noise
specification (revision 34), with the ``psk`` modifier, for exactly the
handshakes HiveMind v3 uses (see ``docs/protocol-v3.md``, section "Noise"):

* ``Noise_XXpsk2_25519_<cipher>_SHA256`` (first contact, three messages)
* ``Noise_KKpsk0_25519_<cipher>_SHA256`` (both sides pinned, two messages)

with ``<cipher>`` = ``ChaChaPoly`` or ``AESGCM``, in either role. The
CipherState and the cipher table live in
:mod:`~hivemind_bus_client.protocol.noisecipher` (re-exported here).

Why hand-written: the Python Noise packages are either unmaintained
(``noiseprotocol`` 0.3.1, last released 2020, which the reference uses;
``dissononce`` 0.34.3, 2019) or young single-author projects without an
independent review (``noiseframework``); none lets a test inject the
ephemeral key through a public API, which replaying captured sessions needs.
The state machine is a short, fully specified composition; every primitive
(X25519, ChaCha20-Poly1305, AES-GCM, SHA-256, HMAC-based HKDF) comes from
``cryptography``, and tag comparison is the AEAD's own (constant time).

Errors: an AEAD failure raises
:class:`~hivemind_bus_client.exceptions.DecryptionKeyError`; a malformed
handshake message (wrong length, a low-order public key) raises
:class:`~hivemind_bus_client.exceptions.HandshakeError`; using the object out
of turn raises :class:`~hivemind_bus_client.exceptions.InvalidState`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from hivemind_bus_client.exceptions import HandshakeError, InvalidState
from hivemind_bus_client.protocol.noisecipher import CIPHERS, SUITES, CipherState

__all__ = [
    "CIPHERS",
    "DHLEN",
    "HASHLEN",
    "MAX_MESSAGE",
    "PATTERNS",
    "SUITES",
    "TAGLEN",
    "CipherState",
    "HandshakePattern",
    "HandshakeState",
    "SymmetricState",
    "protocol_name",
    "public_key",
]

DHLEN = 32  #: X25519 public key and shared secret length
HASHLEN = 32  #: SHA-256 output length
TAGLEN = 16  #: AEAD tag length
MAX_MESSAGE = 65535  #: the Noise limit on any one message


@dataclass(frozen=True)
class HandshakePattern:
    """A Noise pattern: pre-message tokens per side and the message token lists.

    Message ``i`` is written by the initiator when ``i`` is even.
    """

    name: str
    initiator_pre: tuple[str, ...]
    responder_pre: tuple[str, ...]
    messages: tuple[tuple[str, ...], ...]

    @property
    def has_psk(self) -> bool:
        """Whether the pattern has a ``psk`` token (then every ``e`` also mixes the key)."""
        return any("psk" in m for m in self.messages)


PATTERNS: dict[str, HandshakePattern] = {
    "XXpsk2": HandshakePattern(
        "XXpsk2",
        (),
        (),
        (("e",), ("e", "ee", "s", "es", "psk"), ("s", "se")),
    ),
    "KKpsk0": HandshakePattern(
        "KKpsk0",
        ("s",),
        ("s",),
        (("psk", "e", "es", "ss"), ("e", "ee", "se")),
    ),
}


def protocol_name(pattern: str, suite: str) -> str:
    """``"Noise_" + pattern + "_" + suite``, e.g. ``Noise_XXpsk2_25519_ChaChaPoly_SHA256``."""
    return f"Noise_{pattern}_{suite}"


def public_key(private: bytes) -> bytes:
    """The raw 32-byte X25519 public key of a raw 32-byte private key."""
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def _hkdf(chaining_key: bytes, ikm: bytes, outputs: int) -> list[bytes]:
    # Noise's HKDF(ck, ikm, n) is RFC 5869 HKDF with salt = ck and empty info.
    okm = HKDF(hashes.SHA256(), HASHLEN * outputs, salt=chaining_key, info=b"").derive(ikm)
    return [okm[i : i + HASHLEN] for i in range(0, len(okm), HASHLEN)]


class SymmetricState:
    """The chaining key ``ck``, the handshake hash ``h`` and the handshake's CipherState."""

    def __init__(self, name: str, cipher: str) -> None:
        raw = name.encode("ascii")
        self.h = raw.ljust(HASHLEN, b"\x00") if len(raw) <= HASHLEN else _hash(raw)
        self.ck = self.h
        self.cipher = cipher
        self.state = CipherState(cipher)

    def mix_key(self, ikm: bytes) -> None:
        """MixKey: a DH output (or, in PSK mode, an ephemeral) enters ``ck`` and the key."""
        self.ck, temp_k = _hkdf(self.ck, ikm, 2)
        self.state.initialize_key(temp_k)

    def mix_hash(self, data: bytes) -> None:
        """MixHash: ``h = SHA-256(h || data)``."""
        self.h = _hash(self.h + data)

    def mix_key_and_hash(self, ikm: bytes) -> None:
        """MixKeyAndHash: the ``psk`` token."""
        self.ck, temp_h, temp_k = _hkdf(self.ck, ikm, 3)
        self.mix_hash(temp_h)
        self.state.initialize_key(temp_k)

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        """Encrypt with ``h`` as associated data, then hash the ciphertext in."""
        ciphertext = self.state.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        """Decrypt with ``h`` as associated data, then hash the ciphertext in."""
        plaintext = self.state.decrypt_with_ad(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        """The two transport CipherStates: (initiator -> responder, responder -> initiator)."""
        k1, k2 = _hkdf(self.ck, b"", 2)
        return CipherState(self.cipher, k1), CipherState(self.cipher, k2)


def _hash(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class HandshakeState:
    """One side of a Noise handshake, message by message.

    Args:
        pattern: ``"XXpsk2"`` or ``"KKpsk0"``.
        suite: ``"25519_ChaChaPoly_SHA256"`` or ``"25519_AESGCM_SHA256"``.
        initiator: the role (the HiveMind client initiates).
        prologue: bytes both sides must agree on; they enter ``h``.
        static_private: our raw 32-byte X25519 static private key.
        psk: the 32-byte pre-shared key.
        remote_static: the peer's static public key, required by KK.
        ephemeral_private: a fixed ephemeral private key, for test vectors
            only; by default a fresh one is generated.
    """

    def __init__(
        self,
        pattern: str,
        suite: str,
        *,
        initiator: bool,
        prologue: bytes,
        static_private: bytes,
        psk: bytes,
        remote_static: bytes | None = None,
        ephemeral_private: bytes | None = None,
    ) -> None:
        if pattern not in PATTERNS or suite not in SUITES:
            raise ValueError(f"unsupported Noise protocol {protocol_name(pattern, suite)!r}")
        if len(psk) != 32:
            raise ValueError("a Noise PSK is 32 bytes")
        self.pattern = PATTERNS[pattern]
        self.initiator = initiator
        self.symmetric = SymmetricState(protocol_name(pattern, suite), SUITES[suite])
        self.symmetric.mix_hash(prologue)
        self._s = X25519PrivateKey.from_private_bytes(static_private)
        self._s_pub = self._s.public_key().public_bytes_raw()
        self._e_fixed = ephemeral_private
        self._e: X25519PrivateKey | None = None
        self._re: bytes | None = None
        self.remote_static = remote_static
        self._psk = psk
        self._index = 0
        self._pre_messages()

    def _pre_messages(self) -> None:
        for owner_is_initiator, tokens in (
            (True, self.pattern.initiator_pre),
            (False, self.pattern.responder_pre),
        ):
            for token in tokens:
                if token != "s":
                    raise ValueError(f"unsupported pre-message token {token!r}")
                if owner_is_initiator == self.initiator:
                    self.symmetric.mix_hash(self._s_pub)
                else:
                    if self.remote_static is None or len(self.remote_static) != DHLEN:
                        raise ValueError(f"{self.pattern.name} needs the peer's static public key")
                    self.symmetric.mix_hash(self.remote_static)

    @property
    def complete(self) -> bool:
        """Whether every handshake message has been written or read."""
        return self._index >= len(self.pattern.messages)

    @property
    def our_turn(self) -> bool:
        """Whether the next message is ours to write."""
        return not self.complete and (self._index % 2 == 0) == self.initiator

    @property
    def handshake_hash(self) -> bytes:
        """The handshake hash ``h`` (HiveMind does not use it; tests compare it)."""
        return self.symmetric.h

    @property
    def static_public(self) -> bytes:
        """Our static public key."""
        return self._s_pub

    def _dh(self, ours: X25519PrivateKey | None, theirs: bytes | None) -> bytes:
        if ours is None or theirs is None:
            raise InvalidState("Noise DH token before both keys are known")
        try:
            return ours.exchange(X25519PublicKey.from_public_bytes(theirs))
        except ValueError:
            # cryptography refuses an all-zero shared secret (low-order point).
            raise HandshakeError("handshake failure: invalid public key") from None

    def _token_dh(self, token: str) -> None:
        # token "xy": x is the initiator's key, y the responder's.
        first, second = token[0], token[1]
        mine, theirs = (first, second) if self.initiator else (second, first)
        ours = self._e if mine == "e" else self._s
        other = self._re if theirs == "e" else self.remote_static
        self.symmetric.mix_key(self._dh(ours, other))

    def write_message(self, payload: bytes = b"") -> bytes:
        """Write the next handshake message carrying ``payload``.

        Raises:
            InvalidState: not our turn, or the handshake is complete.
        """
        if not self.our_turn:
            raise InvalidState("not this side's turn to write a Noise message")
        sym = self.symmetric
        out = bytearray()
        for token in self.pattern.messages[self._index]:
            if token == "e":
                self._e = (
                    X25519PrivateKey.from_private_bytes(self._e_fixed)
                    if self._e_fixed is not None
                    else X25519PrivateKey.generate()
                )
                e_pub = self._e.public_key().public_bytes_raw()
                out += e_pub
                sym.mix_hash(e_pub)
                if self.pattern.has_psk:
                    sym.mix_key(e_pub)
            elif token == "s":
                out += sym.encrypt_and_hash(self._s_pub)
            elif token == "psk":
                sym.mix_key_and_hash(self._psk)
            else:
                self._token_dh(token)
        out += sym.encrypt_and_hash(payload)
        if len(out) > MAX_MESSAGE:
            raise InvalidState("Noise handshake message over 65535 bytes")
        self._index += 1
        return bytes(out)

    def read_message(self, message: bytes) -> bytes:
        """Read the peer's next handshake message and return its payload.

        Raises:
            InvalidState: it is our turn to write, or the handshake is complete.
            HandshakeError: the message is too short or carries a bad key.
            DecryptionKeyError: a tag did not verify (wrong PSK, prologue or key).
        """
        if self.complete or self.our_turn:
            raise InvalidState("not this side's turn to read a Noise message")
        if len(message) > MAX_MESSAGE:
            raise HandshakeError("handshake failure: message over 65535 bytes")
        sym = self.symmetric
        view = bytes(message)
        pos = 0

        def take(n: int) -> bytes:
            nonlocal pos
            if len(view) - pos < n:
                raise HandshakeError("handshake failure: message too short")
            chunk = view[pos : pos + n]
            pos += n
            return chunk

        for token in self.pattern.messages[self._index]:
            if token == "e":
                self._re = take(DHLEN)
                sym.mix_hash(self._re)
                if self.pattern.has_psk:
                    sym.mix_key(self._re)
            elif token == "s":
                length = DHLEN + (TAGLEN if sym.state.has_key else 0)
                self.remote_static = sym.decrypt_and_hash(take(length))
            elif token == "psk":
                sym.mix_key_and_hash(self._psk)
            else:
                self._token_dh(token)
        rest = view[pos:]
        if sym.state.has_key and len(rest) < TAGLEN:
            raise HandshakeError("handshake failure: message too short")
        payload = sym.decrypt_and_hash(rest)
        self._index += 1
        return payload

    def split(self) -> tuple[CipherState, CipherState]:
        """(initiator -> responder, responder -> initiator) CipherStates.

        Raises:
            InvalidState: the handshake is not complete.
        """
        if not self.complete:
            raise InvalidState("Noise handshake not complete")
        return self.symmetric.split()
