"""Protocol-level attacks on the real hub, over real sockets.

Each test starts ``hivemind-core listen`` in a subprocess (see ``hub.py``) and
plays the attacker with raw websocket frames built by the protocol's own
functions. The figure each test checks is in its name and its messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from ovos_bus_client.message import Message
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from hivemind_bus_client.exceptions import CloseCode
from hivemind_bus_client.message import HiveMessage, HiveMessageType
from hivemind_bus_client.serialization import encode_frame

from .hub import (
    Hub,
    MiB,
    eventually,
    first_handshake,
    plain_frame,
    running_hub,
    satellite,
    url,
    utterance,
)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with running_hub(tmp_path_factory.mktemp("security-hub")) as h:
        yield h


@pytest.fixture
def fresh_hub(tmp_path: Path) -> Iterator[Hub]:
    """A hub of its own, for tests that measure its peak memory."""
    with running_hub(tmp_path) as h:
        yield h


def run(coro: object, timeout: float = 60) -> None:
    asyncio.run(asyncio.wait_for(coro, timeout))  # type: ignore[arg-type]


def bomb(inflated: int) -> bytes:
    """A zlib-compressed binary PROPAGATE whose inner BUS inflates to ``inflated`` bytes."""
    inner = HiveMessage(HiveMessageType.BUS, Message("speak", {"utterance": "a" * inflated}, {}))
    return encode_frame(HiveMessage(HiveMessageType.PROPAGATE, inner), compressed=True)


async def drain_until_closed(ws: ClientConnection, timeout: float = 5.0) -> None:
    """Read until the hub closes the socket; fail if it is still open after ``timeout``."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except ConnectionClosed:
        return
    except TimeoutError:
        raise AssertionError(f"the hub kept the link open for {timeout:g} s") from None


def deep_message(mtype: HiveMessageType, wrappers: int) -> str:
    """A message wrapped ``wrappers`` times in PROPAGATE, serialized by the protocol."""
    msg = HiveMessage(HiveMessageType.BUS, Message("speak", {"utterance": "deep"}, {}))
    for _ in range(wrappers):
        msg = HiveMessage(mtype, msg)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20 * wrappers))  # only to build the attacker's frame
    try:
        return msg.serialize()
    finally:
        sys.setrecursionlimit(limit)


# -- item 5 ---------------------------------------------------------------------------


def test_plaintext_hello_on_a_keyed_link_is_refused_1008_and_adopted_0_times(hub: Hub) -> None:
    async def scenario() -> None:
        victim = await satellite(hub, "victim")
        before = len(victim.hellos)
        # On-path rewrite of a live link: a plaintext HELLO with another session.
        forged = {"session": {"session_id": "forged-session"}, "site_id": "attic"}
        await victim.send_raw(plain_frame(HiveMessageType.HELLO, forged))
        code = await victim.closed_with(5)
        adopted = [h for h in victim.hellos[before:] if "forged-session" in str(h.get("peer"))]
        assert not adopted, f"the forged session was adopted {len(adopted)} time(s)"
        assert code == CloseCode.POLICY, f"close code {code}, expected 1008"

    run(scenario())


def test_replayed_handshake_then_plaintext_hello_registers_0_phantoms(hub: Hub) -> None:
    async def scenario() -> None:
        honest = await satellite(hub, "sat")
        captured = first_handshake(honest)  # a sniffer saw it, and the access key
        async with connect(url(hub, hub.creds["sat"].key), max_size=None) as ws:
            await ws.send(captured)  # the hub answers: the key is one the attacker lacks
            phantom = {
                "session": {"session_id": "phantom"},
                "node_id": "phantom-node",
                "is_hub": True,
            }
            await asyncio.sleep(0.5)
            with contextlib.suppress(ConnectionClosed):  # the replay may be refused already
                await ws.send(plain_frame(HiveMessageType.HELLO, phantom))
            sealed_hellos = 0
            try:
                while True:
                    frame = await asyncio.wait_for(ws.recv(), 5)
                    if isinstance(frame, str) and "ciphertext" in frame:
                        sealed_hellos += 1  # the hub announcing a registered peer
            except Exception:
                pass
            assert sealed_hellos == 0, f"{sealed_hellos} phantom satellite(s) registered"
            assert ws.close_code == CloseCode.POLICY, f"close code {ws.close_code}"
        await honest.close()

    run(scenario())


# -- item 6 ---------------------------------------------------------------------------


def test_a_frame_replayed_4_times_is_acted_on_once(hub: Hub) -> None:
    async def scenario() -> None:
        sat = await satellite(hub, "sat")
        word = f"once-{uuid.uuid4().hex[:6]}"
        frame = await sat.emit(utterance(word))
        for _ in range(4):
            await sat.send_raw(frame)
        await eventually(lambda: word in sat.speaks(), 5)
        await asyncio.sleep(1.5)  # time for any replay to be answered
        n = sat.speaks().count(word)
        assert n == 1, f"a frame sent once and replayed 4 times was acted on {n} times"
        # Dropped, not fatal: the link still works.
        await sat.emit(utterance("after"))
        assert await eventually(lambda: "after" in sat.speaks(), 5), "the link stopped working"
        assert "dropped a replay frame" in hub.log()
        await sat.close()

    run(scenario())


def test_a_reflected_hub_frame_is_acted_on_0_times(hub: Hub) -> None:
    async def scenario() -> None:
        sat = await satellite(hub, "sat")
        final_hello = next(f for f in sat.received if isinstance(f, str) and "ciphertext" in f)
        before = len(sat.hellos)
        # The hub's own sealed HELLO, sent back: one key serves both directions,
        # so it authenticates; taken for ours, it would re-register the link.
        await sat.send_raw(final_hello)
        await asyncio.sleep(1.5)
        assert len(sat.hellos) == before, (
            f"the reflected HELLO was acted on {len(sat.hellos) - before} time(s)"
        )
        await sat.emit(utterance("still here"))
        assert await eventually(lambda: "still here" in sat.speaks(), 5)
        assert "dropped a reflection frame" in hub.log()
        await sat.close()

    run(scenario())


