"""Key material for HiveMind handshakes and INTERCOM, all through ``cryptography``.

Password handshake (the reference's "PBKDF2 handshake")
    Each side sends an *envelope*: lowercase hex of ``iv || SHA-256(iv || password)``
    cut to 48 hex characters, ``iv`` being 8 random bytes. Each side checks the
    peer's envelope against its own password (a wrong password is caught here,
    before any encrypted frame) and both derive the session key
    ``PBKDF2-HMAC-SHA256(password, salt = iv_a XOR iv_b, 100000, 32 bytes)``.

RSA handshake
    The hub draws a 32-byte secret, wraps it with RSA-OAEP (SHA-1, MGF1-SHA-1)
    to the client's public key and signs the wrapped secret with RSA-PSS
    (SHA-256, MGF1-SHA-256, 32-byte salt). The envelope is hex of
    ``signature || wrapped``; the secret is the session key.

INTERCOM (hybrid; ``docs/protocol.md``, INTERCOM)
    A random AES-256-GCM key per message (16-byte nonce) seals the inner
    message; the key is wrapped with RSA-OAEP to the recipient and the AES
    ciphertext is signed with the sender's key (RSA-PSS as above). Every field
    travels as standard Base64 text.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from hivemind_bus_client.exceptions import (
    AuthenticationFailed,
    ConfigurationError,
    CryptoError,
    DecodingError,
    DecryptionKeyError,
)

__all__ = [
    "PBKDF2_ITERATIONS",
    "create_private_key",
    "derive_password_key",
    "envelope_iv",
    "hybrid_decrypt",
    "hybrid_encrypt",
    "load_private_key",
    "load_public_key",
    "password_envelope",
    "private_key_pem",
    "public_key_pem",
    "rsa_open_handshake",
    "rsa_seal_handshake",
    "rsa_sign",
    "rsa_unwrap",
    "rsa_verify",
    "rsa_wrap",
    "secret_bytes",
    "verify_password_envelope",
]

PBKDF2_ITERATIONS = 100_000
ENVELOPE_HEX_LEN = 48
IV_SIZE = 8
RSA_BITS = 2048

_OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)

PrivateKey = rsa.RSAPrivateKey
PublicKey = rsa.RSAPublicKey


# -- password handshake ------------------------------------------------------------


def secret_bytes(secret: str) -> bytes:
    """The UTF-8 bytes of a password or pre-shared key, with no part of it in any error.

    Text read from a command line or a file in another encoding can hold lone
    surrogates standing for raw bytes: those bytes are used as they were.
    Python's own encoding error would quote the character and its position.

    Raises:
        ConfigurationError: text that stands for no bytes at all.
    """
    try:
        return secret.encode("utf-8")
    except UnicodeEncodeError:
        pass
    try:
        return secret.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise ConfigurationError("a password or key is not valid text") from None


def password_envelope(password: str, iv: bytes | None = None) -> str:
    """The 48-hex-character envelope that proves knowledge of ``password``."""
    if iv is None:
        iv = os.urandom(IV_SIZE)
    digest = hashlib.sha256(iv + secret_bytes(password)).digest()
    return (iv + digest).hex()[:ENVELOPE_HEX_LEN]


def envelope_iv(envelope: str) -> bytes:
    """The IV at the front of an envelope; raises :class:`DecodingError` if malformed."""
    if not isinstance(envelope, str) or not 48 <= len(envelope) <= 80:
        raise DecodingError("password envelope must be 48 to 80 hex characters")
    try:
        return bytes.fromhex(envelope[: IV_SIZE * 2])
    except ValueError:
        raise DecodingError("password envelope is not hex") from None


def verify_password_envelope(envelope: str, password: str) -> bool:
    """Constant-time check that ``envelope`` was made with ``password``."""
    try:
        iv = envelope_iv(envelope)
    except DecodingError:
        return False
    digest = hashlib.sha256(iv + secret_bytes(password)).digest()
    expected = (iv + digest).hex()[: len(envelope)]
    return hmac.compare_digest(expected, envelope.lower())


def derive_password_key(password: str, iv_a: bytes, iv_b: bytes) -> bytes:
    """Session key of a password handshake from both sides' IVs (order does not matter)."""
    if len(iv_a) != len(iv_b):
        raise DecodingError("handshake IVs differ in length")
    salt = bytes(a ^ b for a, b in zip(iv_a, iv_b, strict=True))
    kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=salt, iterations=PBKDF2_ITERATIONS)
    return kdf.derive(secret_bytes(password))


# -- RSA keys ------------------------------------------------------------------------


def create_private_key(bits: int = RSA_BITS) -> PrivateKey:
    """A new RSA private key (2048 bits by default, as the reference)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def private_key_pem(key: PrivateKey) -> str:
    """PKCS#1 PEM text of a private key (the reference's on-disk format)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode("ascii")


