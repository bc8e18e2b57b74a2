"""What a client link attempt needs for protocol v3, and what it learns from one.

:class:`V3Client` is the engine's v3 half (docs/client.md, "Protocol v3"):

* :meth:`V3Client.settings` builds the ``V3Settings`` of each attempt (our static
  key, the pin of this ``host:port``, ``max_protocol_version``, whether a KK
  attempt just failed), or ``None`` when v3 is off: no password, or
  ``max_protocol_version`` below 3. The hub's offer still decides: a 4.0.0
  hub offers no ``noise`` and the link is v1, as before.
* :meth:`V3Client.psk_for` answers a ``PSKNeeded``: the cached PSK, else
  Argon2id (64 MiB) in a worker thread, never on the event loop.
* :meth:`V3Client.keyed` records what a keyed v3 link proved: the hub's pin
  after XX (trust on first use) and the PSK in the cache.
* :meth:`V3Client.failed` says what a failed attempt means: retry once (a KK
  attempt refused before the session retries with XX; a cached PSK that did
  not verify is dropped and derived afresh), or the error to raise (a pin
  mismatch names ``forget-server``; a wrong password says so).

The cache and the password. The reference client lets a cached PSK win over
the password it is given, so a wrong password still connects. We do not: the
on-disk cache serves only the identity file's password (the one
``set-identity --password`` sets, which also clears the cache). A password
passed to the constructor or the command line that differs from it is derived
on every new process and kept in memory only.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from hivemind_bus_client.client.config import ClientConfig
from hivemind_bus_client.client.noisekeys import (
    PskCache,
    get_pin,
    new_static_key,
    noise_key_path,
    psk_cache_path,
    read_static_key,
    set_pin,
    write_static_key,
)
from hivemind_bus_client.exceptions import (
    AuthenticationFailed,
    CloseCode,
    ConfigurationError,
    HandshakeError,
    HiveMindError,
)
from hivemind_bus_client.identity import NodeIdentity
from hivemind_bus_client.protocol.connection import Connection, HandshakeComplete
from hivemind_bus_client.protocol.v3offer import (
    KK,
    REASON_HUB_PIN_MISMATCH,
    REASON_PIN_MISMATCH,
    XX,
    derive_psk,
)
from hivemind_bus_client.protocol.v3settings import REASON_INVALID_MESSAGE, V3Settings

__all__ = ["PinMismatch", "V3Client"]

LOG = logging.getLogger(__name__)


class PinMismatch(AuthenticationFailed):
    """The hub's Noise static key is not the one pinned for its ``host:port`` (permanent)."""


