"""The routing types of a HiveMessage and the kinds of BINARY payload.

Re-exported by :mod:`hivemind_bus_client.protocol.message`, where they are
usually imported from.
"""

from __future__ import annotations

from enum import Enum, IntEnum

__all__ = ["OVOS_TYPES", "TRANSPORT_TYPES", "HiveMessageType", "HiveMindBinaryPayloadType"]


class HiveMessageType(str, Enum):
    """Routing type of a HiveMessage; the value is the wire string.

    Members compare equal to their wire strings (``HiveMessageType.BUS == "bus"``).
    PONG is not in the reference 0.4.4 release; it is the reply to a PING flood
    (``docs/protocol.md``, message types), with wire string ``pong`` and binary code 13.
    """

    HANDSHAKE = "shake"
    BUS = "bus"
    SHARED_BUS = "shared_bus"
    BROADCAST = "broadcast"
    PROPAGATE = "propagate"
    ESCALATE = "escalate"
    HELLO = "hello"
    QUERY = "query"
    CASCADE = "cascade"
    PING = "ping"
    PONG = "pong"
    RENDEZVOUS = "rendezvous"
    THIRDPRTY = "3rdparty"
    BINARY = "bin"
    INTERCOM = "intercom"

    def __str__(self) -> str:
        return self.value


class HiveMindBinaryPayloadType(IntEnum):
    """What the bytes of a BINARY message are (4 bits on the wire)."""

    UNDEFINED = 0
    RAW_AUDIO = 1
    NUMPY_IMAGE = 2
    FILE = 3
    STT_AUDIO_TRANSCRIBE = 4
    STT_AUDIO_HANDLE = 5
    TTS_AUDIO = 6


#: Types whose payload is a nested HiveMessage.
TRANSPORT_TYPES = frozenset(
    {
        HiveMessageType.BROADCAST,
        HiveMessageType.PROPAGATE,
        HiveMessageType.ESCALATE,
        HiveMessageType.QUERY,
        HiveMessageType.CASCADE,
    }
)

#: Types whose payload is an OVOS ``Message``.
OVOS_TYPES = frozenset({HiveMessageType.BUS, HiveMessageType.SHARED_BUS})
