"""What a v3 link is given and what its steps return (:mod:`~hivemind_bus_client.protocol.v3link`).

:class:`V3Settings` is the ``v3`` keyword of a
:class:`~hivemind_bus_client.protocol.connection.Connection`: the keys, the PSK
if the caller has it, the pin, the version bounds. See ``docs/protocol-v3.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hivemind_bus_client.exceptions import CloseCode, ConfigurationError, CryptoError
from hivemind_bus_client.protocol.events import Event
from hivemind_bus_client.protocol.v3offer import CLIENT_ENCODINGS
from hivemind_bus_client.protocol.v3transport import DEFAULT_MAX_SIZE, FATAL_CLOSE

__all__ = [
    "REASON_INVALID_MESSAGE",
    "REASON_REQUIRES_V3",
    "V3FrameRejected",
    "V3Settings",
    "V3Step",
]

#: Close reason (1008) of a hub that refuses a v1 client under min_protocol_version 3.
REASON_REQUIRES_V3 = "this hub requires protocol v3 for this client"
#: Close reason (1008) of any bad frame on a v3 session.
REASON_INVALID_MESSAGE = FATAL_CLOSE[1]


class V3FrameRejected(CryptoError):
    """A frame on a v3 session was refused; the link closes 1008 ``invalid message``.

    The cause (tampered, replayed, reordered, a text frame, a bad marker, an
    oversized or undecodable body) is ``__cause__``; the peer is told nothing more.
    """

    close_code = CloseCode.POLICY


def _check_key(name: str, value: bytes | None) -> None:
    if value is not None and (not isinstance(value, bytes) or len(value) != 32):
        raise ConfigurationError(f"v3 {name} must be 32 raw bytes")


@dataclass(frozen=True)
class V3Settings:
    """What one end of a link needs for protocol v3. Secrets stay out of the repr.

    Attributes:
        static_private: this node's raw 32-byte X25519 static private key.
        psk: the 32-byte Noise PSK when the caller already has it (its cache);
            ``None``: the link asks with a ``PSKNeeded`` event.
        pinned_key: the peer's pinned 32-byte static public key, if any. Hub:
            the client row's pin (KK is offered; an XX key that differs is
            refused). Client: the pin for this hub's host:port (KK is run; an
            XX key that differs is refused).
        min_protocol_version: hub: 3 refuses a v1 client's HANDSHAKE (1008
            :data:`REASON_REQUIRES_V3`); the caller passes the stricter of the
            hub-wide and the client row's setting.
        max_protocol_version: client: below 3 the link never does v3.
        kk_failed: client: a KK attempt to this hub just ended before a
            session, so run XX even with a pin (the retry).
        legacy_offer: hub: the offer keeps the v1 keys (``handshake``,
            ``password``, ...) so v1 clients answer it, and get v1 or the
            named refusal; ``False`` sends exactly a v3-only hub's offer.
        max_size: bound on one received v3 message, reassembled.
        encodings: client: the encodings list of m1.
        ephemeral_private: a fixed ephemeral key, for test vectors only.
    """

    static_private: bytes = field(repr=False)
    psk: bytes | None = field(default=None, repr=False)
    pinned_key: bytes | None = None
    min_protocol_version: int = 1
    max_protocol_version: int = 3
    kk_failed: bool = False
    legacy_offer: bool = True
    max_size: int = DEFAULT_MAX_SIZE
    encodings: Sequence[str] = CLIENT_ENCODINGS
    ephemeral_private: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        _check_key("static_private", self.static_private)
        _check_key("psk", self.psk)
        _check_key("pinned_key", self.pinned_key)
        _check_key("ephemeral_private", self.ephemeral_private)


@dataclass(frozen=True, slots=True)
class V3Step:
    """What one v3 step asks of the connection, in this order.

    ``events`` to report; ``reply`` a cleartext HANDSHAKE payload to send;
    ``done`` the handshake completed, the link is keyed.
    """

    events: tuple[Event, ...] = ()
    reply: dict[str, Any] | None = None
    done: bool = False
