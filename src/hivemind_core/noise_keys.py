"""The hub's protocol v3 (Noise) state: its static key file, the PSK cache, the clients' pins.

A v3 link needs three things the sans-I/O
:class:`~hivemind_bus_client.protocol.connection.Connection` does not own
(docs/protocol-v3.md, "The hub"):

* the hub's **static X25519 key**, kept beside its RSA key as 64 lowercase
  hex characters (no newline, mode 0600), created on first start
  (:func:`hub_noise_key`);
* the **PSK** of each client row: Argon2id of its password, salted with the
  hub's node_id, costs 64 MiB and about 0.2 s, so :class:`PSKCache` keeps the
  last 256 in memory, keyed by the row, the node_id and a SHA-256 binding of
  the password (a password change misses the cache), and lets concurrent
  misses share one derivation in the hub's bounded key executor;
* the **TOFU pin** of each row, ``metadata["noise_pubkey"]``: the client's
  static public key recorded after its first XX handshake, so later
  handshakes may run KK and a different key is refused.

:class:`NoiseHub` ties them together for :meth:`HubNode.new_connection`. The
protocol floor is the stricter of ``server.json`` ``min_protocol_version``
and the row's ``metadata["min_protocol_version"]``: at 3 a v1 client is
refused (1008).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from hivemind_bus_client.protocol.v3offer import derive_psk
from hivemind_bus_client.protocol.v3settings import V3Settings
from hivemind_core.db.private import FILE_MODE, private_dir, private_file

__all__ = [
    "MIN_VERSION_FIELD",
    "NOISE_KEY_FILE",
    "PIN_FIELD",
    "V3_TRANSPORTS",
    "NoiseHub",
    "PSKCache",
    "create_noise_key",
    "hub_noise_key",
    "pinned_key",
    "psk_binding",
    "public_hex",
    "record_pin",
    "row_min_version",
]

LOG = logging.getLogger(__name__)

#: The static key file, beside ``hub_rsa.pem``.
NOISE_KEY_FILE = "hub_noise.key"
#: Row metadata holding the client's pinned static public key (64 hex).
PIN_FIELD = "noise_pubkey"
#: Row metadata holding the client's protocol floor (1 or 3).
MIN_VERSION_FIELD = "min_protocol_version"
#: PSKs the hub keeps in memory.
CACHE_SIZE = 256
#: Transports whose links are offered v3. Not yet HTTP (the reference client
#: posts v3 frames as ``binary=1``, which our HTTP listener does not take) nor
#: MQTT: their v1 clients would otherwise be offered a v3 they cannot finish.
V3_TRANSPORTS = frozenset({"websocket"})

_HEX = frozenset("0123456789abcdef")


def _raw_private(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )


def create_noise_key() -> bytes:
    """A fresh raw 32-byte X25519 private key."""
    return _raw_private(X25519PrivateKey.generate())


def public_hex(private: bytes) -> str:
    """The 64-hex public key of a raw 32-byte X25519 private key."""
    pub = X25519PrivateKey.from_private_bytes(private).public_key()
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def _parse_hex_key(text: str, what: str) -> bytes:
    text = text.strip().lower()
    if len(text) != 64 or not set(text) <= _HEX:
        raise ValueError(f"{what} is not 64 hex characters")
    return bytes.fromhex(text)


def hub_noise_key(directory: str | os.PathLike[str]) -> bytes:
    """The hub's raw static X25519 private key from ``directory``, created on first use.

    The file (:data:`NOISE_KEY_FILE`) holds 64 lowercase hex characters and
    no newline, mode 0600, like the reference's ``*_noise.key``.

    Raises:
        ValueError: the file exists but does not hold a key (the CLI says so in one line).
        OSError: the file cannot be read or created.
    """
    path = Path(directory) / NOISE_KEY_FILE
    if path.exists():
        private_file(path)  # narrowed to 0600 if others could read it
        return _parse_hex_key(path.read_text(encoding="ascii"), str(path))
    key = create_noise_key()
    private_dir(path.parent)
    # Written whole under a temporary name, then renamed: a crash never leaves
    # an empty key file behind, and two first starts cannot mix their keys.
    tmp = path.with_name(f".{NOISE_KEY_FILE}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(key.hex())
            fh.flush()
            os.fsync(fh.fileno())
        os.link(tmp, path)  # fails if another process created the file meanwhile
    except FileExistsError:
        return _parse_hex_key(path.read_text(encoding="ascii"), str(path))
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    LOG.info("created the hub's Noise static key at %s (public %s)", path, public_hex(key))
    return key


# ---- the row ---------------------------------------------------------------------------


def pinned_key(client: Any) -> bytes | None:
    """The client row's pinned static public key, or ``None`` (no pin, or an unreadable one)."""
    meta = getattr(client, "metadata", None)
    value = meta.get(PIN_FIELD) if isinstance(meta, dict) else None
    if not isinstance(value, str) or not value:
        return None
    try:
        return _parse_hex_key(value, "noise_pubkey")
    except ValueError:
        LOG.warning("client %s has an unreadable Noise pin; ignoring it", client.client_id)
        return None


def row_min_version(client: Any) -> int:
    """The row's protocol floor (``metadata["min_protocol_version"]``), 1 when unset."""
    meta = getattr(client, "metadata", None)
    value = meta.get(MIN_VERSION_FIELD) if isinstance(meta, dict) else None
    if isinstance(value, bool) or not isinstance(value, int):
        return 1
    return value


