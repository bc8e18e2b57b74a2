"""The hub's upstream link (nested hives), in process over loopback websockets.

Master and relay are two :class:`HubServer` objects in one event loop; the
satellite is the hub tests' sans-I/O ``TestClient``. The real-process version
of the same scenario is ``test_nested_real.py``. (Moved from the in-memory
mesh tests: these open real sockets.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from ovos_bus_client.message import Message
from tests.hub.hubkit import TestClient, is_type
from websockets.asyncio.server import ServerConnection, serve

from hivemind_bus_client import crypto
from hivemind_bus_client.message import HiveMessage, HiveMessageType
from hivemind_bus_client.router import LinkKind
from hivemind_core.agents.embedded import EmbeddedAgent
from hivemind_core.config import HubConfig, UpstreamConfig
from hivemind_core.database import open_database
from hivemind_core.noise_keys import create_noise_key
from hivemind_core.server import HubServer
from hivemind_core.upstream import RETURN_KEY, UpstreamConfigError
from support.net import free_port

T = HiveMessageType
MASTER_KEY = crypto.create_private_key()
RELAY_KEY = crypto.create_private_key()


#: The master's v3 static key (a restart keeps it; the relay pinned it).
MASTER_NOISE_KEY = create_noise_key()


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


@contextlib.asynccontextmanager
async def hub(
    key: crypto.PrivateKey, port: int = 0, upstream: UpstreamConfig | None = None
) -> AsyncIterator[tuple[HubServer, Any]]:
    """A hub on 127.0.0.1 with a throwaway database and the embedded agent."""
    with tempfile.TemporaryDirectory(prefix="upstream-test-") as tmp:
        cfg = HubConfig(host="127.0.0.1", port=port, db_path=str(Path(tmp) / "clients.db"))
        if upstream is not None:
            cfg.upstream = upstream
        db = open_database(cfg, backend="sqlite", path=cfg.db_path)
        server = HubServer(cfg, db, EmbeddedAgent(cfg), private_key=key, permission_poll=0.1)
        try:
            await server.start()
            yield server, db
        finally:
            await server.stop()
            db.close()


async def until(predicate: Any, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def escalated_utterance(text: str) -> HiveMessage:
    return HiveMessage(
        T.ESCALATE,
        HiveMessage(T.BUS, Message("recognizer_loop:utterance", {"utterances": [text]}, {})),
    )


# -- refusing our own listener --------------------------------------------------------


def test_upstream_pointing_at_own_listener_fails_at_start() -> None:
    port = free_port()

    async def main() -> None:
        upstream = UpstreamConfig(host="localhost", port=port, key="k", password="p")
        with pytest.raises(UpstreamConfigError, match="own listener"):
            async with hub(RELAY_KEY, port, upstream):
                pass
        # the listener that had been bound was closed again
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))

    run(main())


# -- credentials refused: logged, no retry loop ----------------------------------------


@pytest.mark.parametrize("wrong", ["key", "password"])
def test_refused_credentials_stop_retrying(wrong: str, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with hub(MASTER_KEY) as (master, mdb):
            mdb.add_client("relay", api_key="relay-key", password="relay-pw")
            upstream = UpstreamConfig(
                host="127.0.0.1",
                port=master.port,
                key="nope" if wrong == "key" else "relay-key",
                password="relay-pw" if wrong == "key" else "wrong-pw",
            )
            async with hub(RELAY_KEY, 0, upstream) as (relay, _):
                link = relay.upstream
                assert link is not None
                await until(lambda: link.fatal_error is not None)
                attempts = master.stats.get("connections", 0)
                await asyncio.sleep(1.5)  # a retry loop would have tried again by now
                assert master.stats.get("connections", 0) == attempts == 1
                assert not link.connected and link.connects == 0
                assert relay.router.upstream is None
                assert link._task is not None and link._task.done()
                # the relay still serves its own satellites
                relay.db.add_client("sat", api_key="sat-key", password="sat-pw")
                sat = await TestClient(relay.port, "sat-key", "sat-pw").connect()
                await sat.utterance("echo still here")
                reply = await sat.next_bus(is_type("speak"))
                assert reply["data"]["utterance"] == "still here"
                await sat.close()

    with caplog.at_level("ERROR", logger="hivemind_core.upstream"):
        run(main())
    assert any("refused this hub" in r.getMessage() for r in caplog.records)


# -- relaying both ways and healing ----------------------------------------------------


def test_relay_escalate_answer_broadcast_and_reconnect() -> None:
    async def main() -> None:
        master_port = free_port()
        with tempfile.TemporaryDirectory(prefix="upstream-master-") as tmp:
            db_path = str(Path(tmp) / "clients.db")

            @contextlib.asynccontextmanager
            async def master_hub() -> AsyncIterator[HubServer]:
                cfg = HubConfig(host="127.0.0.1", port=master_port, db_path=db_path)
                db = open_database(cfg, backend="sqlite", path=db_path)
                # The restarted master keeps its v3 key, as its key file keeps it.
                server = HubServer(
                    cfg, db, EmbeddedAgent(cfg), private_key=MASTER_KEY, noise_key=MASTER_NOISE_KEY
                )
                try:
                    await server.start()
                    yield server
                finally:
                    await server.stop()
                    db.close()

            setup = open_database(HubConfig(db_path=db_path), backend="sqlite", path=db_path)
            setup.add_client("relay", api_key="relay-key", password="relay-pw")
            setup.add_client("admin", api_key="admin-key", password="admin-pw", is_admin=True)
            setup.close()
            upstream = UpstreamConfig(
                host="127.0.0.1", port=master_port, key="relay-key", password="relay-pw"
            )
            async with hub(RELAY_KEY, 0, upstream) as (relay, rdb):
                rdb.add_client("sat", api_key="sat-key", password="sat-pw")
                link = relay.upstream
                assert link is not None
                sat = await TestClient(
                    relay.port, "sat-key", "sat-pw", useragent="sat-ua"
                ).connect()
                async with master_hub() as master:
                    await asyncio.wait_for(link.linked.wait(), 5)
                    up = relay.router.upstream
                    assert up is not None and up.kind is LinkKind.UPSTREAM
                    assert up.node_id == master.node_id
                    # the master sees a relay hub, with the id it stamps into routes
                    await until(lambda: any(lk.is_hub for lk in master.router.links.values()))
                    mlink = next(lk for lk in master.router.links.values() if lk.is_hub)
                    assert mlink.node_id == relay.node_id

                    # (a) ESCALATE: answered by the master, the answer comes down
                    await sat.send(escalated_utterance("echo from below"))
                    reply = await sat.next_bus(is_type("speak"))
                    assert reply["data"]["utterance"] == "from below"
                    ctx = reply["context"]
                    # the satellite's own session and peer, not the relay's at the master
                    assert ctx["peer"] == sat.peer
                    assert ctx["destination"] == sat.peer
                    assert ctx["session"]["session_id"] == "s1"
                    assert ctx["session"]["site_id"] == "kitchen"
                    assert RETURN_KEY not in ctx
                    assert relay.stats.get("upstream_answers_relayed") == 1
                    # a plain BUS is still answered by the relay's own agent
                    await sat.utterance("echo local")
                    local = await sat.next_bus(is_type("speak"))
                    assert local["data"]["utterance"] == "local"
                    assert local["context"]["peer"] == sat.peer

                    # (b) BROADCAST from an admin at the master reaches the satellite
                    admin = await TestClient(master.port, "admin-key", "admin-pw").connect()
                    await admin.send(
                        HiveMessage(
                            T.BROADCAST,
                            HiveMessage(T.BUS, Message("speak", {"utterance": "all hands"}, {})),
                        )
                    )
                    got = await asyncio.wait_for(sat.messages.get(), 5)
                    while got.msg_type is not T.BROADCAST:
                        got = await asyncio.wait_for(sat.messages.get(), 5)
                    assert got.payload.payload.data["utterance"] == "all hands"
                    await admin.close()

                # master gone: the relay drops the link, then heals when it is back
                await until(lambda: not link.connected and relay.router.upstream is None)
                async with master_hub():
                    await asyncio.wait_for(link.linked.wait(), 5)
                    assert link.connects == 2
                    await sat.send(escalated_utterance("echo again"))
                    reply = await sat.next_bus(is_type("speak"))
                    assert reply["data"]["utterance"] == "again"
                await sat.close()

    run(main())


@pytest.mark.parametrize("share", [True, False])
def test_relay_shares_its_bus_with_the_master_only_when_asked(share: bool) -> None:
    async def main() -> None:
        master_port = free_port()
        async with hub(MASTER_KEY, master_port) as (master, mdb):
            mdb.add_client("relay", api_key="relay-key", password="relay-pw")
            seen: list[tuple[dict[str, Any], str | None]] = []
            master.shared_bus_observers.append(lambda payload, peer: seen.append((payload, peer)))
            upstream = UpstreamConfig(
                host="127.0.0.1",
                port=master_port,
                key="relay-key",
                password="relay-pw",
                share_bus=share,
            )
            async with hub(RELAY_KEY, 0, upstream) as (relay, rdb):
                rdb.add_client("sat", api_key="sat-key", password="sat-pw")
                assert relay.upstream is not None
                await asyncio.wait_for(relay.upstream.linked.wait(), 5)
                sat = await TestClient(
                    relay.port, "sat-key", "sat-pw", useragent="sat-ua"
                ).connect()
                await sat.utterance("echo shared")
                local = await sat.next_bus(is_type("speak"))
                assert local["data"]["utterance"] == "shared"  # answered by the relay itself
                if share:
                    await until(lambda: len(seen) >= 2)
                    types = [p["type"] for p, _ in seen]
                    assert types == ["recognizer_loop:utterance", "speak"]
                    assert all(peer and peer.startswith("HiveMind-relay-hub::") for _, peer in seen)
                    # The relay's bus as its agent sees it: the session namespaced.
                    assert seen[0][0]["context"]["session"]["session_id"].endswith(":s1")
                    assert master.stats.get("shared_bus") == 2
                else:
                    await asyncio.sleep(0.3)
                    assert seen == [] and not master.stats.get("shared_bus")
                await sat.close()

    run(main())


# -- configuration: server.json and the listen options ---------------------------------


def _listen_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *args: str) -> HubConfig:
    from hivemind_core import cli, service

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    seen: list[HubConfig] = []
    monkeypatch.setattr(service, "run", seen.append)
    with contextlib.suppress(SystemExit):
        cli.main(list(args))
    assert len(seen) == 1
    return seen[0]


def test_listen_reads_upstream_from_server_json_and_options(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    conf = tmp_path / "config" / "hivemind-core" / "server.json"
    conf.parent.mkdir(parents=True)
    conf.write_text(
        '{"upstream": {"host": "master.lan", "port": 5700, "key": "k", "password": "p",'
        ' "site_id": "attic"}}',
        encoding="utf-8",
    )
    cfg = _listen_config(monkeypatch, tmp_path, "listen")
    assert (cfg.upstream.host, cfg.upstream.port, cfg.upstream.key) == ("master.lan", 5700, "k")
    assert (cfg.upstream.password, cfg.upstream.site_id) == ("p", "attic")
    cfg = _listen_config(
        monkeypatch,
        tmp_path,
        "listen",
        "--upstream-host",
        "10.0.0.2",
        "--upstream-port",
        "5800",
        "--upstream-key",
        "k2",
        "--upstream-password",
        "p2",
    )
    assert (cfg.upstream.host, cfg.upstream.port) == ("10.0.0.2", 5800)
    assert (cfg.upstream.key, cfg.upstream.password, cfg.upstream.site_id) == ("k2", "p2", "attic")
    assert cfg.upstream.share_bus is False
    cfg = _listen_config(monkeypatch, tmp_path, "listen", "--upstream-share-bus")
    assert cfg.upstream.share_bus is True


def test_listen_refuses_own_listener_as_upstream(tmp_path: Path) -> None:
    port = free_port()
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "c"), XDG_DATA_HOME=str(tmp_path / "d"))
    proc = subprocess.run(
        [
            str(Path(sys.executable).with_name("hivemind-core")),
            "listen",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--upstream-host",
            "localhost",
            "--upstream-port",
            str(port),
            "--upstream-key",
            "k",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 1
    assert "own listener" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "frame", ["garbage", b"\x00\xff\x01", '{"ciphertext": "!!", "nonce": "00"}']
)
def test_malformed_frame_from_the_master_relinks(frame: str | bytes) -> None:
    async def main() -> None:
        with tempfile.TemporaryDirectory(prefix="upstream-bad-") as tmp:
            db_path = str(Path(tmp) / "clients.db")
            mcfg = HubConfig(host="127.0.0.1", port=0, db_path=db_path)
            mdb = open_database(mcfg, backend="sqlite", path=db_path)
            mdb.add_client("relay", api_key="relay-key", password="relay-pw")
            master = HubServer(mcfg, mdb, EmbeddedAgent(mcfg), private_key=MASTER_KEY)
            await master.start()
            try:
                upstream = UpstreamConfig(
                    host="127.0.0.1", port=master.port, key="relay-key", password="relay-pw"
                )
                async with hub(RELAY_KEY, 0, upstream) as (relay, rdb):
                    rdb.add_client("sat", api_key="sat-key", password="sat-pw")
                    link = relay.upstream
                    assert link is not None
                    await asyncio.wait_for(link.linked.wait(), 5)
                    assert link.connects == 1
                    (to_relay,) = [c for c in master.connections if c.peer]
                    await to_relay.channel.ws.send(frame)
                    # Over v3 (the relay has a password) a text frame on the session
                    # is dropped and the link stays; over v1 the relay links again.
                    # Either way it never crashes and its satellites are answered.
                    await asyncio.sleep(0.5)
                    await until(link.linked.is_set, timeout=10)
                    assert relay.stats.get("errors", 0) == 0
                    sat = await TestClient(relay.port, "sat-key", "sat-pw").connect()
                    await sat.send(escalated_utterance("echo after the bad frame"))
                    reply = await sat.next_bus(is_type("speak"))
                    assert reply["data"]["utterance"] == "after the bad frame"
                    await sat.close()
            finally:
                await master.stop()
                mdb.close()

    run(main())


# -- a master that accepts the socket and never speaks ------------------------------------


def test_upstream_gives_up_a_silent_master_after_handshake_timeout() -> None:
    """Each attempt ends about ``handshake_timeout`` after the socket opened, then retries."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        opened: list[float] = []
        closed: list[float] = []

        async def silent(ws: ServerConnection) -> None:
            opened.append(loop.time())
            await ws.wait_closed()
            closed.append(loop.time())

        async with serve(silent, "127.0.0.1", 0) as master:
            port = master.sockets[0].getsockname()[1]
            upstream = UpstreamConfig(
                host="127.0.0.1",
                port=port,
                key="relay-key",
                password="relay-pw",
                connect_timeout=20.0,
                handshake_timeout=0.6,
            )
            async with hub(RELAY_KEY, 0, upstream) as (relay, _):
                link = relay.upstream
                assert link is not None
                await until(lambda: len(opened) >= 2, timeout=8)
                assert len(closed) >= 1
                first = closed[0] - opened[0]
                # the relay hung up on the silent master at its handshake deadline,
                # not at connect_timeout (20 s)
                assert 0.5 <= first < 2.5, first
                assert link.fatal_error is None and not link.connected
                assert relay.router.upstream is None

    run(main())
