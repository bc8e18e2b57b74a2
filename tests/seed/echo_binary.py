"""A binary handler for the seed tests' hub: sends a BINARY message back to its sender.

Only payloads whose metadata carries ``"echo": true`` are echoed (same bytes,
same ``bin_type``), so the other samples' binary messages are dropped as by
the default handler. The hub loads it as ``echo_binary:EchoBinaryHandler``
(``binary_handler`` in ``server.json``), with this folder on ``PYTHONPATH``.
"""

from __future__ import annotations

from hivemind_bus_client.message import HiveMessage, HiveMessageType
from hivemind_core.binary import LoggingBinaryHandler, Reply


class EchoBinaryHandler(LoggingBinaryHandler):
    """Counts every payload like the default handler, and echoes the marked ones."""

    def handle(self, message: HiveMessage, peer: str, reply: Reply) -> None:
        super().handle(message, peer, reply)
        if message.metadata.get("echo") is True:
            reply(
                HiveMessage(
                    HiveMessageType.BINARY,
                    message.payload,
                    bin_type=message.bin_type,
                    metadata={"echoed": True},
                )
            )