def record_pin(database: Any, client_id: int, pubkey_hex: str) -> bool:
    """Pin ``pubkey_hex`` in the row unless it already holds a pin (trust on first use).

    Blocking (a database read and write): run it in a worker thread. Returns
    whether the pin was written.
    """
    client = database.get_client(client_id)
    if client is None or client.metadata.get(PIN_FIELD):
        return False
    client.metadata[PIN_FIELD] = pubkey_hex
    database.update_client(client)
    return True


# ---- the PSK cache ---------------------------------------------------------------------


def psk_binding(node_id: str, password: str) -> str:
    """Hex SHA-256 of ``hivemind-noise-psk-binding 0x00 node_id 0x00 password``.

    What a cached PSK is valid for: another password or node_id gives another
    binding, so the cache never hands out a PSK of an old password.
    """
    data = b"hivemind-noise-psk-binding\x00" + node_id.encode() + b"\x00" + password.encode()
    return hashlib.sha256(data).hexdigest()


_CacheKey = tuple[int, str, str]


class PSKCache:
    """The last :data:`CACHE_SIZE` PSKs, and the derivations under way.

    ``derivations`` counts the Argon2id runs started: a burst of connections
    of one client that all miss shares one.
    """

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self.derivations = 0
        self._cache: OrderedDict[_CacheKey, bytes] = OrderedDict()
        self._running: dict[_CacheKey, asyncio.Future[bytes]] = {}

    @staticmethod
    def key(client_id: int, node_id: str, password: str) -> _CacheKey:
        """The cache key of one row's password at one hub."""
        return (client_id, node_id, psk_binding(node_id, password))

    def get(self, key: _CacheKey) -> bytes | None:
        """The cached PSK for ``key`` (marked recently used), or ``None``."""
        psk = self._cache.get(key)
        if psk is not None:
            self._cache.move_to_end(key)
        return psk

    def put(self, key: _CacheKey, psk: bytes) -> None:
        """Remember ``psk``; the least recently used entry goes past :attr:`size`."""
        self._cache[key] = psk
        self._cache.move_to_end(key)
        while len(self._cache) > self.size:
            self._cache.popitem(last=False)

    def __len__(self) -> int:
        return len(self._cache)

    async def obtain(
        self,
        key: _CacheKey,
        derive: Callable[[], Awaitable[bytes]],
    ) -> bytes:
        """The PSK for ``key``: cached, or from the derivation under way, or ``derive()``.

        A failed derivation (e.g. the key executor is full) raises in every
        waiter and is not cached.
        """
        psk = self.get(key)
        if psk is not None:
            return psk
        running = self._running.get(key)
        if running is None:
            self.derivations += 1
            running = asyncio.ensure_future(derive())
            self._running[key] = running
            running.add_done_callback(lambda fut: self._settled(key, fut))
        return await asyncio.shield(running)

    def _settled(self, key: _CacheKey, fut: asyncio.Future[bytes]) -> None:
        if self._running.get(key) is fut:
            del self._running[key]
        if not fut.cancelled() and fut.exception() is None:
            self.put(key, fut.result())


# ---- the hub's v3 side -----------------------------------------------------------------


class NoiseHub:
    """What one hub knows for v3: its static key, the PSK cache, the protocol floor.

    Args:
        static_private: the hub's raw 32-byte X25519 key (:func:`hub_noise_key`).
        min_protocol_version: the hub-wide floor (``server.json``); a row may raise it.
    """

    def __init__(self, static_private: bytes, min_protocol_version: int = 1) -> None:
        self.static_private = static_private
        self.public_hex = public_hex(static_private)
        self.min_protocol_version = min_protocol_version
        self.psks = PSKCache()
        #: Rows whose pin is being written (one write per row at a time).
        self.pinning: set[int] = set()
        #: Held while a link takes its PSK and runs its handshake step; its
        #: holder yields one loop turn, so links woken together by one shared
        #: derivation take turns instead of stalling the loop in one.
        self.handoff = asyncio.Lock()

    def min_version(self, client: Any) -> int:
        """The stricter of the hub-wide and the row's protocol floor."""
        return max(self.min_protocol_version, row_min_version(client))

    def settings_for(self, client: Any, node_id: str) -> V3Settings | None:
        """The ``v3`` settings of a new link for ``client``'s row; ``None`` without a password.

        The PSK is filled in on a cache hit; otherwise the link asks for it
        (``PSKNeeded``) and :meth:`psk_for` derives it off the loop.
        """
        password = getattr(client, "password", None)
        if not password:
            return None
        client_id = getattr(client, "client_id", None)
        psk = None
        if isinstance(client_id, int):
            psk = self.psks.get(PSKCache.key(client_id, node_id, password))
        return V3Settings(
            static_private=self.static_private,
            psk=psk,
            pinned_key=pinned_key(client),
            min_protocol_version=self.min_version(client),
            legacy_offer=True,
        )

    async def psk_for(
        self,
        client: Any,
        node_id: str,
        run: Callable[[Callable[[str, str], bytes], str, str], Awaitable[bytes]],
    ) -> bytes:
        """The row's PSK for ``node_id``: cached, shared with a running derivation, or
        derived by ``run(derive_psk, password, node_id)`` (the hub's key executor).

        Raises:
            KeyWorkBusy: the executor's queue is full (passed on from ``run``).
        """
        password: str = client.password
        key = PSKCache.key(client.client_id, node_id, password)

        async def derive() -> bytes:
            LOG.debug("deriving the v3 PSK of client %s", client.client_id)
            psk = await run(derive_psk, password, node_id)
            LOG.debug("derived the v3 PSK of client %s", client.client_id)
            return psk

        return await self.psks.obtain(key, derive)
