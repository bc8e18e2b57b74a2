"""Nested hives with real processes on loopback: master <- relay <- satellite.

Master and relay are ``hivemind-core listen`` subprocesses, each with its own
XDG directories (database, RSA key) and clients registered with
``hivemind-core add-client``; the relay joins the master through the
``--upstream-*`` options. The satellite and the master's admin are our
:class:`HiveMessageBusClient` in this process.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ovos_bus_client.message import Message

from hivemind_bus_client.client import HiveMessageBusClient
from hivemind_bus_client.message import HiveMessage, HiveMessageType
from support.net import free_port, wait_until

T = HiveMessageType
CLI = Path(sys.executable).with_name("hivemind-core")
LINKED = "linked to master"


def hub_env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIVEMIND_")}
    env.update(
        XDG_CONFIG_HOME=str(root / "config"),
        XDG_DATA_HOME=str(root / "data"),
        XDG_STATE_HOME=str(root / "state"),
        XDG_CACHE_HOME=str(root / "cache"),
    )
    return env


def add_client(
    env: dict[str, str], name: str, key: str, password: str, admin: bool = False
) -> None:
    subprocess.run(
        [
            str(CLI),
            "add-client",
            "--name",
            name,
            "--access-key",
            key,
            "--password",
            password,
            "--admin",
            str(admin).lower(),
        ],
        env=env,
        check=True,
        capture_output=True,
        timeout=30,
    )


def wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"hub exited with {proc.returncode}: {log.read_text()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}: {log.read_text()[-2000:]}")


class Hubs:
    """Starts and stops the hub subprocesses of one test."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self, name: str, env: dict[str, str], port: int, *extra: str
    ) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.tmp / f"{name}-{len(self.procs)}.log"
        with log.open("wb") as fh:
            proc = subprocess.Popen(
                [str(CLI), "-v", "listen", "--host", "127.0.0.1", "--port", str(port), *extra],
                env=env,
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        wait_port(port, proc, log)
        return proc, log

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def hubs(tmp_path: Path) -> Iterator[Hubs]:
    h = Hubs(tmp_path)
    try:
        yield h
    finally:
        h.close()


def client(port: int, key: str, password: str, **kw: object) -> HiveMessageBusClient:
    return HiveMessageBusClient(
        key=key,
        password=password,
        host="127.0.0.1",
        port=port,
        site_id="den",
        reconnect_delays=[0.2, 0.5, 1.0],
        **kw,  # type: ignore[arg-type]
    )


def escalate(sat: HiveMessageBusClient, speaks: queue.Queue[Message], text: str) -> Message:
    """ESCALATE an utterance from the satellite; the ``speak`` that comes back."""
    sat.emit(
        HiveMessage(
            T.ESCALATE,
            HiveMessage(T.BUS, Message("recognizer_loop:utterance", {"utterances": [text]}, {})),
        )
    )
    return speaks.get(timeout=5)


def test_master_relay_satellite_over_real_processes(
    hubs: Hubs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("XDG_CONFIG_HOME", "XDG_DATA_HOME"):  # our clients: no identity file of the machine
        monkeypatch.setenv(var, str(tmp_path / "sat" / var.lower()))
    master_env, relay_env = hub_env(tmp_path / "master"), hub_env(tmp_path / "relay")
    add_client(master_env, "relay", "relay-key", "relay-pw")
    add_client(master_env, "admin", "admin-key", "admin-pw", admin=True)
    add_client(relay_env, "sat", "sat-key", "sat-pw")
    master_port, relay_port = free_port(), free_port()

    master, _ = hubs.start("master", master_env, master_port)
    _, relay_log = hubs.start(
        "relay",
        relay_env,
        relay_port,
        "--upstream-host",
        "127.0.0.1",
        "--upstream-port",
        str(master_port),
        "--upstream-key",
        "relay-key",
        "--upstream-password",
        "relay-pw",
    )

    def links() -> int:
        return relay_log.read_text(errors="replace").count(LINKED)

    wait_until(lambda: links() == 1, timeout=10, what="the relay to link to the master")

    speaks: queue.Queue[Message] = queue.Queue()
    sat = client(relay_port, "sat-key", "sat-pw", useragent="sat-ua")
    sat.on_mycroft("speak", speaks.put)
    sat.connect()
    try:
        # (a) an escalated utterance is answered at the master and comes back down
        reply = escalate(sat, speaks, "echo hello from the satellite")
        assert reply.data["utterance"] == "hello from the satellite"
        # The satellite sees its own session and peer, not the relay's at the master.
        assert reply.context["peer"] == sat.peer
        assert reply.context["destination"] == sat.peer
        assert reply.context["session"]["session_id"] == sat.session_id

        # (b) a broadcast from an admin at the master reaches the satellite
        admin = client(master_port, "admin-key", "admin-pw")
        admin.connect()
        try:
            admin.emit(
                HiveMessage(
                    T.BROADCAST,
                    HiveMessage(T.BUS, Message("speak", {"utterance": "attention all"}, {})),
                )
            )
            got = speaks.get(timeout=5)
            assert got.data["utterance"] == "attention all"
        finally:
            admin.close()

        # (c) kill the master, restart it on the same port: the relay heals
        master.kill()
        master.wait(5)
        wait_until(
            lambda: "link to master" in relay_log.read_text(errors="replace"),
            timeout=5,
            what="the relay to notice the master is gone",
        )
        hubs.start("master", master_env, master_port)
        wait_until(
            lambda: links() == 2, timeout=8, what="the relay to link to the restarted master"
        )
        reply = escalate(sat, speaks, "echo back again")
        assert reply.data["utterance"] == "back again"
        assert speaks.empty()
    finally:
        sat.close()
