"""Helpers for hub tests over real websockets on loopback.

``running_hub(...)`` starts an in-process :class:`HubServer` on a free port with
a throwaway SQLite database; :class:`TestClient` is a minimal satellite built
from ``websockets`` and our sans-I/O ``Connection(Role.CLIENT)``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from ovos_bus_client.message import Message
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from hivemind_bus_client import crypto
from hivemind_bus_client.connection import (
    CloseRequested,
    Connection,
    HandshakeComplete,
    HelloReceived,
    MessageReceived,
    Role,
    State,
)
from hivemind_bus_client.message import HiveMessage, HiveMessageType
from hivemind_core.agents.base import Agent
from hivemind_core.agents.embedded import EmbeddedAgent
from hivemind_core.config import HubConfig
from hivemind_core.database import open_database
from hivemind_core.server import HubServer

HUB_KEY = crypto.create_private_key()
CLIENT_KEY = crypto.create_private_key()
T = HiveMessageType


class RecordingAgent(Agent):
    """Records injected messages; answers utterances like the embedded agent."""

    name = "recording"

    def __init__(self, config: HubConfig | None = None) -> None:
        super().__init__(config)
        self.injected: list[dict[str, Any]] = []
        self.observed: list[tuple[dict[str, Any], str]] = []
        self.embedded = EmbeddedAgent(config)

    async def start(self, reply: Any) -> None:
        await super().start(reply)
        await self.embedded.start(reply)

    def inject(self, message: dict[str, Any]) -> None:
        self.injected.append(message)
        self.embedded.inject(message)

    def observe(self, message: dict[str, Any], peer: str) -> None:
        self.observed.append((message, peer))


@dataclasses.dataclass
class Hub:
    server: HubServer
    db: Any
    agent: Any

    @property
    def port(self) -> int:
        return self.server.port


@contextlib.asynccontextmanager
async def running_hub(
    agent: Agent | None = None, permission_poll: float = 0.1, **overrides: Any
) -> AsyncIterator[Hub]:
    """A hub on 127.0.0.1:<free port> with a throwaway database."""
    with tempfile.TemporaryDirectory(prefix="hub-test-") as tmp:
        cfg = HubConfig(host="127.0.0.1", port=0, db_path=str(Path(tmp) / "clients.db"))
        cfg.identity_trust = False  # never the developer's own identity file
        for k, v in overrides.items():
            setattr(cfg, k, v)
        db = open_database(cfg, backend="sqlite", path=cfg.db_path)
        agent = agent or RecordingAgent(cfg)
        server = HubServer(cfg, db, agent, private_key=HUB_KEY, permission_poll=permission_poll)
        await server.start()
        try:
            yield Hub(server, db, agent)
        finally:
            await server.stop()
            db.close()


def auth_path(key: str, useragent: str = "test-ua") -> str:
    token = base64.b64encode(f"{useragent}:{key}".encode()).decode()
    return f"/?authorization={token}"


class TestClient:
    """A satellite speaking through our sans-I/O client connection."""

    __test__ = False

    def __init__(
        self,
        port: int,
        key: str,
        password: str | None = None,
        *,
        useragent: str = "test-ua",
        session_id: str = "s1",
        site_id: str = "kitchen",
        private_key: Any = None,
        crypto_key: str | None = None,
        hello: dict[str, Any] | None = None,
        **conn_kw: Any,
    ) -> None:
        self.url = f"ws://127.0.0.1:{port}{auth_path(key, useragent)}"
        self.conn = Connection(
            Role.CLIENT,
            password=password,
            crypto_key=crypto_key,
            private_key=private_key,
            hello=hello
            if hello is not None
            else {"session": {"session_id": session_id, "site_id": site_id}, "site_id": site_id},
            **conn_kw,
        )
        self.ws: Any = None
        self.messages: asyncio.Queue[HiveMessage] = asyncio.Queue()
        self.events: list[Any] = []
        self.ready = asyncio.Event()
        self.closed = asyncio.Event()
        self.peer: str | None = None
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self._task: asyncio.Task[None] | None = None

    async def connect(self, wait: bool = True, timeout: float = 10.0) -> TestClient:
        self.ws = await connect(self.url, compression=None, max_size=None)
        self.conn.start(asyncio.get_running_loop().time())
        self._task = asyncio.get_running_loop().create_task(self._read())
        if wait:
            await asyncio.wait_for(self._wait_ready(), timeout)
        return self

    async def _wait_ready(self) -> None:
        ready = asyncio.ensure_future(self.ready.wait())
        closed = asyncio.ensure_future(self.closed.wait())
        await asyncio.wait({ready, closed}, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        closed.cancel()
        if not self.ready.is_set():
            raise ConnectionError(f"closed before ready: {self.close_code} {self.close_reason}")

    async def _flush(self) -> None:
        for frame in self.conn.frames_to_send():
            await self.ws.send(frame)

    async def _read(self) -> None:
        try:
            await self._flush()
            async for frame in self.ws:
                self.conn.receive_frame(frame)
                for ev in self.conn.events():
                    self.events.append(ev)
                    if isinstance(ev, MessageReceived):
                        self.messages.put_nowait(ev.message)
                    elif isinstance(ev, HelloReceived) and self.conn.state is State.READY:
                        if ev.payload.get("peer"):
                            self.peer = ev.payload["peer"]
                            self.ready.set()
                    elif isinstance(ev, CloseRequested):
                        await self.ws.close(ev.code, ev.reason)
                    elif isinstance(ev, HandshakeComplete):
                        pass
                await self._flush()
        except ConnectionClosed:
            pass
        finally:
            if self.ws is not None:
                self.close_code = self.ws.close_code
                self.close_reason = self.ws.close_reason
            self.closed.set()

    async def send(self, message: HiveMessage) -> None:
        self.conn.send(message)
        await self._flush()

    async def send_raw(self, frame: str | bytes) -> None:
        await self.ws.send(frame)

    async def emit(self, mtype: str, data: dict[str, Any] | None = None, **context: Any) -> None:
        await self.send(HiveMessage(T.BUS, Message(mtype, data or {}, context)))

    async def utterance(self, text: str, **context: Any) -> None:
        await self.emit("recognizer_loop:utterance", {"utterances": [text]}, **context)

    async def next_bus(
        self, predicate: Callable[[dict[str, Any]], bool] | None = None, timeout: float = 5.0
    ) -> dict[str, Any]:
        """Next BUS payload (as a dict) matching ``predicate``."""

        async def find() -> dict[str, Any]:
            while True:
                msg = await self.messages.get()
                if msg.msg_type is T.BUS:
                    payload = msg.payload_dict()
                    if predicate is None or predicate(payload):
                        return payload

        return await asyncio.wait_for(find(), timeout)

    async def no_bus(self, predicate: Callable[[dict[str, Any]], bool], wait: float = 0.5) -> bool:
        """True when no matching BUS message arrives within ``wait`` seconds."""
        try:
            await self.next_bus(predicate, wait)
        except asyncio.TimeoutError:
            return True
        return False

    async def wait_closed(self, timeout: float = 10.0) -> int | None:
        await asyncio.wait_for(self.closed.wait(), timeout)
        return self.close_code

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 5)


def is_type(t: str) -> Callable[[dict[str, Any]], bool]:
    return lambda p: p.get("type") == t


async def raw_connect(port: int, path: str) -> Any:
    """A plain websocket (no HiveMind protocol) to the hub; raises InvalidStatus when refused."""
    return await connect(f"ws://127.0.0.1:{port}{path}", compression=None, max_size=None)


__all__ = [
    "CLIENT_KEY",
    "HUB_KEY",
    "Hub",
    "InvalidStatus",
    "RecordingAgent",
    "TestClient",
    "auth_path",
    "is_type",
    "raw_connect",
    "running_hub",
]
