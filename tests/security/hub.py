"""Our real hub in a subprocess, and a satellite an attacker drives frame by frame.

Only public entry points: the ``hivemind-core`` console script (``add-client``,
then ``listen`` with the embedded agent, which answers ``echo <words>`` with a
``speak``), with HOME and the XDG folders in a throwaway directory, and raw
websocket frames. The satellite's protocol engine is our public sans-I/O
:class:`Connection`, so what the test sends is built by the protocol's own
functions; the test can then capture, replay, reflect or forge frames.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ovos_bus_client.message import Message
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from hivemind_bus_client.connection import Connection, HelloReceived, MessageReceived, Role, State
from hivemind_bus_client.message import HiveMessage, HiveMessageType
from interop import harness
from support.net import free_port, wait_until

CLI = Path(sys.executable).with_name("hivemind-core")
MiB = 1024 * 1024


@dataclass
class Creds:
    """One registered satellite."""

    key: str
    password: str


@dataclass
class Hub:
    """A running ``hivemind-core -v listen``; ``log()`` is its stderr and stdout."""

    port: int
    proc: harness.ManagedProcess
    creds: dict[str, Creds]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.proc.log(2_000_000)

    def peak_rss(self) -> int:
        """The hub process's peak resident memory so far (VmHWM), in bytes."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM in /proc status")


@contextlib.contextmanager
def running_hub(tmp: Path, names: tuple[str, ...] = ("sat", "victim")) -> Iterator[Hub]:
    """Register ``names`` (default satellites, each with a password) and start the hub."""
    env = harness.isolated_env(tmp)
    creds = {}
    for name in names:
        c = Creds(key=f"key-{name}-{uuid.uuid4().hex[:8]}", password=f"pw-{uuid.uuid4().hex}")
        subprocess.run(
            [CLI, "add-client", "--name", name, "--access-key", c.key, "--password", c.password],
            env=env,
            check=True,
            capture_output=True,
            timeout=60,
        )
        creds[name] = c
    port = free_port()
    argv = [CLI, "-v", "listen", "--host", "127.0.0.1", "--port", str(port), "--agent", "embedded"]
    proc = harness.start_process("hub", argv, env=env, log_path=tmp / "hub.log")
    try:
        wait_until(
            lambda: harness.port_open("127.0.0.1", port) or not proc.alive(),
            timeout=60,
            what="the hub to listen",
        )
        assert proc.alive(), proc.log()
        yield Hub(port, proc, creds)
    finally:
        proc.stop()


def url(hub: Hub, key: str, useragent: str = "security-test") -> str:
    token = base64.b64encode(f"{useragent}:{key}".encode()).decode("ascii")
    return f"ws://127.0.0.1:{hub.port}/?authorization={token}"


@dataclass
class Satellite:
    """A websocket to the hub and the protocol engine of its client end.

    ``sent`` and ``received`` hold every frame that crossed, for replays and
    reflections; ``messages`` the application messages the hub sent.
    """

    ws: ClientConnection
    conn: Connection
    sent: list[str | bytes] = field(default_factory=list)
    received: list[str | bytes] = field(default_factory=list)
    messages: list[HiveMessage] = field(default_factory=list)
    hellos: list[dict[str, Any]] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    async def flush(self) -> None:
        for frame in self.conn.frames_to_send():
            self.sent.append(frame)
            await self.ws.send(frame)

    async def send_raw(self, frame: str | bytes) -> None:
        """Put a frame on the wire as it is (a replay, a reflection, a forgery)."""
        await self.ws.send(frame)

    async def emit(self, message: HiveMessage) -> str | bytes:
        """Send ``message`` through the engine; returns the frame that went out."""
        self.conn.send(message)
        frames = self.conn.frames_to_send()
        for frame in frames:
            self.sent.append(frame)
            await self.ws.send(frame)
        return frames[-1]

    def _feed(self, frame: str | bytes) -> None:
        self.received.append(frame)
        self.conn.receive_frame(frame)
        for event in self.conn.events():
            if isinstance(event, MessageReceived):
                self.messages.append(event.message)
            elif isinstance(event, HelloReceived):
                self.hellos.append(event.payload)

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for frame in self.ws:
                self._feed(frame)
                await self.flush()

    def start_reading(self) -> None:
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def closed_with(self, timeout: float = 5.0) -> int | None:
        """Wait for the hub to close the socket; its close code (None if it did not)."""
        try:
            await asyncio.wait_for(self.ws.wait_closed(), timeout)
        except TimeoutError:
            return None
        return self.ws.close_code

    def speaks(self) -> list[str]:
        """The ``speak`` utterances the hub sent, in order."""
        out = []
        for m in self.messages:
            if m.msg_type is HiveMessageType.BUS and m.payload.msg_type == "speak":
                out.append(m.payload.data.get("utterance"))
        return out

    async def close(self) -> None:
        await self.ws.close()
        if self.reader is not None:
            with contextlib.suppress(Exception):
                await self.reader


async def satellite(hub: Hub, name: str = "sat", **conn_kw: Any) -> Satellite:
    """Connect, complete the password handshake and wait for the hub's final HELLO."""
    creds = hub.creds[name]
    ws = await connect(url(hub, creds.key), max_size=None, ping_interval=None)
    hello = {"session": {"session_id": f"{name}-{uuid.uuid4().hex[:8]}"}, "site_id": name}
    conn = Connection(Role.CLIENT, password=creds.password, hello=hello, **conn_kw)
    sat = Satellite(ws, conn)
    conn.start(time.monotonic())
    deadline = time.monotonic() + 20
    while not (conn.state is State.READY and any("peer" in h for h in sat.hellos[1:])):
        remaining = deadline - time.monotonic()
        assert remaining > 0, "the handshake with the hub did not complete"
        frame = await asyncio.wait_for(ws.recv(), remaining)
        sat._feed(frame)
        await sat.flush()
    sat.start_reading()
    return sat


def utterance(text: str) -> HiveMessage:
    """What the embedded agent answers with ``speak`` ``text``."""
    return HiveMessage(
        HiveMessageType.BUS, Message("recognizer_loop:utterance", {"utterances": [f"echo {text}"]})
    )


async def eventually(check: Any, timeout: float = 5.0) -> bool:
    """Poll ``check`` on the loop until true or ``timeout``; returns its last value."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        await asyncio.sleep(0.02)
    return bool(check())


def plain_frame(mtype: HiveMessageType, payload: dict[str, Any]) -> str:
    """A plaintext JSON frame, serialized by the protocol."""
    return HiveMessage(mtype, payload).serialize()


def first_handshake(sat: Satellite) -> str:
    """The satellite's own plaintext HANDSHAKE frame of the opening (what a sniffer saw)."""
    for frame in sat.sent:
        if isinstance(frame, str) and json.loads(frame).get("msg_type") == "shake":
            return frame
    raise AssertionError("no HANDSHAKE was sent")
