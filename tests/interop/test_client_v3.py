"""Our clients against the reference hub 5.3.10a1 (protocol v3 only, Noise).

A real ``hivemind-core listen`` 5.3.10a1 (subprocess, harness.reference_hub_v3)
behind a real ovos-messagebus whose responder answers each utterance with
``speak``. Before the v3 client, our client was refused with 1008
``this node requires the v3 Noise handshake`` (V3.md section 11 (b)).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ovos_bus_client.message import Message

from hivemind_bus_client import HiveMessageBusClient
from hivemind_bus_client.client.asyncio import AsyncHiveMessageBusClient
from hivemind_bus_client.client.noisekeys import (
    PskCache,
    get_pin,
    noise_key_path,
    psk_cache_path,
    set_pin,
)
from hivemind_bus_client.client.v3client import PinMismatch
from hivemind_bus_client.exceptions import AuthenticationFailed
from hivemind_bus_client.identity import NodeIdentity

from . import harness

pytestmark = pytest.mark.interop

#: The master's site: 5.x injects an ESCALATEd BUS message only when it targets this site.
MASTER_SITE = "master-site"


@pytest.fixture(scope="session")
def refpython_v3() -> Path:
    try:
        return harness.ref_python_v3(log=sys.stderr)
    except RuntimeError as exc:
        pytest.fail(f"cannot build the v3 reference venv:\n{exc}", pytrace=False)


@pytest.fixture(scope="module")
def hub(
    refpython_v3: Path, ovos_bus: harness.OvosBus, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[harness.ReferenceHub]:
    """One 5.3.10a1 hub; each test has its own row (utterances allowed) since the
    hub pins a row's first client key."""
    names = ("sat", "sat2", "sat3", "big", "hubpin", "relay")
    rows = [harness.v3_client(n) for n in names]
    workdir = tmp_path_factory.mktemp("ref-hub-v3")
    with harness.reference_hub_v3(
        refpython_v3, ovos_bus, workdir, clients=rows, site_id=MASTER_SITE
    ) as ref:
        yield ref


def identity_for(tmp_path: Path, creds: harness.ClientCreds) -> NodeIdentity:
    """An identity file holding the row's password (so the PSK cache serves it)."""
    ident = NodeIdentity(tmp_path / "ident" / "_identity.json")
    ident.access_key = creds.access_key
    ident.password = creds.password
    ident.save()
    return ident


@pytest.fixture
def make_client() -> Iterator[Callable[..., HiveMessageBusClient]]:
    made: list[HiveMessageBusClient] = []

    def make(
        hub: harness.ReferenceHub, ident: NodeIdentity, name: str = "sat", **kw: Any
    ) -> HiveMessageBusClient:
        kw.setdefault("key", hub.client(name).access_key)
        kw.setdefault("site_id", "kitchen")
        kw.setdefault("connect_timeout", 20)
        client = HiveMessageBusClient(
            host=hub.host, port=hub.port, identity=NodeIdentity(ident.path), **kw
        )
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def utterance(text: str) -> Message:
    return Message("recognizer_loop:utterance", {"utterances": [text], "lang": "en-US"})


def ask(client: HiveMessageBusClient, text: str, timeout: float = 15) -> str | None:
    reply = client.wait_for_response(utterance(text), reply_type="speak", timeout=timeout)
    return None if reply is None else str(reply.payload.data["utterance"])


def test_sync_client_xx_then_kk(
    hub: harness.ReferenceHub, make_client: Callable[..., HiveMessageBusClient], tmp_path: Path
) -> None:
    ident = identity_for(tmp_path, hub.client("sat"))
    client = make_client(hub, ident)
    client.connect()
    hs = client._engine.handshake
    assert hs is not None and (hs.protocol, hs.pattern) == (3, "XXpsk2"), hub.logs()
    assert ask(client, "hello v3") == "echo: hello v3"
    where = f"{hub.host}:{hub.port}"
    pinned = get_pin(NodeIdentity(ident.path), where)
    assert pinned is not None and pinned == hs.peer_static
    assert len(PskCache(psk_cache_path(noise_key_path(ident)))) == 1
    client.close()

    again = make_client(hub, ident)
    again.connect()
    hs = again._engine.handshake
    assert hs is not None and hs.pattern == "KKpsk0"
    assert again._engine.v3.derivations == 0  # the cached PSK
    assert ask(again, "hello kk") == "echo: hello kk"


def test_async_client_v3(hub: harness.ReferenceHub, tmp_path: Path) -> None:
    creds = hub.client("sat2")
    ident = identity_for(tmp_path, creds)

    async def main() -> tuple[str, str]:
        client = AsyncHiveMessageBusClient(
            key=creds.access_key, host=hub.host, port=hub.port, identity=ident, connect_timeout=20
        )
        await client.connect()
        try:
            reply = await client.wait_for_response(
                utterance("async v3"), reply_type="speak", timeout=15
            )
            hs = client._engine.handshake
            assert reply is not None and hs is not None
            return hs.pattern, str(reply.payload.data["utterance"])
        finally:
            await client.close()

    assert asyncio.run(main()) == ("XXpsk2", "echo: async v3")


