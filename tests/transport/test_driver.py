"""LinkDriver over in-memory channels: the handshake, messages, timers and closes."""

from __future__ import annotations

import asyncio

from hivemind_bus_client.exceptions import CloseCode, ConnectTimeout, NegotiationFailed
from hivemind_bus_client.protocol.connection import (
    CloseRequested,
    Connection,
    Event,
    HandshakeComplete,
    MessageReceived,
    Role,
)
from hivemind_bus_client.protocol.message import HiveMessage, HiveMessageType
from hivemind_bus_client.transport.channel import QueueChannel, channel_pair
from hivemind_bus_client.transport.driver import LinkDriver


class Wire:
    """Two channels joined in memory: ``client`` and ``hub``."""

    def __init__(self) -> None:
        self.client, self.hub = channel_pair("hub", "client")


def _pair(**client_kw: object) -> tuple[Wire, Connection, Connection]:
    hub = Connection(Role.HUB, password="pw", peer="p", node_id="hub")
    client = Connection(Role.CLIENT, password="pw", **client_kw)  # type: ignore[arg-type]
    return Wire(), client, hub


def test_handshake_and_message_over_drivers() -> None:
    async def scenario() -> None:
        wire, cconn, hconn = _pair()
        c_events: list[Event] = []
        h_events: list[Event] = []
        cd = LinkDriver(cconn, wire.client, c_events.append, name="client")
        hd = LinkDriver(hconn, wire.hub, h_events.append, name="hub")
        hd.start()
        cd.start()
        c_run = asyncio.ensure_future(cd.run())
        h_run = asyncio.ensure_future(hd.run())
        for _ in range(200):
            if any(isinstance(e, HandshakeComplete) for e in c_events):
                break
            await asyncio.sleep(0.005)
        assert any(isinstance(e, HandshakeComplete) for e in h_events)
        cd.send(HiveMessage(HiveMessageType.BUS, {"type": "ping", "data": {}}))
        for _ in range(200):
            got = [e for e in h_events if isinstance(e, MessageReceived)]
            if any(m.message.msg_type is HiveMessageType.BUS for m in got):
                break
            await asyncio.sleep(0.005)
        else:
            raise AssertionError("the hub never got the BUS message")
        await cd.close(CloseCode.NORMAL, "done")
        ended = await asyncio.wait_for(c_run, 2)
        assert (ended.code, ended.by_peer) == (1000, False)
        hub_end = await asyncio.wait_for(h_run, 2)
        assert hub_end.code == 1000 and hub_end.by_peer

    asyncio.run(scenario())


def test_handshake_timer_closes_a_silent_link() -> None:
    """The driver arms the connection's deadline: a silent hub ends the link in time."""

    async def scenario() -> None:
        chan = QueueChannel("silent", sender=lambda f: None)
        conn = Connection(Role.CLIENT, password="pw", handshake_timeout=0.2)
        events: list[Event] = []
        driver = LinkDriver(conn, chan, events.append)
        loop = asyncio.get_running_loop()
        start = loop.time()
        driver.start()
        ended = await asyncio.wait_for(driver.run(), 3)
        took = loop.time() - start
        assert 0.15 < took < 1.0
        assert ended.code == CloseCode.TRY_AGAIN and not ended.by_peer and not ended.greeted
        assert isinstance(ended.error, ConnectTimeout)
        assert chan.close_code == CloseCode.TRY_AGAIN
        assert any(isinstance(e, CloseRequested) for e in events)

    asyncio.run(scenario())


def test_a_fault_closes_with_its_error() -> None:
    async def scenario() -> None:
        wire, cconn, hconn = _pair(encodings=["JSON-B64"])
        hconn.encodings = ["JSON-HEX"]
        cd = LinkDriver(cconn, wire.client, lambda e: None)
        hd = LinkDriver(hconn, wire.hub, lambda e: None)
        hd.start()
        cd.start()
        h_end, c_end = await asyncio.wait_for(asyncio.gather(hd.run(), cd.run()), 3)
        assert isinstance(h_end.error, NegotiationFailed) and not h_end.by_peer
        assert c_end.by_peer and c_end.code == CloseCode.POLICY
        assert c_end.reason.startswith("no common encoding")

    asyncio.run(scenario())
