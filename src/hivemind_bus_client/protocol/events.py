"""What a :class:`~hivemind_bus_client.protocol.connection.Connection` reports.

Events are small frozen values. The I/O layer drains them with
``Connection.events()`` after every frame it feeds and every timer it fires.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hivemind_bus_client.exceptions import HiveMindError
from hivemind_bus_client.protocol.message import HiveMessage

if TYPE_CHECKING:
    from hivemind_bus_client.protocol.handshake import KeyJob

__all__ = [
    "CloseRequested",
    "Event",
    "FrameDropped",
    "HandshakeComplete",
    "HelloReceived",
    "KeyNeeded",
    "MessageReceived",
    "PSKNeeded",
]


@dataclass(frozen=True, slots=True)
class Event:
    """Base of every connection event."""


@dataclass(frozen=True, slots=True)
class HandshakeComplete(Event):
    """A key is agreed; ``mode`` is ``password``, ``rsa``, ``preshared`` or ``noise``.

    ``mode`` is a :class:`~hivemind_bus_client.protocol.handshake.HandshakeMode`,
    which compares equal to those strings.

    Protocol v3 (``mode`` ``noise``, ``protocol`` 3): ``pattern`` is
    ``XXpsk2`` or ``KKpsk0``, ``suite`` e.g. ``25519_ChaChaPoly_SHA256``,
    ``cipher`` its cipher (``ChaChaPoly``, ``AESGCM``), ``encoding`` empty,
    and ``peer_static`` the peer's 32-byte static X25519 public key: after
    XX, the caller pins it if it held no pin (trust on first use).
    """

    mode: str
    cipher: str
    encoding: str
    binarize: bool
    protocol: int = 1
    pattern: str = ""
    suite: str = ""
    peer_static: bytes | None = None


@dataclass(frozen=True, slots=True)
class PSKNeeded(Event):
    """A v3 link waits for its Noise PSK: hand it in with ``Connection.provide_psk``.

    The PSK is Argon2id of the password salted with SHA-256(``node_id``)
    (``v3offer.derive_psk``): 64 MiB and tens to hundreds of milliseconds, so
    take it from a cache or derive it off the event loop. The link keeps the
    peer's first Noise message meanwhile; the handshake timeout keeps running.
    A hub asks at ``start`` (the client row's password, its own node_id); a
    client when the hub's offer qualifies for v3 (its password, the node_id of
    the hub's HELLO).
    """

    node_id: str


@dataclass(frozen=True, slots=True)
class KeyNeeded(Event):
    """Hub, v1: a client HANDSHAKE passed its checks and waits for its key.

    Only a connection made with ``defer_keys=True`` asks. ``job`` is a
    :class:`~hivemind_bus_client.protocol.handshake.KeyJob` (a password's
    PBKDF2, about 25 ms, or an RSA seal): run ``handshake.hub_finish(job)``
    off the event loop and hand the answer in with ``Connection.provide_key``,
    or refuse with ``Connection.refuse_key``. ``mode`` is the job's
    (``password``, ``rsa``) and ``rekey`` tells a re-key of a keyed link from
    the opening. Frames that arrive meanwhile are held, in order and bounded;
    the handshake timeout keeps running.
    """

    mode: str
    rekey: bool
    job: KeyJob = field(repr=False)


@dataclass(frozen=True, slots=True)
class HelloReceived(Event):
    """The peer's HELLO payload (hub side: pubkey, session, site_id; client: peer, node_id)."""

    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class MessageReceived(Event):
    """An application message; ``binary`` tells whether it came as a binary frame."""

    message: HiveMessage
    binary: bool = False


@dataclass(frozen=True, slots=True)
class FrameDropped(Event):
    """A sealed frame was dropped unread: ``reason`` is ``replay`` or ``reflection``.

    ``count`` is how many frames this link has dropped for that reason so
    far. The link stays open: a frame of the peer's sent again, or one of
    ours sent back, is never acted on.
    """

    reason: str
    count: int


@dataclass(frozen=True, slots=True)
class CloseRequested(Event):
    """The link must close with ``code``; ``error`` is the cause when it was a fault.

    ``pre_handshake`` is true when the close came before the handshake
    completed (a fault, or the handshake timeout): a hub counts those against
    the peer's address in its throttle, as it does wrong passwords.
    """

    code: int
    reason: str
    error: HiveMindError | None = field(default=None)
    pre_handshake: bool = False