class V3Client:
    """The v3 state of one client's link to one hub (see the module docstring).

    Args:
        config: the client settings (password, access key, host:port, version cap).
        identity: where the pins live (its file is rewritten when a pin is set).
        key_path: the Noise static key file (default: the identity's rules).
        disk_cache: whether the PSK cache file may serve this password
            (default: only when it is the identity file's password).
        derive: ``await derive(password, node_id)`` runs ``derive_psk`` off the
            loop (default: ``asyncio.to_thread``; a hub passes its bounded executor).
    """

    def __init__(
        self,
        config: ClientConfig,
        identity: NodeIdentity,
        *,
        key_path: str | os.PathLike[str] | None = None,
        disk_cache: bool | None = None,
        derive: Callable[[str, str], Awaitable[bytes]] | None = None,
    ) -> None:
        self.config = config
        self.identity = identity
        self.where = config.where
        self.key_path = Path(key_path) if key_path is not None else noise_key_path(identity)
        self.cache = PskCache(psk_cache_path(self.key_path))
        if disk_cache is None:
            disk_cache = bool(config.password) and config.password == identity.password
        self.disk_cache = disk_cache
        self._derive = derive or _derive_in_thread
        #: A KK attempt to this hub just ended before a session: the next runs XX.
        self.kk_failed = False
        self._static: bytes | None = None
        self._unsaved = False
        self._memory: dict[str, bytes] = {}
        #: node_id -> where the PSK of the current attempt came from ("cache" or "derived").
        self._source: dict[str, str] = {}
        self.derivations = 0

    @property
    def enabled(self) -> bool:
        """Whether this client may run v3 at all (a password and version cap >= 3)."""
        return bool(self.config.password) and self.config.max_protocol_version >= 3

    def static_key(self) -> bytes:
        """Our 32-byte static private key, read once.

        Without a key file a new key is made in memory and written only once a
        v3 link was keyed with it (:meth:`keyed`): a client that only ever meets
        v1 hubs leaves no key file behind.
        """
        if self._static is None:
            key = read_static_key(self.key_path)
            self._unsaved = key is None
            self._static = key if key is not None else new_static_key()
        return self._static

    def _save_static(self) -> None:
        if not self._unsaved or self._static is None:
            return
        self._unsaved = False
        try:
            if read_static_key(self.key_path) is None:
                write_static_key(self.key_path, self._static)
            else:
                LOG.warning("%s appeared meanwhile; this process used another key", self.key_path)
        except (OSError, ConfigurationError) as exc:
            LOG.warning("cannot save the Noise static key in %s: %s", self.key_path, exc)

    def pin(self) -> bytes | None:
        """The pinned hub key of this ``host:port``, if any."""
        return get_pin(self.identity, self.where)

    def settings(self) -> V3Settings | None:
        """The ``v3`` of the next attempt's Connection, or ``None`` (v1 only)."""
        if not self.enabled:
            return None
        try:
            static = self.static_key()
        except (OSError, ConfigurationError) as exc:
            LOG.error("protocol v3 disabled: no usable Noise static key (%s)", exc)
            return None
        return V3Settings(
            static_private=static,
            pinned_key=self.pin(),
            max_protocol_version=self.config.max_protocol_version,
            kk_failed=self.kk_failed,
        )

    # -- the PSK ---------------------------------------------------------------------

    async def psk_for(self, node_id: str) -> bytes:
        """The PSK for the hub ``node_id``: memory, the cache file, else Argon2id off the loop."""
        password, key = self.config.password or "", self.config.key
        psk = self._memory.get(node_id)
        if psk is None and self.disk_cache:
            psk = self.cache.get(key, node_id)
        if psk is not None:
            self._source[node_id] = "cache"
            return psk
        psk = await self._derive(password, node_id)
        self.derivations += 1
        self._source[node_id] = "derived"
        self._memory[node_id] = psk
        return psk

    # -- outcomes --------------------------------------------------------------------

    def keyed(self, conn: Connection, event: HandshakeComplete) -> None:
        """A v3 link is keyed: pin the hub after XX (TOFU), cache the PSK, allow KK again."""
        self.kk_failed = False
        self._save_static()
        node_id = conn.v3.node_id if conn.v3 is not None else ""
        if event.pattern == XX and event.peer_static and self.pin() is None:
            self._save_pin(event.peer_static)
        psk = self._memory.get(node_id)
        if self.disk_cache and psk is not None and self._source.get(node_id) == "derived":
            self.cache.put(self.config.key, node_id, psk)

    def _save_pin(self, public_key: bytes) -> None:
        set_pin(self.identity, self.where, public_key, save=False)
        try:  # write the file as it is on disk now, plus the pin
            fresh = NodeIdentity(self.identity.path)
            set_pin(fresh, self.where, public_key)
            LOG.info("pinned the Noise key of %s", self.where)
        except OSError as exc:
            LOG.warning("cannot save the Noise pin of %s: %s", self.where, exc)

    def failed(self, conn: Connection | None, error: BaseException) -> tuple[bool, BaseException]:
        """After a failed attempt: ``(retry once now?, the error to raise otherwise)``.

        Only a v3 handshake that ended before its session is looked at.
        """
        link = conn.v3 if conn is not None else None
        if link is None or not link.running or link.in_session:
            return False, error
        if not isinstance(error, HandshakeError):
            return False, error  # a timeout or a "come back later": the PSK is not in doubt
        if REASON_HUB_PIN_MISMATCH in str(error):
            pin = self.pin()
            return False, PinMismatch(
                f"hub at {self.where} presented a Noise static key that contradicts the key "
                f"pinned for it{f' ({pin.hex()[:16]}...)' if pin else ''}: refusing to connect. "
                f"If the hub was reinstalled or its key was changed on purpose, run "
                f"'hivemind-client forget-server {self.where}' and connect again."
            )
        node_id = link.node_id
        retry = False
        if self._source.pop(node_id, None) == "cache":
            self._memory.pop(node_id, None)
            if self.disk_cache and self.cache.drop(self.config.key, node_id):
                LOG.info("dropped the cached PSK of %s after a failed handshake", self.where)
            retry = True
        else:
            self._memory.pop(node_id, None)
        if link.pattern == KK and _refused(error):
            self.kk_failed = True
            retry = True
        if retry:
            return True, error
        if isinstance(error, AuthenticationFailed) and link.pattern == XX:
            return False, AuthenticationFailed(
                f"hub at {self.where} did not accept the password (the v3 handshake failed): "
                "check the password of this access key"
            )
        return False, error

    def lost(self, conn: Connection | None, error: BaseException) -> BaseException:
        """The error for a keyed link that ended: a hub refusing our key right after XX
        (it checks its pin after m3, before it reads anything else) becomes a refusal naming the fix."""
        link = conn.v3 if conn is not None else None
        if (
            link is None
            or not link.in_session
            or link.pattern != XX
            or conn is None
            or conn.frames_in > 3  # the hub said something after its m2: not that refusal
            or getattr(error, "code", None) != CloseCode.POLICY
            or getattr(error, "reason", "") not in (REASON_PIN_MISMATCH, REASON_INVALID_MESSAGE)
        ):
            return error
        return AuthenticationFailed(
            f"hub at {self.where} refused this client's Noise key right after the handshake "
            f"({getattr(error, 'reason', '')}): it has another key pinned for this access key. "
            "If this client was reinstalled, clear the pin on the hub "
            "('hivemind-core reset-noise-pin <client id>')."
        )


async def _derive_in_thread(password: str, node_id: str) -> bytes:
    return await asyncio.to_thread(derive_psk, password, node_id)


def _refused(error: BaseException) -> bool:
    """Whether ``error`` is a policy refusal (1008) of a handshake, by the hub or by us."""
    code = getattr(error, "close_code", None)
    return isinstance(error, HiveMindError) and code == CloseCode.POLICY
