"""BoundedBacklog and QueueChannel: the channel contract without sockets."""

from __future__ import annotations

import asyncio

import pytest

from hivemind_bus_client.exceptions import CloseCode
from hivemind_bus_client.transport.channel import (
    BoundedBacklog,
    Channel,
    ChannelClosed,
    QueueChannel,
    truncate_reason,
)


def test_backlog_is_bounded_in_frames() -> None:
    backlog = BoundedBacklog(max_frames=2, max_bytes=1000)
    assert backlog.push("a") and backlog.push(b"b")
    assert not backlog.push("c")
    assert len(backlog) == 2
    assert backlog.pop() == "a" and backlog.pop() == b"b"
    assert not backlog and backlog.nbytes == 0


def test_backlog_is_bounded_in_bytes() -> None:
    backlog = BoundedBacklog(max_frames=100, max_bytes=10)
    assert backlog.push(b"12345678")
    assert not backlog.push("é" * 2)  # 4 bytes of UTF-8: 12 > 10
    assert backlog.push("é")  # 2 bytes: exactly 10
    assert backlog.nbytes == 10
    backlog.clear()
    assert backlog.nbytes == 0 and len(backlog) == 0


def test_backlog_rejects_nonsense_bounds() -> None:
    with pytest.raises(ValueError):
        BoundedBacklog(0, 10)


def test_truncate_reason_keeps_whole_characters() -> None:
    text = truncate_reason("é" * 100)
    assert len(text.encode("utf-8")) <= 120 and text == "é" * 60


def test_queue_channel_contract() -> None:
    async def scenario() -> None:
        closes: list[tuple[int, str]] = []
        chan = QueueChannel("peer:1", on_close=lambda c, r: closes.append((c, r)))
        assert isinstance(chan, Channel)
        chan.feed("one")
        chan.feed(b"two")
        assert await chan.recv() == "one"
        assert await chan.recv() == b"two"
        chan.write_nowait("out")
        assert chan.outbox.pop() == "out"
        pending = asyncio.ensure_future(chan.recv())
        await asyncio.sleep(0)
        await chan.close(CloseCode.POLICY, "bye")
        with pytest.raises(ChannelClosed) as info:
            await pending
        assert (info.value.code, info.value.reason, info.value.by_peer) == (1008, "bye", False)
        await chan.close(1000, "again")  # idempotent
        assert (chan.close_code, chan.close_reason) == (1008, "bye")
        assert closes == [(1008, "bye")]
        with pytest.raises(ChannelClosed):
            chan.write_nowait("late")
        with pytest.raises(ChannelClosed):
            await chan.recv()

    asyncio.run(scenario())


def test_queue_channel_full_outbox_closes_try_again() -> None:
    async def scenario() -> None:
        chan = QueueChannel(max_frames=1)
        chan.write_nowait("a")
        with pytest.raises(ChannelClosed) as info:
            chan.write_nowait("b")
        assert info.value.code == CloseCode.TRY_AGAIN
        assert chan.close_code == CloseCode.TRY_AGAIN

    asyncio.run(scenario())


def test_peer_close_is_reported_by_peer() -> None:
    async def scenario() -> None:
        chan = QueueChannel()
        chan.feed("last")
        chan.feed_close(1001, "going away")
        assert await chan.recv() == "last"
        with pytest.raises(ChannelClosed) as info:
            await chan.recv()
        assert info.value.by_peer and info.value.code == 1001

    asyncio.run(scenario())
