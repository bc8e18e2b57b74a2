"""Resource bounds of the real hub under hostile satellites, over real sockets.

Each test starts ``hivemind-core listen`` in a subprocess (see ``hub.py``) and
plays the attacker. The figure each test checks is in its name and its messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State as WsState

from hivemind_bus_client.exceptions import CloseCode

from .hub import (
    Hub,
    MiB,
    Satellite,
    eventually,
    running_hub,
    satellite,
    url,
    utterance,
)


@pytest.fixture
def fresh_hub(tmp_path: Path) -> Iterator[Hub]:
    """A hub of its own, for tests that measure its peak memory."""
    with running_hub(tmp_path) as h:
        yield h


async def drain(ws: ClientConnection) -> None:
    """Read and drop frames until the socket closes."""
    with contextlib.suppress(ConnectionClosed):
        async for _ in ws:
            pass


def run(coro: object, timeout: float = 90) -> None:
    asyncio.run(asyncio.wait_for(coro, timeout))  # type: ignore[arg-type]


def test_never_reading_satellite_costs_under_64_mib_and_is_closed_1013(fresh_hub: Hub) -> None:
    """A satellite that pipelines big requests and never reads the answers.

    The hub must cap that link's backlog in bytes (a few MiB by default) and
    close it with 1013, its resident memory growing by less than 64 MiB.
    """
    hub = fresh_hub

    async def attack() -> tuple[int | None, int]:
        sat = await satellite(hub)
        assert sat.reader is not None
        sat.reader.cancel()  # from now on nobody reads: the socket's buffers fill up
        with contextlib.suppress(asyncio.CancelledError):
            await sat.reader
        base = hub.peak_rss()
        words = "w" * (256 * 1024)  # each answer is a quarter MiB of speak (before encoding)
        for _ in range(600):  # 150 MiB of answers if the hub queued them all
            if sat.ws.protocol.state is not WsState.OPEN:
                break
            try:
                await asyncio.wait_for(sat.emit(utterance(words)), 10)
            except Exception:
                break
            await asyncio.sleep(0.01)
        growth = hub.peak_rss() - base
        # Now read: what the kernel still held, then the hub's close frame.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(drain(sat.ws), 8)
        rcvd = sat.ws.protocol.close_rcvd
        return (rcvd.code if rcvd is not None else None), growth

    result: list[tuple[int | None, int]] = []

    async def main() -> None:
        result.append(await attack())

    run(main())
    code, growth = result[0]
    assert growth < 64 * MiB, f"hub RSS grew by {growth / MiB:.0f} MiB (limit 64 MiB)"
    assert code == CloseCode.TRY_AGAIN, f"link closed with {code}, expected 1013"


def test_http_poll_queue_is_bounded_in_bytes_closes_1013() -> None:
    """An HTTP satellite that stops polling: its queue closes 1013 past ``max_bytes``."""
    from hivemind_bus_client.transport.channel import ChannelClosed
    from hivemind_core.listeners.http_wire import PollChannel

    async def fill() -> PollChannel:
        chan = PollChannel("127.0.0.1", max_frames=1000, max_bytes=1000)
        chan.write_nowait("x" * 400)
        chan.write_nowait(b"y" * 400)
        chan.drain_text()
        chan.write_nowait("z" * 500)  # 900 bytes queued: still open
        with pytest.raises(ChannelClosed):
            chan.write_nowait("w" * 200)  # 1100 bytes > 1000
        return chan

    chan = asyncio.run(fill())
    assert chan.close_code == CloseCode.TRY_AGAIN, "1013 past the byte bound"
    assert not chan.text_out and not chan.binary_out, "the queue is released on close"


@contextlib.contextmanager
def capped_hub(tmp: Path, total: int, per_address: int) -> Iterator[Hub]:
    """A hub whose ``server.json`` sets the connection caps."""
    conf = tmp / "config" / "hivemind-core"
    conf.mkdir(parents=True, exist_ok=True)
    settings = {"max_connections": total, "max_connections_per_address": per_address}
    (conf / "server.json").write_text(json.dumps(settings))
    with running_hub(tmp) as h:
        yield h


async def closed_code(ws: ClientConnection, timeout: float = 3.0) -> tuple[int | None, str]:
    """Read until the hub closes ``ws``: (code, reason), or (None, "") if it stays open."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(drain(ws), timeout)
    rcvd = ws.protocol.close_rcvd
    return (rcvd.code, rcvd.reason) if rcvd is not None else (None, "")


def test_connection_caps_3_per_address_5_in_total_refuse_with_1013(tmp_path: Path) -> None:
    """Past 3 sockets from one address, or 5 in all, a new socket is closed 1013 with a reason."""
    with capped_hub(tmp_path, total=5, per_address=3) as hub:

        async def probe() -> None:
            target = url(hub, hub.creds["sat"].key)
            opened = [await connect(target, ping_interval=None) for _ in range(3)]
            extra = await connect(target, ping_interval=None)
            code, reason = await closed_code(extra)
            assert code == CloseCode.TRY_AGAIN, f"4th socket from one address: {code}, not 1013"
            assert "address" in reason, reason
            for src in ("127.0.0.2", "127.0.0.3"):
                opened.append(await connect(target, ping_interval=None, local_addr=(src, 0)))
            sixth = await connect(target, ping_interval=None, local_addr=("127.0.0.4", 0))
            code, reason = await closed_code(sixth)
            assert code == CloseCode.TRY_AGAIN, f"6th socket in all: {code}, not 1013"
            assert "too many connections" in reason, reason
            await opened.pop(0).close()
            await asyncio.sleep(0.3)
            sat = await satellite(hub)  # room again: an honest satellite gets in
            await sat.close()
            for ws in opened:
                await ws.close()

        run(probe(), timeout=60)


LOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
"""


async def round_trip(sat: Satellite, text: str, timeout: float = 15.0) -> float:
    """Seconds from an utterance to its ``speak`` answer."""
    start = time.monotonic()
    await sat.emit(utterance(text))
    assert await eventually(lambda: text in sat.speaks(), timeout), f"no answer to {text}"
    return time.monotonic() - start


def test_6s_sqlite_lock_does_not_slow_a_round_trip_beyond_half_a_second(tmp_path: Path) -> None:
    """Another process holds the database's write lock for 6 s while a satellite
    connects and leaves (``last_seen`` writes): a connected satellite's round
    trips stay under 0.5 s."""
    db = tmp_path / "data" / "hivemind-core" / "clients.db"

    async def probe(hub: Hub) -> float:
        sat = await satellite(hub)
        await round_trip(sat, "warm up")
        locker = await asyncio.create_subprocess_exec(
            sys.executable, "-c", LOCKER, str(db), "6", stdout=asyncio.subprocess.PIPE
        )
        assert locker.stdout is not None
        assert (await locker.stdout.readline()).strip() == b"locked"

        async def come_and_go() -> None:
            other = await satellite(hub, "victim")
            await asyncio.sleep(0.5)
            await other.close()

        visitor = asyncio.get_running_loop().create_task(come_and_go())
        worst = 0.0
        end = time.monotonic() + 5
        n = 0
        while time.monotonic() < end:
            n += 1
            worst = max(worst, await round_trip(sat, f"during the lock {n}"))
            await asyncio.sleep(0.05)
        await visitor
        await locker.wait()
        await sat.close()
        return worst

    result: list[float] = []

    async def main(hub: Hub) -> None:
        result.append(await probe(hub))

    with running_hub(tmp_path) as hub:
        assert db.exists(), db
        run(main(hub))
    assert result[0] < 0.5, f"a round trip took {result[0]:.2f} s during a 6 s database lock"
