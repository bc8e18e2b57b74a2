"""The client's protocol v3 files: its Noise static key, its hub pins, its PSK cache.

See docs/client.md ("Protocol v3 files"). Three pieces of state, kept where
the 1.2.12a1 reference client keeps them, so both clients can share one
identity folder:

* **static key**: the identity's ``noise_key`` path, else
  ``<identity dir>/<identity name>_noise.key``: 64 lowercase hex characters of
  the raw X25519 private key, mode 0600, no newline, created on first use.
* **pins** (trust on first use): identity field ``pinned_noise_keys``
  ``{"host:port": hex public key}``, written into the identity file once the
  hub's m2 verified. A pin that contradicts the hub is a permanent refusal
  until ``hivemind-client forget-server`` clears it.
* **PSK cache**: ``<static key path minus extension>_psks.json``,
  ``{"<sha256(access_key) hex[:16]>@<node_id>": "<psk hex>"}``, mode 0600, at
  most :data:`MAX_CACHED_PSKS` entries (the oldest go first). It saves the
  Argon2id derivation (64 MiB, a fraction of a second) on every reconnect.

Writes are atomic (temporary file, then rename). Nothing here logs a secret.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from hivemind_bus_client.exceptions import ConfigurationError
from hivemind_bus_client.identity import NodeIdentity, write_private

__all__ = [
    "MAX_CACHED_PSKS",
    "PINS_FIELD",
    "PskCache",
    "forget_pins",
    "get_pin",
    "load_static_key",
    "new_static_key",
    "noise_key_path",
    "psk_cache_key",
    "psk_cache_path",
    "read_static_key",
    "set_pin",
    "write_static_key",
]

LOG = logging.getLogger(__name__)

#: Identity field holding the hub pins.
PINS_FIELD = "pinned_noise_keys"
#: Identity field naming the static key file.
KEY_FIELD = "noise_key"
#: Most entries the PSK cache keeps.
MAX_CACHED_PSKS = 32


# -- the static key ---------------------------------------------------------------------


def noise_key_path(identity: NodeIdentity) -> Path:
    """The identity's ``noise_key``, else ``<identity dir>/<name>_noise.key``."""
    explicit = identity._get(KEY_FIELD)
    if isinstance(explicit, str) and explicit:
        return Path(explicit).expanduser()
    return identity.path.parent / f"{identity.name}_noise.key"


def new_static_key() -> bytes:
    """A fresh raw 32-byte X25519 private key."""
    return X25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )


def read_static_key(path: str | os.PathLike[str]) -> bytes | None:
    """The 32-byte static private key in ``path``, or ``None`` when there is no file.

    Raises:
        ConfigurationError: the file exists but is not 64 hex characters.
        OSError: the file exists but cannot be read.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        key = bytes.fromhex(raw.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) != 32:
        raise ConfigurationError(f"{path} is not a Noise static key (64 hex characters)")
    return key


def write_static_key(path: str | os.PathLike[str], key: bytes) -> None:
    """Store ``key`` as 64 lowercase hex characters, no newline, mode 0600."""
    write_private(Path(path), key.hex())
    LOG.info("saved a new Noise static key in %s", path)


def load_static_key(path: str | os.PathLike[str]) -> bytes:
    """The static private key in ``path``, created (0600) when missing.

    Raises:
        ConfigurationError: the file exists but is not 64 hex characters.
        OSError: the file cannot be read or created.
    """
    key = read_static_key(path)
    if key is None:
        key = new_static_key()
        write_static_key(path, key)
    return key


# -- pins ---------------------------------------------------------------------------------


def _pins(identity: NodeIdentity) -> dict[str, str]:
    pins = identity._get(PINS_FIELD)
    return {k: v for k, v in pins.items() if isinstance(v, str)} if isinstance(pins, dict) else {}


def get_pin(identity: NodeIdentity, where: str) -> bytes | None:
    """The pinned 32-byte hub key for ``host:port``, or ``None`` (an unreadable pin too)."""
    text = _pins(identity).get(where)
    if text is None:
        return None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 32:
        LOG.warning("ignoring an unreadable Noise pin for %s", where)
        return None
    return key


def set_pin(identity: NodeIdentity, where: str, public_key: bytes, *, save: bool = True) -> None:
    """Pin ``public_key`` for ``host:port`` and (``save``) write the identity file."""
    pins = _pins(identity)
    pins[where] = public_key.hex()
    identity._set(PINS_FIELD, pins)
    if save:
        identity.save()


def forget_pins(identity: NodeIdentity, where: str | None = None) -> list[str]:
    """Drop the pin of ``host:port`` (every pin when ``None``); the ``host:port`` dropped.

    Saves the identity file when something was dropped.
    """
    pins = _pins(identity)
    gone = list(pins) if where is None else [w for w in pins if w == where]
    for name in gone:
        del pins[name]
    if gone:
        identity._set(PINS_FIELD, pins or None)
        identity.save()
    return gone


# -- the PSK cache ------------------------------------------------------------------------


def psk_cache_path(key_path: str | os.PathLike[str]) -> Path:
    """``<static key path minus extension>_psks.json``."""
    path = Path(key_path)
    return path.with_name(f"{path.stem}_psks.json")


def psk_cache_key(access_key: str, node_id: str) -> str:
    """``<sha256(access_key) hex[:16]>@<node_id>``: the access key never lands on disk."""
    return hashlib.sha256(access_key.encode("utf-8")).hexdigest()[:16] + "@" + node_id


class PskCache:
    """The PSK cache file (see the module docstring); every call reads or writes it."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def _load(self) -> dict[str, str]:
        try:
            data: Any = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            LOG.warning("PSK cache %s is unreadable; starting it afresh", self.path)
            return {}
        if not isinstance(data, dict):
            return {}
        return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}

    def _store(self, entries: dict[str, str]) -> None:
        try:
            write_private(self.path, json.dumps(entries, indent=2))
        except OSError as exc:
            LOG.warning("cannot write the PSK cache %s: %s", self.path, exc.strerror or exc)

    def get(self, access_key: str, node_id: str) -> bytes | None:
        """The cached PSK of this access key at the hub ``node_id``, or ``None``."""
        text = self._load().get(psk_cache_key(access_key, node_id))
        if text is None:
            return None
        try:
            psk = bytes.fromhex(text)
        except ValueError:
            return None
        return psk if len(psk) == 32 else None

    def put(self, access_key: str, node_id: str, psk: bytes) -> None:
        """Remember ``psk``; the oldest entries go beyond :data:`MAX_CACHED_PSKS`."""
        entries = self._load()
        name = psk_cache_key(access_key, node_id)
        entries.pop(name, None)
        entries[name] = psk.hex()
        while len(entries) > MAX_CACHED_PSKS:
            del entries[next(iter(entries))]
        self._store(entries)

    def drop(self, access_key: str, node_id: str) -> bool:
        """Forget one entry (after a failed handshake); ``False`` if there was none."""
        entries = self._load()
        if entries.pop(psk_cache_key(access_key, node_id), None) is None:
            return False
        self._store(entries)
        return True

    def clear(self) -> None:
        """Forget every entry (the password changed)."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def __len__(self) -> int:
        return len(self._load())
