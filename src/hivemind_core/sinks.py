"""What the hub node sees of its links: :class:`Sink` (write, close) and :class:`UpstreamSink`.

The node never imports a listener or the upstream link: it knows them only
through these protocols, so no link module and the node import each other.
"""

from __future__ import annotations

from typing import Any, Protocol

from hivemind_bus_client.protocol.message import HiveMessage

__all__ = ["Sink", "UpstreamSink"]


class Sink(Protocol):
    """What the node sees of a link: it can be written to and closed."""

    def send_message(self, message: HiveMessage) -> None:
        """Queue ``message`` for this link (never blocks)."""

    def close(self, code: int, reason: str) -> None:
        """Close the link (idempotent)."""


class UpstreamSink(Sink, Protocol):
    """What the node sees of its link to a master (nested hives)."""

    @property
    def connected(self) -> bool:
        """Whether the master link is keyed and registered with the router."""

    @property
    def share_bus(self) -> bool:
        """Whether this hub shows its bus to the master (SHARED_BUS)."""

    def relay_down(self, payload: dict[str, Any]) -> bool:
        """Send an answer of the master on to one of our satellites; False if not one."""
