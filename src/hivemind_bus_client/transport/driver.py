"""THE loop between a :class:`~hivemind_bus_client.transport.channel.Channel` and a
sans-I/O :class:`~hivemind_bus_client.protocol.connection.Connection`.

Every link, client or hub, websocket, HTTP or MQTT, is driven by one
:class:`LinkDriver`. Its whole job, after each received frame and each timer:

1. hand the connection's events to ``on_event`` (in order);
2. write the connection's queued frames to the channel;
3. re-arm the ONE loop timer at ``conn.get_timer()`` (the handshake deadline
   and the hub's offer re-sends live there, so every link honours
   ``handshake_timeout``);
4. on a :class:`~hivemind_bus_client.protocol.connection.CloseRequested`,
   close the channel with its code and reason and end :meth:`LinkDriver.run`.

It makes no protocol decision of its own: what an event means is the caller's
business. :meth:`LinkDriver.run` returns a
:class:`~hivemind_bus_client.transport.channel.ChannelClosed` saying why the link
ended; when the connection asked for the close, its ``error`` is the cause
(the :class:`~hivemind_bus_client.exceptions.HiveMindError` the connection
raised, or :class:`~hivemind_bus_client.exceptions.ConnectTimeout` when the
handshake deadline passed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from hivemind_bus_client.exceptions import ConnectTimeout
from hivemind_bus_client.protocol.connection import CloseRequested, Connection, Event, State
from hivemind_bus_client.protocol.message import HiveMessage
from hivemind_bus_client.transport.channel import Channel, ChannelClosed, truncate_reason

__all__ = ["LinkDriver"]

LOG = logging.getLogger(__name__)


class LinkDriver:
    """Drives one ``conn`` over one ``channel`` (see the module docstring).

    Args:
        conn: a fresh connection (not started).
        channel: the open channel under it.
        on_event: called with every event of ``conn``, on the loop, in order;
            an exception it raises is logged and does not stop the link.
        clock: the time base handed to ``conn`` (default: the running loop's clock).
        name: used in log lines.
    """

    def __init__(
        self,
        conn: Connection,
        channel: Channel,
        on_event: Callable[[Event], None],
        *,
        clock: Callable[[], float] | None = None,
        name: str = "link",
    ) -> None:
        self.conn = conn
        self.channel = channel
        self.on_event = on_event
        self.name = name
        self._clock = clock
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at: float | None = None
        self._result: ChannelClosed | None = None
        self._close_task: asyncio.Task[None] | None = None

    # -- time ----------------------------------------------------------------------

    def now(self) -> float:
        """The current time in the connection's time base."""
        if self._clock is not None:
            return self._clock()
        return asyncio.get_running_loop().time()

    @property
    def ended(self) -> ChannelClosed | None:
        """Why the link ended, once it has (``None`` while it runs)."""
        return self._result

    # -- the loop --------------------------------------------------------------------

    def start(self) -> None:
        """Start the connection (a hub queues HELLO and its offer), flush, arm the timer."""
        self.conn.start(self.now())
        self.process()

    async def run(self) -> ChannelClosed:
        """Feed received frames to the connection until the link ends; returns why."""
        conn, channel = self.conn, self.channel
        try:
            while self._result is None:
                try:
                    frame = await channel.recv()
                except ChannelClosed as exc:
                    self._lost(exc)
                    break
                if self._result is not None:
                    break
                conn.receive_frame(frame)
                self.process()
            if self._close_task is not None:
                with contextlib.suppress(Exception):
                    await self._close_task
        finally:
            self._cancel_timer()
        assert self._result is not None
        return self._result

    def process(self) -> None:
        """Dispatch events, flush frames, re-arm the timer; act on a close request.

        The driver calls it after every frame and timer; call it yourself after
        changing the connection from outside a frame, e.g. after
        ``Connection.provide_psk`` answers a ``PSKNeeded`` event later.
        """
        if self._result is not None:
            return
        close: CloseRequested | None = None
        for event in self.conn.events():
            try:
                self.on_event(event)
            except Exception:
                LOG.exception("%s: event handler failed on %s", self.name, type(event).__name__)
            if isinstance(event, CloseRequested) and close is None:
                close = event
        self.flush()
        if close is not None:
            self._close_requested(close, None)
        else:
            self._arm()

    def _on_timer(self) -> None:
        self._timer = None
        self._armed_at = None
        if self._result is not None:
            return
        handshaking = self.conn.state is State.HANDSHAKING
        self.conn.handle_timer(self.now())
        if handshaking and self.conn.state is State.CLOSING:
            # The only close a timer makes: the handshake deadline passed.
            timeout = self.conn.handshake_timeout
            cause = ConnectTimeout(f"no completed handshake within {timeout:g} s")
            for event in self.conn.events():
                with contextlib.suppress(Exception):
                    self.on_event(event)
                if isinstance(event, CloseRequested):
                    self.flush()
                    self._close_requested(event, cause)
                    return
        self.process()

    def _arm(self) -> None:
        deadline = self.conn.get_timer()
        if deadline == self._armed_at:
            return
        self._cancel_timer()
        if deadline is None:
            return
        loop = asyncio.get_running_loop()
        self._armed_at = deadline
        self._timer = loop.call_later(max(0.0, deadline - self.now()), self._on_timer)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._armed_at = None

    def _close_requested(self, event: CloseRequested, cause: BaseException | None) -> None:
        greeted = self.conn.frames_in > 0
        error = event.error if event.error is not None else cause
        LOG.debug("%s: closing (%s): %s", self.name, event.code, event.reason)
        self._result = ChannelClosed(
            event.code, event.reason, by_peer=False, error=error, greeted=greeted
        )
        self._cancel_timer()
        self.conn.connection_lost(event.code, event.reason)
        self._close_task = asyncio.get_running_loop().create_task(
            self._close_channel(event.code, event.reason), name=f"{self.name}-close"
        )

    async def _close_channel(self, code: int, reason: str) -> None:
        try:
            await self.channel.close(code, truncate_reason(reason))
        except Exception:
            LOG.debug("%s: channel close failed", self.name, exc_info=True)

    def _lost(self, exc: ChannelClosed) -> None:
        if self._result is not None:
            return
        exc.greeted = self.conn.frames_in > 0
        self._result = exc
        self._cancel_timer()
        self.conn.connection_lost(exc.code, exc.reason)

    # -- the caller's side -------------------------------------------------------------

    def flush(self) -> None:
        """Write every frame the connection has queued (a closed channel drops them)."""
        frames = self.conn.frames_to_send()
        if not frames:
            return
        write = self.channel.write_nowait
        try:
            for frame in frames:
                write(frame)
        except ChannelClosed:
            LOG.debug("%s: %d frame(s) not written: channel closed", self.name, len(frames))

    def send(self, message: HiveMessage) -> None:
        """Encode ``message`` and write it.

        Raises:
            InvalidState: the connection is not ready.
            ChannelClosed: the channel has ended.
        """
        if self._result is not None:
            raise self._result
        self.conn.send(message)
        for frame in self.conn.frames_to_send():
            self.channel.write_nowait(frame)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the link from this end (idempotent); :meth:`run` then returns."""
        if self._result is None:
            self.conn.close(code, reason)
            self.process()
        if self._close_task is not None:
            with contextlib.suppress(Exception):
                await self._close_task
