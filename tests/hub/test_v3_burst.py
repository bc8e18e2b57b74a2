"""The v3 PSK under load: one derivation per row, off the event loop, bounded.

A burst of 200 v3 links of one client (from another process, so only the
hub's work runs on this loop) must cost one Argon2id, run in a worker thread
while the hub's loop keeps turning (an Argon2id on the loop would stall it for
0.2-0.4 s; 200 of them for a minute).
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from hivemind_core import noise_keys
from hivemind_core.keywork import KeyWork

from .hubkit import TestClient, auth_path, raw_connect, running_hub
from .test_v3_hub import PASSWORD, completed, psk_of, v3_client

BURST = 200
#: Generous, for a loaded 2-core machine (the accept burst itself costs tens
#: of milliseconds per loop turn); no derivation on the loop could pass it.
MAX_LAG = 1.0
SCRIPT = Path(__file__).with_name("_v3_burst.py")


class LagMeter:
    """A 5 ms ticker on the running loop: when it ticked, and its worst delay."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.ticks: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + 0.005
            await asyncio.sleep(0.005)
            self.worst = max(self.worst, loop.time() - due)
            self.ticks.append(time.perf_counter())

    def between(self, start: float, end: float) -> int:
        return sum(1 for t in self.ticks if start <= t <= end)

    def __enter__(self) -> LagMeter:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def _burst(monkeypatch: pytest.MonkeyPatch) -> None:
    runs: list[tuple[int, float, float]] = []
    real = noise_keys.derive_psk

    def watched(password: str, node_id: str) -> bytes:
        start = time.perf_counter()
        try:
            return real(password, node_id)
        finally:
            runs.append((threading.get_ident(), start, time.perf_counter()))

    monkeypatch.setattr(noise_keys, "derive_psk", watched)
    async with running_hub(max_connections_per_address=0, max_connections=0) as hub:
        row = hub.db.add_client("sat", password=PASSWORD)
        psk = psk_of(PASSWORD, hub.server.node_id)
        # Spawned before the meter starts (a fork is the test's cost, not the
        # hub's); the interpreter's start-up delays the burst well past it.
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(SCRIPT),
            str(hub.port),
            row.api_key,
            PASSWORD,
            psk.hex(),
            str(BURST),
            stdout=asyncio.subprocess.PIPE,
        )
        with LagMeter() as lag:
            out, _ = await asyncio.wait_for(proc.communicate(), 120)
        result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        assert result["ready"] == BURST, result
        stats = hub.server.stats
        assert stats.get("v3_XXpsk2", 0) == BURST
        # One derivation for the whole burst, in a worker thread ...
        assert hub.server.node.noise.psks.derivations == 1
        assert len(runs) == 1, runs
        thread, start, end = runs[0]
        assert thread != threading.get_ident()
        # ... while the hub's loop kept turning.
        during = lag.between(start, end)
        print(
            f"burst of {BURST} v3 links: {result['seconds']} s; Argon2id {end - start:.3f} s, "
            f"{during} loop ticks during it; worst loop lag {lag.worst * 1000:.0f} ms"
        )
        assert during >= 1, f"the loop ticked {during} times in {end - start:.3f} s of Argon2id"
        assert lag.worst < MAX_LAG, f"the hub's loop stalled {lag.worst * 1000:.0f} ms"


def test_a_burst_of_200_v3_links_of_one_client_derives_once_off_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asyncio.run(_burst(monkeypatch))


async def _password_change() -> None:
    async with running_hub() as hub:
        row = hub.db.add_client("sat", password=PASSWORD)
        first = await v3_client(hub, row.api_key).connect()
        await first.close()
        new_password = PASSWORD + "-changed"
        row = hub.db.get_client(row.client_id)
        row.password = new_password
        hub.db.update_client(row)
        # The old PSK is no longer handed out: the old password fails (KK would
        # fail at m1; XX leaves the client to find the wrong m2)...
        stale = v3_client(hub, row.api_key, PASSWORD)
        try:
            await stale.connect(timeout=5.0)
            raise AssertionError("a client with the old password got in")
        except ConnectionError:
            pass
        # ... and the new one works, after a second derivation.
        fresh = await v3_client(hub, row.api_key, new_password).connect()
        assert completed(fresh).protocol == 3
        await fresh.close()
        assert hub.server.node.noise.psks.derivations == 2


def test_a_password_change_invalidates_the_cached_psk() -> None:
    asyncio.run(_password_change())


async def _busy() -> None:
    async with running_hub() as hub:
        node = hub.server.node
        node.keywork.shutdown()
        node.keywork = KeyWork(workers=1, max_pending=1)
        rows = [hub.db.add_client(f"sat{i}", password=f"{PASSWORD}-{i}") for i in range(3)]
        clients = [TestClient(hub.port, r.api_key, r.password) for r in rows]
        outcomes = await asyncio.gather(
            *(c.connect(timeout=10.0) for c in clients), return_exceptions=True
        )
        refused = [c for c in clients if c.close_code == 1013]
        assert refused, outcomes
        assert all(c.close_reason == "try again later" for c in refused)
        # Counted per refused derivation: a refused link may have had its PSK
        # and its password-handshake key refused.
        assert node.stats.get("key_work_busy", 0) >= len(refused)
        for c in clients:
            await c.close()


def test_a_full_key_executor_closes_new_links_1013() -> None:
    asyncio.run(_busy())


async def _gone_before_the_psk() -> None:
    async with running_hub() as hub:
        row = hub.db.add_client("sat", password=PASSWORD)
        ws = await raw_connect(hub.port, auth_path(row.api_key))
        await ws.recv()  # HELLO: the link is open and its derivation under way
        await ws.close()
        node = hub.server.node
        deadline = asyncio.get_running_loop().time() + 10
        while node.stats.get("psk_late", 0) < 1:
            assert asyncio.get_running_loop().time() < deadline, node.stats
            await asyncio.sleep(0.02)
        assert len(node.noise.psks) == 1  # derived anyway, and cached for the next link
        assert not node.connections
        # The next link of that row takes the cached PSK: no second derivation.
        sat = await v3_client(hub, row.api_key).connect()
        await sat.close()
        assert node.noise.psks.derivations == 1


def test_a_link_gone_before_its_psk_drops_it_and_the_next_uses_the_cache() -> None:
    asyncio.run(_gone_before_the_psk())
