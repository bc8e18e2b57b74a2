"""The client against OUR hub over real sockets (not the FakeHub).

The hub runs in-process on a loop thread (as ``tests/hub/hubkit.py`` starts it);
satellites are real :class:`HiveMessageBusClient` objects and the CLI runs as a
subprocess, as a user would run it.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hivemind_bus_client.client import HiveMessageBusClient
from hivemind_bus_client.identity import NodeIdentity
from hivemind_bus_client.protocol.message import HiveMessageType
from hub.hubkit import running_hub

from .clirun import run_cli


class HubThread:
    """Our hub on a background loop, with a few client accounts."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.stop = asyncio.Event()
        self.hub: Any = None
        self.thread = threading.Thread(target=self._run, name="test-hub", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self.stop = asyncio.Event()
        async with running_hub() as hub:
            self.hub = hub
            self.ready.set()
            await self.stop.wait()

    def __enter__(self) -> HubThread:
        self.thread.start()
        assert self.ready.wait(20), "hub did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(20)

    def add_client(self, name: str) -> tuple[str, str]:
        row = self.hub.db.add_client(name, password=f"{name}-pw")
        return row.api_key, f"{name}-pw"

    @property
    def port(self) -> int:
        return int(self.hub.port)


@pytest.fixture
def real_hub() -> Iterator[HubThread]:
    with HubThread() as hub:
        yield hub


def _satellite(hub: HubThread, name: str, identity: NodeIdentity, site: str) -> Any:
    key, password = hub.add_client(name)
    client = HiveMessageBusClient(
        key=key,
        password=password,
        host="ws://127.0.0.1",
        port=hub.port,
        identity=identity,
        site_id=site,
        connect_timeout=10,
        reconnect=False,
    )
    return client.connect()


def _public(hub: HubThread, peer: str | None) -> str:
    """What the hub tells other satellites ``peer`` is called."""
    public = hub.hub.server.node.router.links[peer].public
    assert public and not public.endswith(str(peer).rsplit("::", 1)[-1])
    return str(public)


def test_cli_ping_maps_every_satellite_of_our_hub(
    real_hub: HubThread, identity: NodeIdentity, tmp_path: Path
) -> None:
    """Two satellites on our hub answer the CLI's PING: it lists all three nodes.

    Fails when a satellite's PONG carries no flood id (the hub then drops it as
    unroutable and only the hub itself is listed).
    """
    sats = [
        _satellite(real_hub, "sat-a", identity, "kitchen"),
        _satellite(real_hub, "sat-b", identity, "garage"),
    ]
    try:
        key, password = real_hub.add_client("pinger")
        args = ["--key", key, "--password", password, "--host", "127.0.0.1"]
        args += ["--port", str(real_hub.port), "--siteid", "office"]
        proc = run_cli("ping", *args, "--timeout", "1.5", "--json", config=tmp_path / "cfg")
        assert proc.returncode == 0, proc.stderr
        nodes = json.loads(proc.stdout)["nodes"]
        by_peer = {n["peer"]: n for n in nodes}
        hub_id = real_hub.hub.server.node_id
        # The hub tells the pinger each satellite's public name (no session id in it).
        public = [_public(real_hub, sat.peer) for sat in sats]
        expected = {hub_id, *public}
        assert set(by_peer) == expected, nodes
        assert by_peer[hub_id]["hops"] == 1
        for name, site in zip(public, ("kitchen", "garage"), strict=True):
            row = by_peer[name]
            assert row["hops"] == 2 and row["site_id"] == site
        for row in nodes:
            assert row["rtt_ms"] is not None and 0 <= row["rtt_ms"] < 1500
        assert all(s.stats["pings_answered"] == 1 for s in sats)
    finally:
        for sat in sats:
            sat.close()


def test_client_pong_goes_through_our_hub(real_hub: HubThread, identity: NodeIdentity) -> None:
    """A satellite's ping() gets the PONG of the other satellite, routed by the hub."""
    a = _satellite(real_hub, "sat-a", identity, "kitchen")
    b = _satellite(real_hub, "sat-b", identity, "garage")
    try:
        pongs = a.ping(timeout=1.0)
        peers = sorted(p.payload["peer"] for p in pongs)
        assert peers == sorted([real_hub.hub.server.node_id, _public(real_hub, b.peer)])
        for pong in pongs:
            assert pong.msg_type is HiveMessageType.PONG
            assert pong.payload.get("flood_id")
        assert real_hub.hub.server.router.counters.get("unroutable", 0) == 0
    finally:
        a.close()
        b.close()
