"""INTERCOM: end-to-end sealed messages that relays can carry but not read.

An INTERCOM message is ``HiveMessage(INTERCOM, payload=<sealed dict>)``, usually
carried inside a PROPAGATE or an ESCALATE so that it reaches its recipient
across many hops (``docs/hub.md``, routing of INTERCOM). Relays
neither read it nor learn who it is for: the sealed dict holds no recipient,
and :func:`seal` leaves the envelope's ``target_pubkey`` unset unless asked.
Each node the carrier reaches tries to open it; the one whose private key
unwraps it handles the inner message.

Two payload forms exist:

* **hybrid** (client 0.8.0a1, ``docs/protocol.md``; what :func:`seal` writes): a
  random AES-256-GCM key per message (16-byte nonce) seals the inner message's
  JSON; the key is wrapped with RSA-OAEP to the recipient; the sender signs the
  AES ciphertext with RSA-PSS. Keys ``encrypted_key``, ``ciphertext``, ``tag``,
  ``nonce``, ``signature``, all standard Base64 text.
* **legacy** (client 0.4.4, ``seal(..., legacy=True)``): the inner JSON itself
  is RSA-OAEP encrypted (so at most 214 bytes with RSA-2048) and signed; keys
  ``ciphertext`` and ``signature``. Recognised by the absence of ``encrypted_key``.

:func:`open_sealed` tells apart the outcomes a router must treat differently:
not for this node (pass it on, nothing to count), tampered (drop and count),
untrusted or unsigned sender (drop and count), or opened.

Trust: the signature is checked against every key in ``trusted_keys`` (the
node identity's ``trusted_keys``). Only a message signed by one of them is
accepted, which is how ``trusted_keys`` gates BUS injection from INTERCOM
(untrusted INTERCOM is dropped).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hivemind_bus_client.exceptions import CryptoError, DecryptionKeyError, HiveMindError
from hivemind_bus_client.protocol import crypto
from hivemind_bus_client.protocol.limits import check_wrap_depth
from hivemind_bus_client.protocol.message import HiveMessage, HiveMessageType

LOG = logging.getLogger(__name__)

__all__ = [
    "IntercomResult",
    "Opened",
    "TrustStore",
    "is_sealed",
    "open_sealed",
    "seal",
]

#: Largest inner JSON the legacy RSA-only form can carry with a 2048-bit key.
LEGACY_MAX_PLAINTEXT = 214


class IntercomResult(Enum):
    """What opening an INTERCOM payload gave."""

    OPENED = "opened"
    #: Our key does not unwrap it: someone else's message (not an error).
    NOT_FOR_US = "not_for_us"
    #: Ours, but the AES-GCM tag (or the JSON inside) does not check out.
    TAMPERED = "tampered"
    #: Ours and intact, but unsigned or signed by a key we do not trust.
    UNTRUSTED = "untrusted"
    #: Not an INTERCOM payload at all (no ciphertext).
    MALFORMED = "malformed"


@dataclass(frozen=True, slots=True)
class Opened:
    """Outcome of :func:`open_sealed`; ``message`` and ``sender`` only when OPENED.

    ``sender`` is the alias of the trusted key that signed the message.
    """

    result: IntercomResult
    message: HiveMessage | None = None
    sender: str | None = None


class TrustStore:
    """Trusted public keys by alias, parsed once.

    Args:
        keys: ``alias -> PEM`` (a ``NodeIdentity.trusted_keys`` dict) or an
            iterable of PEM strings (aliases are then their index).

    Unparseable PEMs are logged and ignored: a broken entry must not stop the node.
    """

    def __init__(self, keys: Mapping[str, str] | Iterable[str] = ()) -> None:
        self._keys: dict[str, crypto.PublicKey] = {}
        self._pems: set[str] = set()
        items = (
            keys.items() if isinstance(keys, Mapping) else ((str(i), k) for i, k in enumerate(keys))
        )
        for alias, pem in items:
            self.add(alias, pem)

    def add(self, alias: str, pem: str) -> bool:
        """Trust ``pem`` under ``alias``; False when it is not a usable RSA public key."""
        try:
            self._keys[alias] = crypto.load_public_key(pem)
        except CryptoError:
            LOG.warning("trusted key %r is not a usable RSA public key; ignored", alias)
            return False
        self._pems.add(_norm_pem(pem))
        return True

    def __contains__(self, pem: object) -> bool:
        return isinstance(pem, str) and _norm_pem(pem) in self._pems

    def __len__(self) -> int:
        return len(self._keys)

    def signer(self, signature: bytes, data: bytes) -> str | None:
        """Alias of the trusted key whose signature over ``data`` this is, or None."""
        for alias, key in self._keys.items():
            if crypto.rsa_verify(key, signature, data):
                return alias
        return None


def _norm_pem(pem: str) -> str:
    return "".join(pem.split())


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: Any) -> bytes:
    if not isinstance(value, str):
        raise ValueError("not base64 text")
    return base64.b64decode(value, validate=True)


def is_sealed(payload: Any) -> bool:
    """True when ``payload`` looks like an INTERCOM payload (either form)."""
    return isinstance(payload, dict) and "ciphertext" in payload


def seal(
    inner: HiveMessage,
    recipient: crypto.PublicKey | str,
    sender: crypto.PrivateKey | None,
    *,
    legacy: bool = False,
    target_pubkey: str | None = None,
) -> HiveMessage:
    """Build an INTERCOM message carrying ``inner`` to ``recipient``.

    Args:
        inner: the message the recipient will handle (typically BUS).
        recipient: the recipient's RSA public key (object or PEM).
        sender: this node's private key; signs the ciphertext. Without it the
            message is unsigned and every recipient will refuse it as untrusted.
        legacy: write the 0.4.4 RSA-only form (inner JSON of at most 214 bytes).
        target_pubkey: set the envelope's ``target_pubkey`` (the reference
            receivers' fast "not for me" check). Leave it unset to keep the
            recipient hidden from relays.

    Raises:
        CryptoError: the recipient key is unusable, or the inner message is too
            large for the legacy form.
    """
    pub = crypto.load_public_key(recipient) if isinstance(recipient, str) else recipient
    plaintext = inner.serialize().encode("utf-8")
    if legacy:
        if len(plaintext) > LEGACY_MAX_PLAINTEXT:
            raise CryptoError(
                f"legacy INTERCOM carries at most {LEGACY_MAX_PLAINTEXT} bytes, got {len(plaintext)}"
            )
        ct = crypto.rsa_wrap(pub, plaintext)
        payload: dict[str, str] = {"ciphertext": _b64(ct)}
        if sender is not None:
            payload["signature"] = _b64(crypto.rsa_sign(sender, ct))
    else:
        payload = crypto.hybrid_encrypt(plaintext, pub, sender)
    return HiveMessage(HiveMessageType.INTERCOM, payload, target_pubkey=target_pubkey)


def open_sealed(payload: Any, private_key: crypto.PrivateKey, trusted: TrustStore) -> Opened:
    """Try to open an INTERCOM payload with this node's key.

    Order matters: first the key unwrap (fails → not for us), then integrity
    (AES-GCM tag → tampered), then the sender's signature against ``trusted``
    (→ untrusted). Never raises for bad input.
    """
    if not is_sealed(payload):
        return Opened(IntercomResult.MALFORMED)
    try:
        ciphertext = _unb64(payload["ciphertext"])
        signature = _unb64(payload["signature"]) if "signature" in payload else None
        if "encrypted_key" in payload:
            wrapped = _unb64(payload["encrypted_key"])
            tag = _unb64(payload.get("tag"))
            nonce = _unb64(payload.get("nonce"))
        else:
            wrapped = tag = nonce = b""
    except (ValueError, binascii.Error):
        return Opened(IntercomResult.MALFORMED)

    if wrapped:
        try:
            key = crypto.rsa_unwrap(private_key, wrapped)
        except DecryptionKeyError:
            return Opened(IntercomResult.NOT_FOR_US)
        if len(key) != 32 or len(nonce) != 16 or len(tag) != 16:
            return Opened(IntercomResult.TAMPERED)
        try:
            plaintext = AESGCM(key).decrypt(nonce, ciphertext + tag, None)
        except InvalidTag:
            return Opened(IntercomResult.TAMPERED)
    else:
        try:
            plaintext = crypto.rsa_unwrap(private_key, ciphertext)
        except DecryptionKeyError:
            return Opened(IntercomResult.NOT_FOR_US)

    sender = trusted.signer(signature, ciphertext) if signature else None
    if sender is None:
        return Opened(IntercomResult.UNTRUSTED)
    try:
        obj = json.loads(plaintext.decode("utf-8"))
        if isinstance(obj, dict):
            check_wrap_depth(obj.get("msg_type"), obj.get("payload"))
        inner = HiveMessage.deserialize(obj)
    except (ValueError, UnicodeDecodeError, RecursionError, HiveMindError):
        # Signed by a trusted key yet not a message: treat as tampering.
        return Opened(IntercomResult.TAMPERED)
    return Opened(IntercomResult.OPENED, inner, sender)
