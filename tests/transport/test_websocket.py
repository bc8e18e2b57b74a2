"""Websocket channels over real loopback sockets, and the error table for them."""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from hivemind_bus_client.exceptions import (
    CloseCode,
    HiveMindEntryPointNotFound,
    UnauthorizedKeyError,
)
from hivemind_bus_client.transport.channel import Channel, ChannelClosed
from hivemind_bus_client.transport.websocket import ServerWebSocketChannel, connect
from support.net import free_port


def test_frames_both_ways_and_close_codes() -> None:
    async def scenario() -> None:
        got: asyncio.Queue[Any] = asyncio.Queue()

        async def handler(ws: ServerConnection) -> None:
            chan = ServerWebSocketChannel(ws)
            assert chan.peer_address.startswith("127.0.0.1:")
            frame = await chan.recv()
            chan.write_nowait(frame)  # echo, same kind
            chan.write_nowait(b"\x00bin")
            try:
                await chan.recv()
            except ChannelClosed as exc:
                await got.put(exc)

        port = free_port()
        async with serve(handler, "127.0.0.1", port):
            chan = await connect(f"ws://127.0.0.1:{port}", open_timeout=2)
            assert isinstance(chan, Channel)
            chan.write_nowait("hello")
            assert await chan.recv() == "hello"
            assert await chan.recv() == b"\x00bin"
            await chan.close(CloseCode.POLICY, "x" * 300)
            await chan.close()  # idempotent
            assert chan.close_code == CloseCode.POLICY
            server_side = await asyncio.wait_for(got.get(), 2)
            assert server_side.code == CloseCode.POLICY and server_side.by_peer
            assert len(server_side.reason) == 120
            with pytest.raises(ChannelClosed):
                chan.write_nowait("late")
            with pytest.raises(ChannelClosed) as info:
                await chan.recv()
            assert not info.value.by_peer

    asyncio.run(scenario())


def test_connection_refused_is_entry_point_not_found() -> None:
    async def scenario() -> None:
        with pytest.raises(HiveMindEntryPointNotFound):
            await connect(f"ws://127.0.0.1:{free_port()}", open_timeout=2)

    asyncio.run(scenario())


def test_http_401_on_upgrade_is_unauthorized() -> None:
    async def scenario() -> None:
        def refuse(conn: ServerConnection, request: Any) -> Any:
            return conn.respond(HTTPStatus.UNAUTHORIZED, "no\n")

        async def handler(ws: ServerConnection) -> None:  # pragma: no cover - never reached
            await ws.close()

        port = free_port()
        async with serve(handler, "127.0.0.1", port, process_request=refuse):
            with pytest.raises(UnauthorizedKeyError):
                await connect(f"ws://127.0.0.1:{port}", open_timeout=2)

    asyncio.run(scenario())


def test_slow_reader_overflows_the_backlog_with_try_again() -> None:
    """A peer that never reads fills the kernel buffer, then the bounded backlog."""

    async def scenario() -> None:
        ended: asyncio.Queue[Any] = asyncio.Queue()
        stop = asyncio.Event()

        async def handler(ws: ServerConnection) -> None:
            ws.transport.set_write_buffer_limits(high=1024)
            chan = ServerWebSocketChannel(ws, max_frames=8, max_bytes=1 << 20)
            try:
                for _ in range(100_000):
                    chan.write_nowait("y" * 4096)
                    await asyncio.sleep(0)
            except ChannelClosed as exc:
                await ended.put(exc)
            await stop.wait()

        port = free_port()
        async with serve(handler, "127.0.0.1", port, max_queue=1):
            client = await connect(f"ws://127.0.0.1:{port}", open_timeout=2, max_queue=1)
            # The client reads nothing: websockets stops reading at max_queue.
            exc = await asyncio.wait_for(ended.get(), 10)
            assert exc.code == CloseCode.TRY_AGAIN and not exc.by_peer
            stop.set()
            await client.close()

    asyncio.run(scenario())


def test_wait_writable_is_backpressure_not_a_close() -> None:
    """A writer that awaits ``wait_writable`` first waits out a peer that stops
    reading for a while, and every frame arrives, in order, on the same link."""

    async def scenario() -> list[str]:
        got: list[str] = []
        done = asyncio.Event()

        async def handler(ws: ServerConnection) -> None:
            ws.transport.pause_reading()
            await asyncio.sleep(1.0)
            ws.transport.resume_reading()
            async for frame in ws:
                got.append(str(frame)[:8])
                if len(got) == 300:
                    done.set()

        port = free_port()
        async with serve(handler, "127.0.0.1", port, max_queue=None):
            chan = await connect(
                f"ws://127.0.0.1:{port}", open_timeout=2, max_frames=8, max_bytes=1 << 20
            )
            chan.ws.transport.set_write_buffer_limits(high=1024)
            for i in range(300):
                await chan.wait_writable()
                chan.write_nowait(f"{i:08d}" + "z" * 65536)
            await asyncio.wait_for(done.wait(), 20)
            assert chan.close_code is None  # never closed itself with TRY_AGAIN
            await chan.close()
        return got

    got = asyncio.run(scenario())
    assert got == [f"{i:08d}" for i in range(300)]
