"""The sending half of the client's :class:`~hivemind_bus_client.client.engine.LinkEngine`.

A base class of the engine and nothing else: waiting for a keyed link, then
writing each message through the link's driver. The driver hands the message
to ``Connection.send``, which queues every frame of it (a v3 message over
65,000 bytes is several Noise messages, written contiguously and in order).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from hivemind_bus_client.exceptions import ConnectionClosedError, InvalidState
from hivemind_bus_client.protocol.message import HiveMessage
from hivemind_bus_client.transport.channel import ChannelClosed
from hivemind_bus_client.transport.driver import LinkDriver

__all__ = ["EngineSending"]

LOG = logging.getLogger(__name__)


class EngineSending:
    """``wait_ready``, ``send`` and ``send_nowait`` of the engine (see the module docstring)."""

    # What the methods read; ``LinkEngine`` defines all of it.
    ready: asyncio.Event | None
    fatal_error: BaseException | None
    closing: bool
    driver: LinkDriver | None
    stats: dict[str, int]
    config: Any

    @property
    def connected(self) -> bool:
        """True while a keyed link exists."""
        return self.ready is not None and self.ready.is_set()

    async def wait_ready(self, timeout: float) -> None:
        """Wait until a keyed link exists; raise if the client stopped or time ran out."""
        if self.ready is None:
            raise InvalidState("not connected: call connect() first")
        if self.ready.is_set():
            return
        if self.fatal_error is not None:
            raise ConnectionClosedError(None, f"client stopped: {self.fatal_error}")
        if self.closing:
            raise InvalidState("the client is closed")
        try:
            await asyncio.wait_for(self.ready.wait(), timeout)
        except asyncio.TimeoutError:
            raise ConnectionClosedError(
                None, f"no link to the hub (reconnecting) after {timeout:g} s"
            ) from None

    async def send(self, message: HiveMessage) -> None:
        """Encode and write one message, waiting for a link if one is being reopened
        and while the channel's backlog is more than half full."""
        await self.wait_ready(self.config.send_timeout)
        driver = self.driver
        room = getattr(driver.channel, "wait_writable", None) if driver is not None else None
        if room is not None:  # backpressure: never overflow our own backlog and lose the link
            await room()
        self.send_nowait(message, quiet=False)

    def send_nowait(self, message: HiveMessage, *, quiet: bool = True) -> bool:
        """Write one message on the current link now; False (or raise) when there is none.

        Raises (only with ``quiet=False``):
            ConnectionClosedError: the link is gone.
        """
        driver = self.driver
        if driver is None or not self.connected:
            if quiet:
                LOG.debug("no link: %s not sent", message.msg_type.value)
                return False
            raise ConnectionClosedError(None, "link lost while sending")
        try:
            driver.send(message)
        except ChannelClosed as exc:
            if quiet:
                return False
            raise ConnectionClosedError(exc.code, exc.reason or "link lost while sending") from None
        except InvalidState:
            if quiet:
                return False
            raise ConnectionClosedError(None, "link lost while sending") from None
        self.stats["messages_out"] += 1
        return True
