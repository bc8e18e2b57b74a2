"""Peers that accept a link and then never speak HiveMind (timeout tests)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

from websockets.asyncio.server import ServerConnection, serve

from support.net import LOOPBACK, free_port


@contextlib.contextmanager
def silent_websocket_server(host: str = LOOPBACK) -> Iterator[int]:
    """A websocket server on a free port that accepts upgrades and never sends a frame.

    Runs on its own event loop in a thread; yields the port once it is bound.
    """
    port = free_port(host)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop: list[asyncio.Event] = []

    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()  # never speaks; ends with the connection

    async def main() -> None:
        stop.append(asyncio.Event())
        async with serve(handler, host, port):
            started.set()
            await stop[0].wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(10), "the silent websocket server did not start"
    try:
        yield port
    finally:
        loop.call_soon_threadsafe(stop[0].set)
        thread.join(10)
