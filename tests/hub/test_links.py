"""SatelliteLink over an in-memory channel: registration, routing, closing, idle sweep.

No sockets: the hub end runs on a QueueChannel whose frames go straight into
a client Connection, and the client's frames are fed back.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from ovos_bus_client.message import Message

from hivemind_bus_client.exceptions import CloseCode
from hivemind_bus_client.message import HiveMessage, HiveMessageType
from hivemind_bus_client.protocol.connection import Connection, MessageReceived, Role, State
from hivemind_bus_client.transport.channel import QueueChannel
from hivemind_core.admission import Admission, Admitted
from hivemind_core.config import HubConfig
from hivemind_core.links import SatelliteLink
from hivemind_core.node import HubNode
from hivemind_core.throttle import AuthThrottle
from hivemind_core.upkeep import Upkeep

from .hubkit import HUB_KEY, RecordingAgent

T = HiveMessageType


@dataclass
class Record:
    client_id: int = 7
    name: str = "sat"
    api_key: str = "k"
    password: str = "pw"
    crypto_key: str | None = None
    is_admin: bool = False


class Pair:
    """A hub-side link and the client Connection at the other end of its channel."""

    def __init__(self, password: str = "pw") -> None:
        cfg = HubConfig(identity_trust=False, handshake_timeout=5.0)
        self.agent = RecordingAgent(cfg)
        self.node = HubNode(cfg, None, self.agent, private_key=HUB_KEY)
        self.node.bind()
        self.admission = Admission(self.node, AuthThrottle(5, 60.0))
        self.client = Connection(
            Role.CLIENT, password=password, hello={"session": {"session_id": "s1"}, "site_id": "k"}
        )
        self.received: list[HiveMessage] = []
        self.channel = QueueChannel("mem", sender=self._to_client)
        self.ended: list[SatelliteLink] = []
        self.link = SatelliteLink(
            self.node,
            self.admission,
            self.channel,
            Admitted(Record(), "ua", "k"),
            "mem",
            transport="memory",
            idle_timeout=0.5,
            on_end=self.ended.append,
        )

    def _to_client(self, frame: str | bytes) -> None:
        self.client.receive_frame(frame)
        for event in self.client.events():
            if isinstance(event, MessageReceived):
                self.received.append(event.message)
        self._flush()

    def _flush(self) -> None:
        for frame in self.client.frames_to_send():
            self.channel.feed(frame)

    async def start(self) -> asyncio.Task[Any]:
        self.client.start(asyncio.get_running_loop().time())
        task = self.link.spawn()
        self._flush()
        return task

    def send(self, message: HiveMessage) -> None:
        self.client.send(message)
        self._flush()


async def until(check: Any, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def test_a_link_registers_routes_and_unregisters_once() -> None:
    async def scenario() -> None:
        pair = Pair()
        task = await pair.start()
        await until(lambda: pair.link.peer is not None and pair.client.state is State.READY)
        peer = pair.link.peer
        assert peer == "ua::7::sat::s1"
        assert pair.node.sinks[peer] is pair.link and peer in pair.node.router.links
        pair.send(HiveMessage(T.BUS, Message("recognizer_loop:utterance", {"utterances": ["x"]})))
        await until(lambda: pair.agent.injected)
        # The agent sees the session namespaced for the client (hivemind_core.session).
        assert pair.agent.injected[0]["context"]["session"]["session_id"].endswith(":s1")
        pair.link.close(CloseCode.NORMAL, "bye")
        pair.link.close(CloseCode.INTERNAL, "again")  # idempotent
        ended = await asyncio.wait_for(task, 5)
        assert ended is not None and ended.code == CloseCode.NORMAL and not ended.by_peer
        assert pair.ended == [pair.link]
        assert peer not in pair.node.sinks and peer not in pair.node.router.links
        assert pair.link not in pair.node.connections
        assert pair.channel.close_code == CloseCode.NORMAL

    asyncio.run(scenario())


def test_a_wrong_password_counts_as_a_failed_login() -> None:
    async def scenario() -> None:
        pair = Pair(password="wrong")
        task = await pair.start()
        ended = await asyncio.wait_for(task, 5)
        assert ended is not None and ended.code == CloseCode.POLICY
        assert pair.node.stats["auth_failures"] == 1
        assert pair.link.peer is None and pair.ended == [pair.link]

    asyncio.run(scenario())


def test_the_sweep_closes_a_link_without_frames_for_its_idle_timeout() -> None:
    async def scenario() -> None:
        pair = Pair()
        task = await pair.start()
        await until(lambda: pair.link.peer is not None)
        upkeep = Upkeep(pair.node)
        now = pair.node.now()
        upkeep.sweep(now + 0.2)  # frames arrived: active
        assert not pair.link.closing
        upkeep.sweep(now + 0.3)
        assert not pair.link.closing
        upkeep.sweep(now + 1.0)  # nothing since the last look: idle
        assert pair.link.closing and pair.node.stats["idle_closed"] == 1
        ended = await asyncio.wait_for(task, 5)
        assert ended is not None and ended.code == CloseCode.GOING_AWAY

    asyncio.run(scenario())