# -- item 7 ---------------------------------------------------------------------------


def test_a_12_kb_bomb_is_refused_1009_forwarded_0_times_and_costs_under_8_mib(
    fresh_hub: Hub,
) -> None:
    hub = fresh_hub

    async def scenario() -> None:
        victim = await satellite(hub, "victim")
        attacker = await satellite(hub, "sat")
        await attacker.emit(utterance("warm"))
        await eventually(lambda: "warm" in attacker.speaks(), 5)
        await asyncio.sleep(0.3)
        peak_before = hub.peak_rss()
        cipher = attacker.conn.cipher
        assert cipher is not None
        frame = cipher.seal_bytes(bomb(12 * MiB))
        assert len(frame) < 16_000, len(frame)
        await attacker.send_raw(frame)
        code = await attacker.closed_with(10)
        await asyncio.sleep(1.0)
        grown = (hub.peak_rss() - peak_before) / MiB
        forwarded = [m for m in victim.messages if m.msg_type is HiveMessageType.PROPAGATE]
        assert not forwarded, f"the bomb was forwarded {len(forwarded)} time(s)"
        assert code == CloseCode.TOO_BIG, f"close code {code}, expected 1009"
        assert grown < 8, (
            f"a {len(frame) // 1000} KB bomb raised the hub's peak RSS {grown:.0f} MiB"
        )
        await victim.close()

    run(scenario())


# -- item 8 ---------------------------------------------------------------------------


def test_a_pre_handshake_bomb_is_refused_1002_and_costs_under_4_mib(fresh_hub: Hub) -> None:
    hub = fresh_hub

    async def scenario() -> None:
        # Opening a link of a password row starts its v3 PSK derivation (Argon2id,
        # 64 MiB, once per row, cached): let it finish before measuring the bomb.
        warm = await satellite(hub, "sat")
        await warm.close()
        assert await eventually(lambda: "derived the v3 PSK" in hub.log(), 20)
        peak_before = hub.peak_rss()
        frame = bomb(12 * MiB)
        async with connect(url(hub, hub.creds["sat"].key), max_size=None) as ws:
            await ws.send(frame)  # with only the access key, before any handshake
            await drain_until_closed(ws)
            code = ws.close_code
        await asyncio.sleep(0.5)
        grown = (hub.peak_rss() - peak_before) / MiB
        assert code == CloseCode.PROTOCOL_ERROR, f"close code {code}, expected 1002"
        assert grown < 4, f"a pre-handshake {len(frame) // 1000} KB bomb cost {grown:.0f} MiB"

    run(scenario())


def test_a_20_kb_frame_before_the_handshake_is_refused_1009(hub: Hub) -> None:
    async def scenario() -> None:
        async with connect(url(hub, hub.creds["sat"].key), max_size=None) as ws:
            padded = plain_frame(HiveMessageType.HANDSHAKE, {"pad": "x" * 20_000})
            await ws.send(padded)
            await drain_until_closed(ws)
            assert ws.close_code == CloseCode.TOO_BIG, f"close code {ws.close_code}"

    run(scenario())


# -- item 18 --------------------------------------------------------------------------


def test_deep_json_before_the_handshake_closes_1002_with_0_tracebacks(hub: Hub) -> None:
    async def scenario() -> None:
        payload: dict[str, object] = {}
        for _ in range(1500):
            payload = {"a": payload}
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(20_000)  # only to build the attacker's frame
        try:
            text = plain_frame(HiveMessageType.HANDSHAKE, payload)
        finally:
            sys.setrecursionlimit(limit)
        assert len(text) < 16 * 1024  # under the pre-handshake bound: it gets parsed
        async with connect(url(hub, hub.creds["sat"].key), max_size=None) as ws:
            await ws.send(text)
            await drain_until_closed(ws)
            assert ws.close_code == CloseCode.PROTOCOL_ERROR, f"close code {ws.close_code}"
        await asyncio.sleep(0.3)
        assert "RecursionError" not in hub.log()

    run(scenario())


@pytest.mark.parametrize("wrappers", [40, 1500])
def test_deeply_wrapped_messages_close_1002_with_0_tracebacks(hub: Hub, wrappers: int) -> None:
    async def scenario() -> None:
        sat = await satellite(hub, "sat")
        cipher = sat.conn.cipher
        assert cipher is not None
        await sat.send_raw(cipher.seal_text(deep_message(HiveMessageType.PROPAGATE, wrappers)))
        code = await sat.closed_with(5)
        assert code == CloseCode.PROTOCOL_ERROR, f"{wrappers} wrappers: close code {code}"
        await asyncio.sleep(0.3)
        log = hub.log()
        assert "RecursionError" not in log, log[-3000:]
        assert "error handling a frame" not in log, log[-3000:]

    run(scenario())


def test_no_password_reaches_the_hubs_verbose_log(hub: Hub) -> None:
    async def scenario() -> None:
        sat = await satellite(hub, "sat")
        await sat.emit(utterance("secret check"))
        await eventually(lambda: "secret check" in sat.speaks(), 5)
        await sat.close()

    run(scenario())
    log = hub.log()
    assert "secret check" in log or "keyed" in log  # the verbose log is on
    for name, creds in hub.creds.items():
        assert creds.password not in log, f"{name}'s password is in the hub's -v log"
