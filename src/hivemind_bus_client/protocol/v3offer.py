"""HiveMind v3 negotiation: the offer, the client's choice, the prologue and the PSK.

See ``docs/protocol-v3.md`` ("Handshake", "PSK"). Pure functions of payloads
and passwords; :mod:`~hivemind_bus_client.protocol.v3handshake` runs the Noise
messages with them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from hivemind_bus_client.protocol.noise import protocol_name

__all__ = [
    "CLIENT_ENCODINGS",
    "HUB_CIPHERS",
    "HUB_ENCODINGS",
    "KK",
    "REASON_FAILURE",
    "REASON_HUB_PIN_MISMATCH",
    "REASON_NEEDS_NOISE",
    "REASON_NEEDS_PASSWORD",
    "REASON_PIN_MISMATCH",
    "SUITES",
    "XX",
    "build_prologue",
    "canonical_json",
    "client_choice",
    "derive_psk",
    "hub_offer",
]

XX = "XXpsk2"  #: first contact
KK = "KKpsk0"  #: both sides hold each other's pin
#: Suites in preference order (the client prefers ChaChaPoly).
SUITES: tuple[str, ...] = ("25519_ChaChaPoly_SHA256", "25519_AESGCM_SHA256")
#: The v1 lists the offer still carries (they enter the prologue, nothing else).
HUB_ENCODINGS: tuple[str, ...] = (
    "JSON-B64",
    "JSON-URLSAFE-B64",
    "JSON-B91",
    "JSON-Z85B",
    "JSON-Z85P",
    "JSON-B32",
    "JSON-HEX",
)
HUB_CIPHERS: tuple[str, ...] = ("CHACHA20-POLY1305", "AES-GCM")
#: The encodings list the client sends in m1 (the reference client's order).
CLIENT_ENCODINGS: tuple[str, ...] = (
    "JSON-B91",
    "JSON-Z85B",
    "JSON-Z85P",
    "JSON-B64",
    "JSON-URLSAFE-B64",
    "JSON-B32",
    "JSON-HEX",
)

#: Close reasons (all with close code 1008).
REASON_NEEDS_NOISE = "this node requires the v3 Noise handshake"
REASON_NEEDS_PASSWORD = "this node requires protocol v3 (the Noise handshake)"
REASON_FAILURE = "handshake failure: "
REASON_PIN_MISMATCH = "client Noise static key contradicts the pinned key"
#: The client's own refusal when the hub's key is not the pinned one.
REASON_HUB_PIN_MISMATCH = "hub Noise static key contradicts the pinned key"

# Argon2id parameters of the PSK: t=3, m=64 MiB, p=1, 32 bytes.
_ARGON_ITERATIONS = 3
_ARGON_MEMORY_KIB = 65536
_ARGON_LANES = 1


def derive_psk(password: str, node_id: str) -> bytes:
    """The 32-byte Noise PSK of a password for one hub.

    Argon2id(password UTF-8, salt = SHA-256(node_id UTF-8), t=3, m=65536 KiB,
    p=1). Deliberately expensive: 64 MiB of memory and a few hundred
    milliseconds of one core per call (about 0.4 s on a busy 2-core test
    machine), so callers run it in an executor and cache the result per
    (access key, node_id). Pure and thread-safe; it releases no secret.
    """
    salt = hashlib.sha256(node_id.encode("utf-8")).digest()
    kdf = Argon2id(
        salt=salt,
        length=32,
        iterations=_ARGON_ITERATIONS,
        lanes=_ARGON_LANES,
        memory_cost=_ARGON_MEMORY_KIB,
    )
    return kdf.derive(password.encode("utf-8"))


def canonical_json(value: Any) -> bytes:
    """Keys sorted at every level, no spaces, non-ASCII kept raw, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def build_prologue(
    hello: Mapping[str, Any], offer: Mapping[str, Any], pattern: str, suite: str
) -> bytes:
    """``canonical(HELLO payload) || canonical(offer payload) || protocol name``.

    ``hello`` and ``offer`` must be exactly the payloads of the hub's first
    two frames, as sent and as received.
    """
    return canonical_json(hello) + canonical_json(offer) + protocol_name(pattern, suite).encode()


def hub_offer(*, pinned: bool, binarize: bool = False) -> dict[str, Any]:
    """The hub's HANDSHAKE offer payload, keys in wire order.

    ``pinned``: the hub holds a Noise pin for this access key, so it offers KK
    too. Keep the returned dict: the prologue is computed from it.
    """
    return {
        "max_protocol_version": 3,
        "binarize": binarize,
        "encodings": list(HUB_ENCODINGS),
        "ciphers": list(HUB_CIPHERS),
        "noise": {"patterns": [KK, XX] if pinned else [XX], "suites": list(SUITES)},
    }


def client_choice(
    offer: Mapping[str, Any],
    *,
    has_password: bool = True,
    has_pin: bool = False,
    kk_failed: bool = False,
    max_protocol_version: int = 3,
) -> tuple[str, str] | None:
    """The (pattern, suite) the client runs for ``offer``, or ``None`` for no v3.

    v3 needs a password, both versions at 3 or more (an offer without
    ``max_protocol_version`` counts as 1), a ``noise`` dict, and a mutual
    suite and pattern. KK only with a pin, KK offered, and no KK just failed.
    ``None`` means the caller falls back to the v1 handshake (if it can).
    """
    noise = offer.get("noise")
    version = offer.get("max_protocol_version", 1)
    if not has_password or max_protocol_version < 3 or not isinstance(noise, dict):
        return None
    if not isinstance(version, int) or version < 3:
        return None
    suites = noise.get("suites") or []
    patterns = noise.get("patterns") or []
    suite = next((s for s in SUITES if s in suites), None)
    if suite is None:
        return None
    if has_pin and not kk_failed and KK in patterns:
        return KK, suite
    if XX in patterns:
        return XX, suite
    return None
