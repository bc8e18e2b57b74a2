"""LinkEngine over in-memory channels: the contract the hub's upstream link reuses.

No sockets: the channel factory hands out QueueChannels whose other end is a
hub-side Connection driven by its own LinkDriver.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hivemind_bus_client.client.config import ClientConfig
from hivemind_bus_client.client.engine import LinkEngine
from hivemind_bus_client.exceptions import ConnectTimeout
from hivemind_bus_client.identity import NodeIdentity
from hivemind_bus_client.protocol.connection import Connection, Event, MessageReceived, Role
from hivemind_bus_client.protocol.message import HiveMessage, HiveMessageType
from hivemind_bus_client.transport.channel import Channel, QueueChannel
from hivemind_bus_client.transport.driver import LinkDriver

T = HiveMessageType


class MemoryHub:
    """Accepts engine channels; echoes every BUS message back."""

    def __init__(self) -> None:
        self.links: list[tuple[LinkDriver, QueueChannel]] = []
        self.received: list[HiveMessage] = []

    async def open(self) -> Channel:
        hub_side = QueueChannel("client")
        client_side = QueueChannel("hub", sender=hub_side.feed, on_close=hub_side.feed_close)
        hub_side._sender = client_side.feed
        hub_side._on_close = client_side.feed_close
        conn = Connection(Role.HUB, password="pw", peer="ua::1::sat::s", node_id="memhub")
        driver: LinkDriver

        def on_event(event: Event) -> None:
            if isinstance(event, MessageReceived):
                self.received.append(event.message)
                if event.message.msg_type is T.BUS:
                    driver.send(event.message)

        driver = LinkDriver(conn, hub_side, on_event, name="memhub")
        driver.start()
        asyncio.get_running_loop().create_task(driver.run())
        self.links.append((driver, hub_side))
        return client_side


def _config(**kw: Any) -> ClientConfig:
    kw.setdefault("reconnect_delays", [0.01, 0.05, 0.1])
    return ClientConfig(host="memory", port=1, key="k", password="pw", **kw)


def test_engine_reports_messages_and_state_and_reconnects_with_a_fresh_connection() -> None:
    async def scenario() -> None:
        hub = MemoryHub()
        got: list[HiveMessage] = []
        states: list[bool] = []
        hellos: list[dict[str, Any]] = []
        engine = LinkEngine(
            _config(),
            NodeIdentity({}),
            channel_factory=hub.open,
            on_message=got.append,
            on_state=lambda up, why: states.append(up),
            on_hello=hellos.append,
        )
        await engine.open_link()
        engine.start_supervisor()
        assert engine.connected and states == [True]
        assert engine.node_id == "memhub" and any(h.get("node_id") for h in hellos)
        first = engine.conn
        await engine.send(HiveMessage(T.BUS, {"type": "echo", "data": {}}))
        for _ in range(200):
            if got:
                break
            await asyncio.sleep(0.005)
        assert [m.msg_type for m in got] == [T.BUS]
        # the hub drops the link: the engine reopens it with a fresh Connection
        driver, _ = hub.links[0]
        await driver.close(1011, "hub restarting")
        for _ in range(400):
            if engine.connects == 2 and engine.connected:
                break
            await asyncio.sleep(0.005)
        assert engine.connects == 2 and states == [True, False, True]
        assert engine.conn is not first
        await engine.close()
        assert not engine.connected

    asyncio.run(scenario())


def test_engine_honours_handshake_timeout_on_a_silent_channel() -> None:
    async def scenario() -> float:
        async def silent() -> Channel:
            return QueueChannel("silent", sender=lambda frame: None)

        engine = LinkEngine(
            _config(connect_timeout=10.0, handshake_timeout=0.3, reconnect=False),
            NodeIdentity({}),
            channel_factory=silent,
        )
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ConnectTimeout):
            await engine.open_link()
        return loop.time() - started

    took = asyncio.run(scenario())
    assert 0.25 < took < 2.0, took
