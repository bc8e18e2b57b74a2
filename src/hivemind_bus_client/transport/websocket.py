"""Websocket channels: :func:`connect` for client ends, :class:`ServerWebSocketChannel`
for the hub's accepted sockets.

Both wrap a ``websockets`` asyncio connection behind the
:class:`~hivemind_bus_client.transport.channel.Channel` contract. Writing never
blocks: while the socket accepts data, a frame is handed to the websockets
protocol object and written at once (:func:`send_nowait`, the one place that
does this); once the kernel buffer pushes back, frames wait in a
:class:`~hivemind_bus_client.transport.channel.BoundedBacklog` drained by one
task with the public ``send()``, and a full backlog closes the link with
``TRY_AGAIN`` (a slow consumer must not hold the hub's memory). A writer that
would rather wait than lose its link (the client's ``emit``) awaits
:meth:`WebSocketChannel.wait_writable` first: backpressure instead of a close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import Any

from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.connection import Connection as WsConnection
from websockets.exceptions import ConnectionClosed as WsConnectionClosed
from websockets.protocol import State as WsState

from hivemind_bus_client.exceptions import CloseCode
from hivemind_bus_client.transport.channel import (
    BoundedBacklog,
    ChannelClosed,
    Frame,
    truncate_reason,
)
from hivemind_bus_client.transport.errors import closed_from_websocket, map_errors

__all__ = ["ServerWebSocketChannel", "WebSocketChannel", "connect", "send_nowait"]

LOG = logging.getLogger(__name__)

#: Default bounds of a channel's outgoing backlog.
DEFAULT_MAX_FRAMES = 4096
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


def send_nowait(ws: WsConnection, frame: Frame) -> bool:
    """Write one frame on ``ws`` without awaiting; False when the socket is not open.

    Does what ``ws.send()`` does minus its wait for the kernel buffer: the frame
    goes to the sans-I/O protocol object and its bytes to the transport. Only
    call it while ``ws`` is not paused (see :class:`WebSocketChannel`).
    """
    protocol = ws.protocol
    if protocol.state is not WsState.OPEN:
        return False
    if isinstance(frame, str):
        protocol.send_text(frame.encode("utf-8"))
    else:
        protocol.send_binary(frame)
    ws.send_data()
    return True


def _address(ws: WsConnection) -> str:
    try:
        addr = ws.remote_address
    except Exception:  # transport already gone
        return ""
    if isinstance(addr, tuple) and len(addr) >= 2:
        return f"{addr[0]}:{addr[1]}"
    return str(addr) if addr else ""


class WebSocketChannel:
    """A :class:`~hivemind_bus_client.transport.channel.Channel` over one websockets connection.

    Args:
        ws: an open ``websockets`` asyncio connection (client or server side).
        max_frames, max_bytes: bounds of the outgoing backlog.
    """

    def __init__(
        self,
        ws: WsConnection,
        *,
        max_frames: int = DEFAULT_MAX_FRAMES,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.ws = ws
        self.peer_address = _address(ws)
        self.backlog = BoundedBacklog(max_frames, max_bytes)
        self._drain_task: asyncio.Task[None] | None = None
        self._room: asyncio.Event | None = None
        self._close: tuple[int, str] | None = None
        self._ended: ChannelClosed | None = None

    # -- state -----------------------------------------------------------------------

    @property
    def close_code(self) -> int | None:
        if self._close is not None:
            return self._close[0]
        if self.ws.protocol.state is WsState.CLOSED:
            code = self.ws.close_code
            return int(code) if code is not None else int(CloseCode.ABNORMAL)
        return None

    @property
    def close_reason(self) -> str:
        if self._close is not None:
            return self._close[1]
        return self.ws.close_reason or ""

    def _closed_error(self) -> ChannelClosed:
        if self._ended is not None:
            return self._ended
        if self._close is not None:
            return ChannelClosed(*self._close, by_peer=False)
        exc = self.ws.close_exc if self.ws.protocol.state is WsState.CLOSED else None
        if exc is not None:
            return closed_from_websocket(exc)
        return ChannelClosed(CloseCode.ABNORMAL, "socket closed")

    # -- Channel -----------------------------------------------------------------------

    async def recv(self) -> Frame:
        try:
            return await self.ws.recv()
        except WsConnectionClosed as exc:
            if self._ended is None:
                self._ended = closed_from_websocket(exc)
                if self._close is not None:  # we asked for this close: say so
                    self._ended = ChannelClosed(*self._close, by_peer=False)
            raise self._ended from None

    def write_nowait(self, frame: Frame) -> None:
        if self._close is not None or self._ended is not None:
            raise self._closed_error()
        if self.backlog or self.ws.paused:
            if not self.backlog.push(frame):
                LOG.warning("send backlog of %s is full: closing", self.peer_address or "peer")
                self._start_close(CloseCode.TRY_AGAIN, "send queue overflow (slow consumer)")
                raise self._closed_error()
            if self._drain_task is None:
                self._drain_task = asyncio.get_running_loop().create_task(
                    self._drain(), name="hivemind-ws-drain"
                )
            return
        if not send_nowait(self.ws, frame):
            raise self._closed_error()

    def _crowded(self) -> bool:
        """The backlog is past half of either bound (where :meth:`wait_writable` waits)."""
        backlog = self.backlog
        return len(backlog) * 2 >= backlog.max_frames or backlog.nbytes * 2 >= backlog.max_bytes

    async def wait_writable(self) -> None:
        """Wait while the backlog is more than half full (returns at once when closed).

        For writers that must not overflow the backlog: awaited before
        :meth:`write_nowait`, a fast writer slows to the pace of the peer instead
        of closing the link with ``TRY_AGAIN``.
        """
        while self._crowded() and self._drain_task is not None and self._open():
            if self._room is None:
                self._room = asyncio.Event()
            await self._room.wait()

    def _open(self) -> bool:
        return (
            self._close is None and self._ended is None and self.ws.protocol.state is WsState.OPEN
        )

    def _wake_writers(self) -> None:
        if self._room is not None and (not self._crowded() or self._close is not None):
            self._room.set()
            self._room = None

    async def _drain(self) -> None:
        try:
            while self.backlog and self._close is None:
                await self.ws.send(self.backlog.pop())
                self._wake_writers()
        except WsConnectionClosed:
            pass
        except Exception:
            LOG.exception("draining the send backlog of %s failed", self.peer_address or "peer")
        finally:
            self._drain_task = None
            if self._room is not None:  # closed or drained: nobody may stay blocked
                self._room.set()
                self._room = None

    def _start_close(self, code: int, reason: str) -> None:
        if self._close is None:
            self._close = (int(code), reason)
            self.backlog.clear()
            asyncio.get_running_loop().create_task(
                self._close_ws(code, reason), name="hivemind-ws-close"
            )

    async def _close_ws(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close(code, truncate_reason(reason))

    async def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        if self._close is None:
            if self.ws.protocol.state is WsState.CLOSED:
                # Already gone: keep what the peer said.
                return
            self._close = (int(code), reason)
            drain = self._drain_task
            if drain is not None:
                drain.cancel()
            self.backlog.clear()
        await self._close_ws(code, reason)


class ServerWebSocketChannel(WebSocketChannel):
    """The hub's channel over an accepted ``websockets`` ServerConnection."""


