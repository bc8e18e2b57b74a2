"""An in-process hub for client tests: our sans-I/O ``Connection(Role.HUB)`` behind a
real ``websockets`` server on 127.0.0.1, run on its own event-loop thread.

It answers ``recognizer_loop:utterance`` with ``speak`` ("echo: <utterance>"),
answers QUERY and CASCADE requests, records what it received, and can drop
every link or restart on the same port to exercise reconnects.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
from dataclasses import dataclass, field
from typing import Any

import websockets
from ovos_bus_client.message import Message
from websockets.asyncio.server import ServerConnection, serve

from hivemind_bus_client import crypto
from hivemind_bus_client.connection import (
    CloseRequested,
    Connection,
    HelloReceived,
    MessageReceived,
    Role,
)
from hivemind_bus_client.message import HiveMessage, HiveMessageType
from support.net import free_port

T = HiveMessageType


@dataclass
class Account:
    key: str
    password: str | None = "hunter22"
    crypto_key: str | None = None


@dataclass
class Link:
    peer: str
    conn: Connection
    ws: ServerConnection
    hello: dict[str, Any] = field(default_factory=dict)


_HUB_KEY = crypto.create_private_key()


class FakeHub:
    """See the module docstring. ``silent_refusal`` closes unknown keys like hub 4.0.0."""

    def __init__(
        self,
        accounts: list[Account] | None = None,
        *,
        binarize: bool = False,
        encodings: list[str] | None = None,
        ciphers: list[str] | None = None,
        silent_refusal: bool = False,
        port: int | None = None,
    ) -> None:
        self.accounts = {a.key: a for a in (accounts or [Account("sat-key")])}
        self.binarize = binarize
        self.encodings = encodings
        self.ciphers = ciphers
        self.silent_refusal = silent_refusal
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.received: list[HiveMessage] = []
        #: (message type, came as a binary frame?) of every message received, in order.
        self.frame_kinds: list[tuple[HiveMessageType, bool]] = []
        self.hellos: list[dict[str, Any]] = []
        self.links: dict[str, Link] = {}
        self.connections = 0
        self.private_key = _HUB_KEY
        self.public_pem = crypto.public_key_pem(_HUB_KEY)
        self.cascade_answers = 2
        self.pong_delay = 0.2
        self.errors: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: Any = None
        self._lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> FakeHub:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._listen())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    async def _listen(self) -> None:
        self._server = await serve(
            self._handle, self.host, self.port, compression=None, close_timeout=0.5
        )

    def call(self, coro: Any, timeout: float = 10) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def stop_listening(self) -> None:
        """Close the server and every link (a hub going down)."""

        async def stop() -> None:
            self._server.close()
            for link in list(self.links.values()):
                with contextlib.suppress(Exception):
                    await link.ws.close(1012, "restarting")
            await self._server.wait_closed()

        self.call(stop())

    def restart(self) -> None:
        """Start listening again on the same port."""
        self.call(self._listen())

    def stop(self) -> None:
        if self._loop is None:
            return

        async def shutdown() -> None:
            self._server.close(close_connections=False)
            for link in list(self.links.values()):
                link.ws.transport.abort()
            await asyncio.sleep(0)
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=2)

        with contextlib.suppress(Exception):
            self.call(shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        self._loop.close()
        self._loop = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- actions -------------------------------------------------------------------

    def send_to_all(self, message: HiveMessage) -> None:
        async def send() -> None:
            for link in list(self.links.values()):
                copy = message
                if message.msg_type is not T.BINARY:
                    copy = HiveMessage.deserialize(message.serialize())
                link.conn.send(copy)
                for frame in link.conn.frames_to_send():
                    await link.ws.send(frame)

        self.call(send())

    def send_raw_to_all(self, frame: str | bytes) -> None:
        async def send() -> None:
            for link in list(self.links.values()):
                await link.ws.send(frame)

        self.call(send())

    def freeze_all(self) -> None:
        """Stop reading from every link: the peer sees a dead, silent connection."""

        async def freeze() -> None:
            for link in list(self.links.values()):
                link.ws.transport.pause_reading()

        self.call(freeze())

    def thaw_all(self) -> None:
        """Read from every link again (after :meth:`freeze_all`)."""

        async def thaw() -> None:
            for link in list(self.links.values()):
                link.ws.transport.resume_reading()

        self.call(thaw())

    def drop_all(self, code: int = 1011) -> None:
        async def drop() -> None:
            for link in list(self.links.values()):
                await link.ws.close(code, "dropped by test")

        self.call(drop())

    def of_type(self, mtype: HiveMessageType) -> list[HiveMessage]:
        with self._lock:
            return [m for m in self.received if m.msg_type is mtype]

    # -- per connection ------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        try:
            await self._handle_inner(ws)
        except Exception as exc:
            import traceback

            self.errors.append(traceback.format_exc())
            raise exc

    async def _handle_inner(self, ws: ServerConnection) -> None:
        path = ws.request.path if ws.request else ""
        _, _, auth = path.partition("/?authorization=")
        try:
            useragent, key = base64.b64decode(auth).decode().split(":", 1)
        except Exception:
            await ws.close(1008, "bad authorization")
            return
        account = self.accounts.get(key)
        if account is None:
            if self.silent_refusal:
                await ws.close()
            else:
                await ws.close(1008, "unknown access key")
            return
        self.connections += 1
        peer = f"{useragent}::1::test::default"
        conn = Connection(
            Role.HUB,
            password=account.password,
            crypto_key=account.crypto_key,
            private_key=self.private_key,
            encodings=self.encodings,
            ciphers=self.ciphers,
            binarize=self.binarize,
            peer=peer,
            node_id="fakehub",
        )
        link = Link(peer, conn, ws)
        self.links[f"{peer}#{id(link)}"] = link
        conn.start(0.0)
        await self._flush(link)
        try:
            async for frame in ws:
                conn.receive_frame(frame)
                for event in conn.events():
                    if isinstance(event, HelloReceived):
                        self._on_hello(link, event.payload)
                    elif isinstance(event, MessageReceived):
                        with self._lock:
                            self.received.append(event.message)
                            self.frame_kinds.append((event.message.msg_type, event.binary))
                        self._respond(link, event.message)
                    elif isinstance(event, CloseRequested):
                        await ws.close(event.code, event.reason)
                await self._flush(link)
        except websockets.ConnectionClosed:
            pass
        finally:
            for name, value in list(self.links.items()):
                if value is link:
                    self.links.pop(name, None)

    async def _flush(self, link: Link) -> None:
        for frame in link.conn.frames_to_send():
            await link.ws.send(frame)

    def _on_hello(self, link: Link, payload: dict[str, Any]) -> None:
        self.hellos.append(payload)
        session = payload.get("session") or {}
        sid = session.get("session_id", "default")
        for name, value in list(self.links.items()):
            if value is link:
                self.links.pop(name, None)
        link.peer = link.peer.rsplit("::", 1)[0] + "::" + sid
        link.hello = payload
        self.links[link.peer] = link
        link.conn.announce(link.peer, "fakehub")

    def _respond(self, link: Link, msg: HiveMessage) -> None:
        mtype = msg.msg_type
        if mtype is T.BUS:
            ovos = msg.payload
            if ovos.msg_type == "recognizer_loop:utterance":
                utt = ovos.data.get("utterances", [""])[0]
                reply = ovos.reply("speak", {"utterance": f"echo: {utt}"})
                reply.context["source"] = "hive"
                link.conn.send(HiveMessage(T.BUS, reply))
        elif mtype in (T.QUERY, T.CASCADE):
            inner = msg.payload
            utt = inner.payload.data.get("utterances", [""])[0]
            count = 1 if mtype is T.QUERY else self.cascade_answers
            for n in range(count):
                answer = HiveMessage(T.BUS, Message("speak", {"utterance": f"answer {n}: {utt}"}))
                link.conn.send(
                    HiveMessage(
                        mtype,
                        payload=answer,
                        metadata={
                            "query_id": msg.metadata.get("query_id"),
                            "is_response": True,
                            "originator_peer": link.peer,
                            "responder_peer": f"node-{n}",
                        },
                    )
                )
        elif mtype is T.PROPAGATE:
            inner = msg.payload
            if isinstance(inner, HiveMessage) and inner.msg_type is T.PING:
                data = inner.payload
                pong = HiveMessage(
                    T.PONG,
                    payload={
                        "ping_id": data.get("ping_id"),
                        "peer": "fakehub",
                        "timestamp": data.get("timestamp"),
                    },
                    route=[{"source": link.peer, "targets": ["fakehub"]}],
                )
                # A mesh takes a moment to answer; the seed-doc sample registers
                # its PONG handler after sending the PING.
                asyncio.get_running_loop().call_later(
                    self.pong_delay, lambda: asyncio.ensure_future(self._send_late(link, pong))
                )

    async def _send_late(self, link: Link, message: HiveMessage) -> None:
        with contextlib.suppress(Exception):
            link.conn.send(message)
            await self._flush(link)