def test_wrong_password_refused_without_a_loop(
    hub: harness.ReferenceHub, make_client: Callable[..., HiveMessageBusClient], tmp_path: Path
) -> None:
    ident = NodeIdentity(tmp_path / "_identity.json")
    client = make_client(hub, ident, name="sat3", password="certainly-not-the-password-42")
    started = time.monotonic()
    with pytest.raises(AuthenticationFailed, match="did not accept the password"):
        client.connect()
    assert time.monotonic() - started < 10
    assert not client.connected
    assert client._engine.connects == 0
    assert not noise_key_path(ident).exists()  # never keyed: no key file, no pin
    assert "pinned_noise_keys" not in (
        json.loads(ident.path.read_text()) if ident.path.exists() else {}
    )


def test_pin_mismatch_refused(
    hub: harness.ReferenceHub, make_client: Callable[..., HiveMessageBusClient], tmp_path: Path
) -> None:
    ident = identity_for(tmp_path, hub.client("sat3"))
    set_pin(ident, f"{hub.host}:{hub.port}", b"\x42" * 32)  # not the hub's key
    client = make_client(hub, ident, name="sat3")
    with pytest.raises(PinMismatch, match="forget-server"):
        client.connect()
    assert client._engine.connects == 0


def test_150_kb_both_ways(
    hub: harness.ReferenceHub, make_client: Callable[..., HiveMessageBusClient], tmp_path: Path
) -> None:
    ident = identity_for(tmp_path, hub.client("big"))
    client = make_client(hub, ident, name="big")
    client.connect()
    text = "v" * 150_000
    assert ask(client, text, timeout=30) == "echo: " + text


def test_hub_pin_of_another_client_key_stops_the_client(
    hub: harness.ReferenceHub, make_client: Callable[..., HiveMessageBusClient], tmp_path: Path
) -> None:
    """The hub pinned the row's first client key; a client with another key is refused.

    The hub checks its pin after m3 (nothing acknowledges m3), so the refusal
    (1008) ends a link our side had already keyed: the client stops, no loop.
    """
    creds = hub.client("hubpin")
    first = make_client(hub, identity_for(tmp_path / "a", creds), name="hubpin")
    first.connect()
    assert ask(first, "first") == "echo: first"
    first.close()
    other = make_client(hub, identity_for(tmp_path / "b", creds), name="hubpin")
    try:
        other.connect()
    except AuthenticationFailed as exc:
        assert "reset-noise-pin" in str(exc)
    else:
        engine = other._engine
        deadline = time.monotonic() + 10
        while engine.fatal_error is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert engine.fatal_error is not None
        assert "reset-noise-pin" in str(engine.fatal_error)
    time.sleep(1.5)
    assert other._engine.connects <= 1  # no reconnect loop


# -- our hub as a satellite of the 5.3.10a1 master ---------------------------------------


def test_our_hub_relays_to_a_v3_master(
    hub: harness.ReferenceHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``hivemind-core listen --upstream-...`` (ours) links to the 5.x master over v3;
    a satellite's escalated utterance is answered by the master's bus and comes back down."""
    import queue
    import subprocess

    from hivemind_bus_client.message import HiveMessage, HiveMessageType
    from support.net import free_port, wait_until

    T = HiveMessageType
    cli = Path(sys.executable).with_name("hivemind-core")
    root = tmp_path / "relay"
    env = harness.isolated_env(root)
    creds = hub.client("relay")
    subprocess.run(
        [
            *(str(cli), "add-client", "--name", "sat"),
            *("--access-key", "sat-key", "--password", "sat-pw"),
        ],
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    port = free_port()
    log = tmp_path / "relay.log"
    with log.open("wb") as fh:
        relay = subprocess.Popen(
            [
                *(str(cli), "-v", "listen", "--host", "127.0.0.1", "--port", str(port)),
                *("--upstream-host", hub.host, "--upstream-port", str(hub.port)),
                *("--upstream-key", creds.access_key, "--upstream-password", str(creds.password)),
            ],
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(
            lambda: "linked to master" in log.read_text(errors="replace"),
            timeout=30,
            what="our hub to link to the 5.x master",
        )
        text = log.read_text(errors="replace")
        assert "noise handshake" in text.lower(), text[-3000:]
        # The relay's own v3 files: its static key and the master's pin, in its identity dir.
        ident_dir = Path(env["XDG_CONFIG_HOME"]) / "hivemind"
        assert len((ident_dir / "unnamed-node_noise.key").read_text()) == 64
        pins = json.loads((ident_dir / "_identity.json").read_text())["pinned_noise_keys"]
        assert list(pins) == [f"{hub.host}:{hub.port}"]

        for var in ("XDG_CONFIG_HOME", "XDG_DATA_HOME"):
            monkeypatch.setenv(var, str(tmp_path / "sat" / var.lower()))
        speaks: queue.Queue[Message] = queue.Queue()
        sat = HiveMessageBusClient(
            key="sat-key", password="sat-pw", host="127.0.0.1", port=port, site_id="den"
        )
        sat.on_mycroft("speak", speaks.put)
        sat.connect()
        try:
            inner = HiveMessage(
                T.BUS, Message("recognizer_loop:utterance", {"utterances": ["from below"]}, {})
            )
            sat.emit(HiveMessage(T.ESCALATE, inner, target_site_id=MASTER_SITE))
            reply = speaks.get(timeout=20)
            assert reply.data["utterance"] == "echo: from below"
            assert reply.context["session"]["session_id"] == sat.session_id
        finally:
            sat.close()
    finally:
        relay.terminate()
        try:
            relay.wait(10)
        except subprocess.TimeoutExpired:
            relay.kill()
            relay.wait()
