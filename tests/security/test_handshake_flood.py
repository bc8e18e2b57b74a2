"""Handshake floods against the real hub, over real sockets (issue #11, item 4).

Each test starts ``hivemind-core listen`` in a subprocess (``hub.py``) with the
loop watch on (``loop_watch``: the hub measures how late its own 10 ms ticks
wake, so how long its event loop was blocked) and floods it from 10 sockets
with pre-built password HANDSHAKE frames, paced to 25 a second per socket. A
socket the hub closes connects again at once. The achieved rate is printed
and checked, then an honest satellite of another key connects during the
flood and makes a round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from hivemind_bus_client import crypto
from hivemind_bus_client.exceptions import CloseCode
from hivemind_bus_client.message import HiveMessage, HiveMessageType

from .hub import Hub, eventually, first_handshake, running_hub, satellite, url, utterance

SOCKETS = 10
PER_SOCKET = 25  # frames a second
FLOOD_S = 3.0
#: The loop must not be blocked ~50 ms; the watch measures lateness, which on a
#: shared 2-core machine also holds the time the OS ran something else (23 to
#: 74 ms seen while other test suites ran). Before the keys went off the loop,
#: the same flood blocked it for seconds (the honest client timed out).
LAG_BOUND_MS = 100


@pytest.fixture
def watched_hub(tmp_path: Path) -> Iterator[Hub]:
    """A hub of its own that measures its event loop's lateness every 10 ms."""
    conf = tmp_path / "config" / "hivemind-core"
    conf.mkdir(parents=True, exist_ok=True)
    settings = {"loop_watch": 0.01, "loop_stall_ms": 20}
    (conf / "server.json").write_text(json.dumps(settings))
    with running_hub(tmp_path) as h:
        yield h


def fresh_handshakes(password: str, n: int) -> list[str]:
    """``n`` password HANDSHAKE frames, each on a new IV: what a holder of the password
    (a stolen satellite's credentials) sends to make the hub derive ``n`` keys."""
    out = []
    for _ in range(n):
        payload = {
            "binarize": False,
            "encodings": ["JSON-B64"],
            "ciphers": ["AES-GCM"],
            "envelope": crypto.password_envelope(password),
        }
        out.append(HiveMessage(HiveMessageType.HANDSHAKE, payload).serialize())
    return out


def worst_loop_lag_ms(hub: Hub, since: int) -> float:
    """The worst loop lateness the hub logged after log offset ``since`` (it logs
    every stall over 20 ms)."""
    log = hub.log()
    assert "watching the event loop" in log[:since], "the hub's loop watch did not start"
    found = re.findall(r"event loop stalled (\d+) ms", log[since:])
    return max((float(x) for x in found), default=0.0)


async def flood(target: str, frames: list[str], stop: asyncio.Event) -> tuple[int, Counter]:
    """Send ``frames`` round-robin from SOCKETS sockets at PER_SOCKET a second each, until
    ``stop``; returns the frames sent and the hub's close codes, counted."""
    sent = [0]
    codes: Counter = Counter()
    it = iter(range(10**9))

    async def one() -> None:
        while not stop.is_set():
            ws = None
            with contextlib.suppress(Exception):
                async with connect(target, ping_interval=None, open_timeout=5) as ws:
                    next_at = time.monotonic()
                    while not stop.is_set():
                        await ws.send(frames[next(it) % len(frames)])
                        sent[0] += 1
                        next_at += 1 / PER_SOCKET
                        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            if ws is not None and ws.close_code is not None and not stop.is_set():
                codes[ws.close_code] += 1

    tasks = [asyncio.get_running_loop().create_task(one()) for _ in range(SOCKETS)]
    await stop.wait()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return sent[0], codes


def flood_then_connect(
    hub: Hub, frames_of: str, since: list[int]
) -> tuple[float, float, float, Counter]:
    """Flood for FLOOD_S, connect an honest satellite and make a round trip during it.

    Returns (achieved frames/s, seconds to connect, seconds of the round trip,
    the hub's close codes to the flood); ``since[0]`` becomes the hub log's
    length when the flood started.
    """

    async def scenario() -> tuple[float, float, float, Counter]:
        # One honest session first: a capture for the replay, and the hub's
        # first-use costs (imports, the database, the key workers) paid before.
        sat = await satellite(hub, "sat")
        await sat.emit(utterance("warm up"))
        assert await eventually(lambda: "warm up" in sat.speaks(), 5)
        await sat.close()
        frames = (
            [first_handshake(sat)]
            if frames_of == "replayed"
            else fresh_handshakes(hub.creds["sat"].password, 4000)
        )
        await asyncio.sleep(0.3)
        since[0] = len(hub.log())
        stop = asyncio.Event()
        started = time.monotonic()
        flooding = asyncio.get_running_loop().create_task(
            flood(url(hub, hub.creds["sat"].key), frames, stop)
        )
        await asyncio.sleep(FLOOD_S)
        t0 = time.monotonic()
        honest = await satellite(hub, "victim")
        took = time.monotonic() - t0
        t1 = time.monotonic()
        await honest.emit(utterance("during the flood"))
        answered = await eventually(lambda: "during the flood" in honest.speaks(), 5)
        trip = time.monotonic() - t1
        stop.set()
        sent, codes = await flooding
        rate = sent / (time.monotonic() - started)
        print(f"flood ({frames_of}): {sent} frames, {rate:.0f} frames/s, closes {dict(codes)}")
        await honest.close()
        assert answered, "the honest satellite's round trip got no answer during the flood"
        return rate, took, trip, codes

    return asyncio.run(asyncio.wait_for(scenario(), 90))


@pytest.mark.parametrize(("frames_of", "min_rate"), [("fresh", 150), ("replayed", 75)])
def test_honest_client_connects_within_1s_and_loop_lag_stays_under_100ms_in_a_200_per_s_handshake_flood(
    watched_hub: Hub, frames_of: str, min_rate: float
) -> None:
    """10 sockets send password HANDSHAKEs paced to 250 a second in all: fresh
    ones (>= 150 a second achieved), each a key derivation for a hub that
    derives on demand, or a captured one replayed (>= 75 a second: the hub
    closes each replay at once, so every frame costs the attacker a new
    connection). The hub's loop lags less than LAG_BOUND_MS, and a new honest
    satellite connects within 1 s and gets its answer."""
    hub = watched_hub
    since = [0]
    rate, took, trip, codes = flood_then_connect(hub, frames_of, since)
    print(f"honest: connect {took * 1e3:.0f} ms, round trip {trip * 1e3:.0f} ms")
    assert rate >= min_rate, f"the flood only reached {rate:.0f} frames/s"
    assert took < 1.0, f"the honest client took {took:.2f} s to connect during the flood"
    lag = worst_loop_lag_ms(hub, since[0])
    print(f"worst hub loop lag during the flood: {lag:.0f} ms")
    assert lag < LAG_BOUND_MS, f"the hub's event loop was blocked {lag:.0f} ms during the flood"
    # The flood was refused, not served: replays 1008, fresh IVs past the key's budget 1013.
    expected = CloseCode.POLICY if frames_of == "replayed" else CloseCode.TRY_AGAIN
    assert codes[expected] > 0, f"the hub never closed the flood with {expected}: {dict(codes)}"
