"""Binary data handlers: what the hub does with BINARY messages (audio, images, files).

A handler is a plugin found through the ``hivemind.binary_handlers`` entry-point
group; the hub calls :meth:`BinaryHandler.handle` once per BINARY message that
the router delivered locally. The default :class:`LoggingBinaryHandler` only
counts and logs (at DEBUG) and drops the payload, like the reference hub when
no binary protocol is configured (docs/hub.md, plugins).

Handlers run on the hub's event loop: anything slow (STT, TTS) must hand the
work to a thread or a task of its own.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from hivemind_bus_client.protocol.message import HiveMessage, HiveMindBinaryPayloadType

__all__ = ["BinaryHandler", "LoggingBinaryHandler", "Reply"]

LOG = logging.getLogger(__name__)

#: Sends a message back to the satellite the binary payload came from.
Reply = Callable[[HiveMessage], None]


class BinaryHandler(ABC):
    """Base class of binary data handlers.

    Args:
        config: the handler's own settings (free-form).
    """

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self.config = dict(config or {})

    @abstractmethod
    def handle(self, message: HiveMessage, peer: str, reply: Reply) -> None:
        """Process one BINARY ``message`` received from ``peer``.

        ``message.payload`` is the raw bytes, ``message.bin_type`` says what
        they are and ``message.metadata`` carries ``sample_rate``,
        ``sample_width``, ``lang``, ``file_name`` ... as the sender set them.
        ``reply`` sends a message back to that satellite.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources when the hub stops."""


class LoggingBinaryHandler(BinaryHandler):
    """Default handler: counts each payload by type, logs it at DEBUG, and drops it."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self.counts: dict[str, int] = {}

    def handle(self, message: HiveMessage, peer: str, reply: Reply) -> None:
        """Count and drop."""
        try:
            kind = HiveMindBinaryPayloadType(message.bin_type).name
        except ValueError:
            kind = str(int(message.bin_type))
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if LOG.isEnabledFor(logging.DEBUG):
            LOG.debug(
                "dropping %d bytes of %s from %s (no binary handler configured)",
                len(message.payload),
                kind,
                peer,
            )