async def connect(
    url: str,
    *,
    ssl_context: ssl.SSLContext | None = None,
    open_timeout: float | None = None,
    max_size: int | None = 16 * 1024 * 1024,
    ping_interval: float | None = None,
    ping_timeout: float | None = None,
    user_agent: str | None = None,
    where: str = "",
    max_frames: int = DEFAULT_MAX_FRAMES,
    max_bytes: int = DEFAULT_MAX_BYTES,
    **options: Any,
) -> WebSocketChannel:
    """Open a client websocket to ``url``; errors leave as the hierarchy (transport.errors).

    Args:
        url: ``ws://`` or ``wss://`` URL (with the ``authorization`` query).
        ssl_context: from :func:`hivemind_bus_client.transport.tls.client_context`.
        open_timeout: seconds for TCP, TLS and the HTTP upgrade (``ConnectTimeout``).
        max_size: largest frame accepted.
        ping_interval, ping_timeout: websocket keepalive (``None``: off).
        user_agent: the ``User-Agent`` header.
        where: ``host:port`` for error messages (default: the URL without query).
        max_frames, max_bytes: bounds of the outgoing backlog.
        options: passed on to ``websockets.asyncio.client.connect``.
    """
    where = where or url.split("?", 1)[0]
    options.setdefault("max_queue", None)
    with map_errors(where, connecting=True, timeout=open_timeout):
        ws = await asyncio.wait_for(
            ws_connect(
                url,
                ssl=ssl_context,
                compression=None,
                open_timeout=None,
                ping_interval=ping_interval,
                ping_timeout=ping_timeout,
                close_timeout=2,
                max_size=max_size,
                user_agent_header=user_agent,
                **options,
            ),
            timeout=open_timeout,
        )
    return WebSocketChannel(ws, max_frames=max_frames, max_bytes=max_bytes)