def public_key_pem(key: PrivateKey | PublicKey) -> str:
    """SubjectPublicKeyInfo PEM text of a public key (what HELLO carries)."""
    pub = key.public_key() if isinstance(key, rsa.RSAPrivateKey) else key
    return pub.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def load_private_key(pem: str | bytes) -> PrivateKey:
    """Parse a PEM private key (PKCS#1 or PKCS#8); raises :class:`CryptoError`."""
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise CryptoError(f"not a usable private key: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CryptoError("only RSA private keys are supported")
    return key


def load_public_key(pem: str | bytes) -> PublicKey:
    """Parse a PEM public key; raises :class:`CryptoError`."""
    if isinstance(pem, str):
        try:
            data = pem.encode("ascii")
        except UnicodeEncodeError:
            raise CryptoError("public key PEM must be ASCII") from None
    else:
        data = pem
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise CryptoError(f"not a usable public key: {exc}") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise CryptoError("only RSA public keys are supported")
    return key


def rsa_wrap(public_key: PublicKey, data: bytes) -> bytes:
    """RSA-OAEP (SHA-1) encryption, as the reference."""
    try:
        return public_key.encrypt(data, _OAEP)
    except ValueError as exc:
        raise CryptoError(f"RSA-OAEP cannot wrap this: {exc}") from None


def rsa_unwrap(private_key: PrivateKey, data: bytes) -> bytes:
    """RSA-OAEP (SHA-1) decryption; raises :class:`DecryptionKeyError`."""
    try:
        return private_key.decrypt(data, _OAEP)
    except ValueError:
        raise DecryptionKeyError("RSA-OAEP decryption failed") from None


def rsa_sign(private_key: PrivateKey, data: bytes) -> bytes:
    """RSA-PSS (SHA-256, 32-byte salt) signature, as the reference."""
    return private_key.sign(data, _PSS, hashes.SHA256())


def rsa_verify(public_key: PublicKey, signature: bytes, data: bytes) -> bool:
    """Check an RSA-PSS (SHA-256) signature."""
    try:
        public_key.verify(signature, data, _PSS, hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


# -- RSA handshake ---------------------------------------------------------------------


def rsa_seal_handshake(client_public: PublicKey, hub_private: PrivateKey) -> tuple[str, bytes]:
    """Hub side: a fresh 32-byte session key and the hex envelope that carries it."""
    secret = os.urandom(32)
    wrapped = rsa_wrap(client_public, secret)
    signature = rsa_sign(hub_private, wrapped)
    return (signature + wrapped).hex(), secret


def rsa_open_handshake(
    envelope: str, client_private: PrivateKey, hub_public: PublicKey | None = None
) -> bytes:
    """Client side: the session key from a hub's RSA envelope.

    With ``hub_public`` the signature must verify, else :class:`AuthenticationFailed`.
    """
    try:
        raw = bytes.fromhex(envelope)
    except (ValueError, TypeError):
        raise DecodingError("RSA handshake envelope is not hex") from None
    size = client_private.key_size // 8
    sig_size = hub_public.key_size // 8 if hub_public is not None else len(raw) - size
    if sig_size <= 0 or len(raw) != sig_size + size:
        raise DecodingError("RSA handshake envelope has the wrong length")
    signature, wrapped = raw[:sig_size], raw[sig_size:]
    if hub_public is not None and not rsa_verify(hub_public, signature, wrapped):
        raise AuthenticationFailed("the hub's RSA handshake signature does not verify")
    return rsa_unwrap(client_private, wrapped)


# -- hybrid INTERCOM envelope ----------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: Any, field: str) -> bytes:
    if not isinstance(value, str):
        raise DecodingError(f"INTERCOM field {field!r} must be base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise DecodingError(f"INTERCOM field {field!r} is not base64") from None


def hybrid_encrypt(
    plaintext: bytes, recipient: PublicKey, sender: PrivateKey | None = None
) -> dict[str, str]:
    """Seal ``plaintext`` for ``recipient``; sign it when ``sender`` is given."""
    key = os.urandom(32)
    nonce = os.urandom(16)
    sealed = AESGCM(key).encrypt(nonce, plaintext, None)
    ciphertext, tag = sealed[:-16], sealed[-16:]
    out = {
        "encrypted_key": _b64(rsa_wrap(recipient, key)),
        "ciphertext": _b64(ciphertext),
        "tag": _b64(tag),
        "nonce": _b64(nonce),
    }
    if sender is not None:
        out["signature"] = _b64(rsa_sign(sender, ciphertext))
    return out


def hybrid_decrypt(
    payload: dict[str, Any], recipient: PrivateKey, sender: PublicKey | None = None
) -> bytes:
    """Open a hybrid INTERCOM payload.

    With ``sender`` the signature must be present and verify.

    Raises:
        DecodingError: a missing or malformed field.
        DecryptionKeyError: not for us, or tampered.
        AuthenticationFailed: the sender's signature is missing or wrong.
    """
    if not isinstance(payload, dict):
        raise DecodingError("INTERCOM payload must be an object")
    try:
        wrapped = _unb64(payload["encrypted_key"], "encrypted_key")
        ciphertext = _unb64(payload["ciphertext"], "ciphertext")
        tag = _unb64(payload["tag"], "tag")
        nonce = _unb64(payload["nonce"], "nonce")
    except KeyError as exc:
        raise DecodingError(f"INTERCOM payload lacks {exc}") from None
    if sender is not None:
        sig = payload.get("signature")
        if sig is None or not rsa_verify(sender, _unb64(sig, "signature"), ciphertext):
            raise AuthenticationFailed("INTERCOM signature missing or invalid")
    key = rsa_unwrap(recipient, wrapped)
    if len(key) != 32 or len(nonce) != 16 or len(tag) != 16:
        raise DecodingError("INTERCOM key, nonce or tag has the wrong size")
    try:
        return AESGCM(key).decrypt(nonce, ciphertext + tag, None)
    except InvalidTag:
        raise DecryptionKeyError("INTERCOM payload failed authentication") from None
