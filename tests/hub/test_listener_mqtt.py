"""The MQTT transport over a real broker: HiveMindMQTTClient against our hub's MQTT listener.

The hub (HubServer with the embedded agent, a throwaway SQLite database and
an :class:`MQTTListener`) runs on an event loop in a background thread; the
sync client runs in the test thread, as a user runs it. A raw paho client
plays the stranger on the broker: it publishes garbage, forged statuses and
the ecosystem's bootstrap, and listens to what the hub answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import queue
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from ovos_bus_client.message import Message

from hivemind_bus_client import crypto
from hivemind_bus_client.exceptions import (
    AuthenticationFailed,
    ConnectionClosedError,
    HiveMindEntryPointNotFound,
    UnauthorizedKeyError,
)
from hivemind_bus_client.identity import NodeIdentity
from hivemind_bus_client.message import HiveMessage, HiveMessageType
from hivemind_bus_client.mqtt_client import DEFAULT_MQTT_USERAGENT, HiveMindMQTTClient
from hivemind_core.agents.embedded import EmbeddedAgent
from hivemind_core.config import HubConfig
from hivemind_core.database import open_database
from hivemind_core.mqtt_listener import MQTTListener, start_mqtt_listener
from hivemind_core.server import HubServer
from support.net import free_port, wait_until

HUB_KEY = crypto.create_private_key()
Broker = tuple[str, int]


class MQTTHub:
    """A hub serving MQTT satellites, on its own event loop in a thread."""

    def __init__(self, broker: Broker, prefix: str, db_path: Path, **overrides: Any) -> None:
        host, port = broker
        self.cfg = HubConfig(
            host="127.0.0.1",
            port=0,
            db_path=str(db_path),
            mqtt_host=host,
            mqtt_port=port,
            mqtt_prefix=prefix,
            **overrides,
        )
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server: HubServer
        self.listener: MQTTListener

        async def up() -> None:
            self.db = open_database(self.cfg, backend="sqlite", path=self.cfg.db_path)
            self.server = HubServer(self.cfg, self.db, EmbeddedAgent(self.cfg), private_key=HUB_KEY)
            await self.server.start()
            self.listener = await start_mqtt_listener(self.server)

        self.run(up())

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(20)

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the hub's loop and return its result."""

        async def on_loop() -> Any:
            return fn()

        return self.run(on_loop())

    def stop(self) -> None:
        async def down() -> None:
            await self.listener.close()
            await self.server.stop()
            self.db.close()

        self.run(down())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def add_client(self, name: str, password: str = "pw", **kw: Any) -> Any:
        return self.call(lambda: self.db.add_client(name, password=password, **kw))

    def stat(self, name: str) -> int:
        return int(self.call(lambda: self.server.stats.get(name, 0)))

    def links(self) -> int:
        return int(self.call(lambda: len(self.listener.links)))


class Stranger:
    """A raw MQTT client on the same broker (paho, its own network thread)."""

    def __init__(self, broker: Broker) -> None:
        self.received: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2)
        self.client.on_message = lambda _c, _u, m: self.received.put((m.topic, bytes(m.payload)))
        self.client.connect(*broker)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes | str, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def subscribe(self, topic: str) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *_a: done.set()
        self.client.subscribe(topic, qos=1)
        assert done.wait(5), "no SUBACK"

    def next(self, timeout: float = 5.0) -> tuple[str, bytes]:
        return self.received.get(timeout=timeout)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def prefix() -> str:
    """A topic prefix of this test's own (the broker is shared by the session)."""
    return f"hm-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def make_hub(mosquitto: Broker, prefix: str, tmp_path: Path) -> Iterator[Callable[..., MQTTHub]]:
    hubs: list[MQTTHub] = []

    def make(**overrides: Any) -> MQTTHub:
        hub = MQTTHub(mosquitto, prefix, tmp_path / "clients.db", **overrides)
        hubs.append(hub)
        return hub

    yield make
    for hub in hubs:
        if hub.thread.is_alive():
            hub.stop()


@pytest.fixture
def hub(make_hub: Callable[..., MQTTHub]) -> MQTTHub:
    return make_hub()


@pytest.fixture
def stranger(mosquitto: Broker) -> Iterator[Stranger]:
    s = Stranger(mosquitto)
    yield s
    s.close()


def client_for(
    broker: Broker, prefix: str, key: str, password: str | None = "pw", **kw: Any
) -> HiveMindMQTTClient:
    return HiveMindMQTTClient(
        key=key,
        password=password,
        host=broker[0],
        port=broker[1],
        prefix=prefix,
        identity=NodeIdentity({}),
        site_id=kw.pop("site_id", "kitchen"),
        **kw,
    )


def utterance(text: str) -> Message:
    return Message("recognizer_loop:utterance", {"utterances": [text]})


def ask(client: HiveMindMQTTClient, text: str) -> str:
    answer = client.wait_for_response(utterance(f"echo {text}"), reply_type="speak", timeout=5)
    assert answer is not None, "no speak answer over MQTT"
    return str(answer.payload.data["utterance"])


# ---- handshakes and answers ---------------------------------------------------------


def test_password_handshake_and_utterance_answered(
    hub: MQTTHub, mosquitto: Broker, prefix: str
) -> None:
    row = hub.add_client("sat1")
    client = client_for(mosquitto, prefix, row.api_key, binarize=False)
    client.connect()
    try:
        assert client.connected
        assert client.handshake_info is not None
        assert client.handshake_info["mode"] == "password"
        assert client.handshake_info["binarize"] is False
        assert ask(client, "hi there") == "hi there"
        assert client.peer is not None
        assert client.peer.startswith(f"{DEFAULT_MQTT_USERAGENT}::{row.client_id}::sat1::")
        assert client.peer.endswith(client.session_id)
        assert hub.stat("mqtt_connections") == 1
        assert hub.links() == 1
    finally:
        client.close()
    # our close published "offline": the hub dropped the link
    wait_until(lambda: hub.links() == 0 and hub.stat("mqtt_offline") == 1, what="the link to close")
    assert hub.call(lambda: len(hub.server.connections)) == 0


def test_binarize_and_rsa_handshakes(
    make_hub: Callable[..., MQTTHub], mosquitto: Broker, prefix: str
) -> None:
    hub = make_hub(binarize=True)
    row = hub.add_client("binary")
    with client_for(mosquitto, prefix, row.api_key, binarize=True) as client:
        assert client.handshake_info is not None
        assert client.handshake_info["binarize"] is True
        assert ask(client, "binary frames") == "binary frames"
    rsa_row = hub.add_client("rsa", password="")
    with client_for(mosquitto, prefix, rsa_row.api_key, password=None) as client:
        assert client.handshake_info is not None
        assert client.handshake_info["mode"] == "rsa"
        assert ask(client, "rsa link") == "rsa link"


def test_wrong_password_and_unknown_key_are_clear_errors(
    hub: MQTTHub, mosquitto: Broker, prefix: str
) -> None:
    row = hub.add_client("sat", password="right")
    client = client_for(mosquitto, prefix, row.api_key, password="wrong")
    with pytest.raises(AuthenticationFailed):
        client.connect()
    assert not client.connected
    client = client_for(mosquitto, prefix, "no-such-key")
    with pytest.raises(UnauthorizedKeyError, match="access key was refused"):
        client.connect()
    wait_until(lambda: hub.stat("auth_failures") == 2, what="two failed authentications")
    assert hub.stat("mqtt_unknown_key") == 1
    assert hub.links() == 0


def test_nothing_on_the_broker_port_is_entry_point_not_found() -> None:
    client = HiveMindMQTTClient(
        key="k",
        password="p",
        host="127.0.0.1",
        port=free_port(),
        identity=NodeIdentity({}),
        connect_timeout=3,
    )
    with pytest.raises(HiveMindEntryPointNotFound, match="MQTT broker"):
        client.connect()


def test_hub_without_a_broker_raises_broker_unavailable(tmp_path: Path) -> None:
    from hivemind_core.errors import BrokerUnavailable, HubError

    async def main() -> None:
        cfg = HubConfig(host="127.0.0.1", port=0, db_path=str(tmp_path / "clients.db"))
        cfg.identity_trust = False
        db = open_database(cfg, backend="sqlite", path=cfg.db_path)
        server = HubServer(cfg, db, EmbeddedAgent(cfg), private_key=HUB_KEY)
        await server.start()
        try:
            with pytest.raises(BrokerUnavailable, match="MQTT broker") as info:
                await start_mqtt_listener(
                    server, host="127.0.0.1", port=free_port(), connect_timeout=3
                )
            # ours, and still what callers of older releases caught
            assert isinstance(info.value, HubError) and isinstance(info.value, OSError)
        finally:
            await server.stop()
            db.close()

    asyncio.run(main())


def test_two_satellites_get_only_their_own_answers(
    hub: MQTTHub, mosquitto: Broker, prefix: str
) -> None:
    a, b = hub.add_client("a"), hub.add_client("b")
    with (
        client_for(mosquitto, prefix, a.api_key) as ca,
        client_for(mosquitto, prefix, b.api_key) as cb,
    ):
        heard_a: list[str] = []
        heard_b: list[str] = []
        ca.on_mycroft("speak", lambda m: heard_a.append(m.data["utterance"]))
        cb.on_mycroft("speak", lambda m: heard_b.append(m.data["utterance"]))
        assert ask(ca, "for a") == "for a"
        assert ask(cb, "for b") == "for b"
        wait_until(lambda: heard_a == ["for a"] and heard_b == ["for b"], what="both handlers")
        assert ask(ca, "again a") == "again a"
        wait_until(lambda: len(heard_a) == 2, what="a's second answer")
        assert heard_b == ["for b"]


# ---- strangers on the broker ------------------------------------------------------------


def test_garbage_and_unknown_keys_are_dropped_while_a_satellite_works(
    hub: MQTTHub, mosquitto: Broker, prefix: str, stranger: Stranger
) -> None:
    row = hub.add_client("sat")
    idle = hub.add_client("idle")  # known key, never connected
    with client_for(mosquitto, prefix, row.api_key) as client:
        stranger.publish(f"{prefix}/nobody/status", b"\x00\x01 not a status")
        stranger.subscribe(f"{prefix}/{idle.api_key}/status")
        stranger.subscribe(f"{prefix}/nobody/status")
        stranger.publish(f"{prefix}/nobody/in", b"\xff\xfe garbage \x00")
        stranger.publish(f"{prefix}/nobody/in", b'{"ciphertext": "00", "tag": "x"')
        stranger.publish(f"{prefix}//in", b"an empty key level")
        stranger.publish(f"{prefix}/{idle.api_key}/in", b'{"not": "a hivemind frame"}')
        wait_until(lambda: hub.stat("mqtt_unknown_key") == 2, what="the unknown-key frames")
        wait_until(
            lambda: hub.stat("mqtt_bad_topic") == 1 and hub.stat("mqtt_no_link") == 1,
            what="the rest",
        )
        # the known key without a link is told to start again; the unknown one hears nothing
        topic, payload = stranger.next()
        assert topic == f"{prefix}/{idle.api_key}/status"
        assert payload.startswith(b"offline 1001 ")
        assert stranger.received.empty()
        assert hub.stat("errors") == 0
        assert hub.links() == 1
        assert ask(client, "still here") == "still here"


def test_garbage_on_a_clients_out_topic_closes_that_link_and_the_client_recovers(
    hub: MQTTHub, mosquitto: Broker, prefix: str, stranger: Stranger
) -> None:
    row = hub.add_client("target")
    with client_for(mosquitto, prefix, row.api_key) as client:
        out = f"{prefix}/{row.api_key}/out"
        for junk in (b"\xff\xfe\x00 binary junk", b'{"ciphertext": "00", "tag"', b"{}", b""):
            stranger.publish(out, junk)
        # as over a websocket, a bad frame closes the link that carried it (1002)
        # and the client opens a new one by itself, then is answered again
        wait_until(
            lambda: client.connected and client.stats["connects"] >= 2,
            what="the new link",
            timeout=15,
        )
        assert ask(client, "after the junk") == "after the junk"
        assert client.fatal_error is None
    assert hub.stat("errors") == 0


def test_ecosystem_bootstrap_gets_hello_and_handshake_offer(
    hub: MQTTHub, prefix: str, stranger: Stranger
) -> None:
    """What a satellite of the ecosystem's MQTT plugin sees after its bootstrap HELLO."""
    row = hub.add_client("eco")
    stranger.subscribe(f"{prefix}/{row.api_key}/out")
    hello = HiveMessage(
        HiveMessageType.HELLO, {"pubkey": None, "session": {"session_id": "s1"}, "site_id": "den"}
    )
    stranger.publish(f"{prefix}/{row.api_key}/in", hello.serialize())
    frames = [json.loads(stranger.next()[1]) for _ in range(2)]
    assert [f["msg_type"] for f in frames] == ["hello", "shake"]
    assert frames[0]["payload"]["node_id"] == hub.server.node_id
    offer = frames[1]["payload"]
    assert offer["password"] is True and offer["handshake"] is True
    assert hub.links() == 1
    # a second bootstrap is a fresh start: the link of the key is replaced, not added
    first = hub.call(lambda: hub.listener.links[row.api_key])
    stranger.publish(f"{prefix}/{row.api_key}/in", hello.serialize())
    wait_until(
        lambda: hub.call(lambda: hub.listener.links.get(row.api_key)) is not first,
        what="a new link",
    )
    assert hub.links() == 1
    wait_until(
        lambda: hub.call(lambda: len(hub.server.connections)) == 1, what="the old link released"
    )


# ---- closing and reconnecting -----------------------------------------------------------


def test_offline_status_closes_the_link_and_the_client_comes_back(
    hub: MQTTHub, mosquitto: Broker, prefix: str, stranger: Stranger
) -> None:
    row = hub.add_client("sat")
    with client_for(mosquitto, prefix, row.api_key, reconnect_delays=[0.1] * 20) as client:
        assert client.stats["connects"] == 1
        # what the broker publishes as the satellite's last will
        stranger.publish(f"{prefix}/{row.api_key}/status", b"offline")
        wait_until(lambda: hub.stat("mqtt_offline") == 1, what="the hub to drop the link")
        wait_until(
            lambda: client.stats["connects"] == 2 and client.connected,
            what="the client to reconnect",
        )
        assert hub.links() == 1
        assert ask(client, "back again") == "back again"


def test_hub_side_close_reaches_the_client_with_its_code(
    hub: MQTTHub, mosquitto: Broker, prefix: str
) -> None:
    row = hub.add_client("sat")
    with client_for(mosquitto, prefix, row.api_key) as client:
        hub.call(lambda: hub.listener.links[row.api_key].close(1008, "credentials revoked"))
        wait_until(lambda: client.fatal_error is not None, what="the client to stop")
        error = client.fatal_error
        assert isinstance(error, ConnectionClosedError)
        assert error.code == 1008 and "credentials revoked" in str(error)
        assert not client.connected


def test_client_reconnects_after_the_hub_restarts(
    make_hub: Callable[..., MQTTHub], mosquitto: Broker, prefix: str
) -> None:
    hub = make_hub()
    row = hub.add_client("sat")
    client = client_for(
        mosquitto, prefix, row.api_key, connect_timeout=2, reconnect_delays=[0.2] * 50
    )
    with client:
        assert ask(client, "before") == "before"
        hub.stop()
        wait_until(lambda: not client.connected, what="the client to notice the hub stopped")
        make_hub()
        wait_until(
            lambda: client.connected and client.stats["connects"] == 2,
            what="the reconnect",
            timeout=20,
        )
        assert ask(client, "after") == "after"


# ---- packaging and CLI ----------------------------------------------------------------------


def test_missing_aiomqtt_is_a_clear_import_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "hivemind_bus_client.transport.mqtt",
        "hivemind_bus_client.mqtt_client",
        "hivemind_core.mqtt_listener",
        "hivemind_core.listeners.mqtt",
    ):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setitem(sys.modules, "aiomqtt", None)
    for name in ("hivemind_bus_client.mqtt_client", "hivemind_core.mqtt_listener"):
        with pytest.raises(ImportError, match=r"pip install 'hivemind-mesh\[mqtt\]'"):
            importlib.import_module(name)


def test_cli_listen_serves_mqtt(mosquitto: Broker, prefix: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIVEMIND_")}
    env.update(XDG_CONFIG_HOME=str(tmp_path / "config"), XDG_DATA_HOME=str(tmp_path / "data"))
    cli = [sys.executable, "-m", "hivemind_core.cli"]
    subprocess.run(
        [
            *cli,
            "add-client",
            "--name",
            "cli-sat",
            "--access-key",
            "cli-key",
            "--password",
            "cli-pw",
        ],
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    log = tmp_path / "hub.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [
                *cli,
                "-v",
                "listen",
                "--host",
                "127.0.0.1",
                "--port",
                str(free_port()),
                "--mqtt-host",
                mosquitto[0],
                "--mqtt-port",
                str(mosquitto[1]),
                "--mqtt-prefix",
                prefix,
            ],
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(
            lambda: b"MQTT listener" in log.read_bytes() or proc.poll() is not None,
            what="the hub to start",
            timeout=30,
        )
        assert proc.poll() is None, log.read_text(errors="replace")
        with client_for(mosquitto, prefix, "cli-key", "cli-pw") as client:
            assert ask(client, "from the cli hub") == "from the cli hub"
    finally:
        proc.terminate()
        proc.wait(10)
    assert proc.returncode == 0, log.read_text(errors="replace")[-2000:]


# ---- admission: off the loop, throttled like a websocket's; connection caps -------------


def bootstrap(stranger: Stranger, prefix: str, key: str) -> None:
    hello = HiveMessage(HiveMessageType.HELLO, {"session": {"session_id": "s"}, "site_id": "x"})
    stranger.publish(f"{prefix}/{key}/in", hello.serialize())


def test_wrong_key_flood_is_throttled_and_does_not_stall_a_websocket_round_trip(
    make_hub: Callable[..., MQTTHub], mosquitto: Broker, prefix: str, stranger: Stranger
) -> None:
    import time

    from hivemind_bus_client import HiveMessageBusClient

    hub = make_hub(failed_auth_budget=5, auth_window=60.0)
    row = hub.add_client("ws-sat")
    with HiveMessageBusClient(
        key=row.api_key,
        password="pw",
        host="ws://127.0.0.1",
        port=hub.server.port,
        identity=NodeIdentity({}),
        site_id="hall",
    ) as ws_client:
        ws_client.connect()
        real = hub.db.get_client_by_api_key

        def slow(key: str) -> Any:  # a database that needs 1 s per lookup
            time.sleep(1.0)
            return real(key)

        hub.db.get_client_by_api_key = slow
        for n in range(15):
            bootstrap(stranger, prefix, f"guess-{n}")
        time.sleep(0.3)  # the hub is busy with the flood now
        worst = 0.0
        for n in range(5):
            t0 = time.monotonic()
            answer = ws_client.wait_for_response(
                utterance(f"echo during flood {n}"), reply_type="speak", timeout=20
            )
            worst = max(worst, time.monotonic() - t0)
            assert answer is not None and answer.payload.data["utterance"] == f"during flood {n}"
        # on the loop, each lookup stalls every link for 1 s (15 s in all)
        assert worst < 0.5, f"a websocket round trip took {worst:.2f} s during the flood"
        wait_until(lambda: hub.stat("auth_throttled") > 0, what="the flood to be throttled")
        assert hub.stat("auth_failures") == 5
        assert hub.stat("mqtt_unknown_key") == 5
        # the key throttle is per key: a known MQTT satellite still gets in
        hub.db.get_client_by_api_key = real
        mqtt_row = hub.add_client("mqtt-sat")
        with client_for(mosquitto, prefix, mqtt_row.api_key) as client:
            assert ask(client, "after the flood") == "after the flood"


def test_mqtt_links_are_capped_with_a_1013_notice(
    make_hub: Callable[..., MQTTHub], mosquitto: Broker, prefix: str, stranger: Stranger
) -> None:
    hub = make_hub(max_connections=1)
    first, second = hub.add_client("first"), hub.add_client("second")
    with client_for(mosquitto, prefix, first.api_key):
        stranger.subscribe(f"{prefix}/{second.api_key}/status")
        bootstrap(stranger, prefix, second.api_key)
        topic, payload = stranger.next()
        assert topic == f"{prefix}/{second.api_key}/status"
        assert payload == b"offline 1013 too many connections (1)"
        assert hub.stat("refused_connection_cap") == 1
        assert hub.links() == 1
        # the satellite's own fresh start replaces its link: not refused
        bootstrap(stranger, prefix, first.api_key)
        wait_until(lambda: hub.stat("mqtt_connections") == 2, what="the replacement link")
        assert hub.stat("refused_connection_cap") == 1


def test_a_frame_racing_a_hub_side_close_does_not_turn_its_1008_into_1001(
    hub: MQTTHub, mosquitto: Broker, prefix: str, stranger: Stranger
) -> None:
    """The cause of the old 1001-vs-1008 flake: a satellite frame that reached the
    hub between its close and the close notice was answered "no link: 1001" first."""
    row = hub.add_client("sat")
    status = f"{prefix}/{row.api_key}/status"
    with client_for(mosquitto, prefix, row.api_key) as client:
        stranger.subscribe(status)

        def close_then_frame() -> None:
            hub.listener.links[row.api_key].close(1008, "credentials revoked")
            hub.listener.handle(f"{prefix}/{row.api_key}/in", b'{"ciphertext": "00"}')

        hub.call(close_then_frame)
        wait_until(lambda: client.fatal_error is not None, what="the client to stop")
        error = client.fatal_error
        assert isinstance(error, ConnectionClosedError) and error.code == 1008, error
        notices = []
        with contextlib.suppress(queue.Empty):
            while True:
                topic, payload = stranger.next(1.0)
                if topic == status and payload.startswith(b"offline "):
                    notices.append(payload)
        # the first notice is the close's own (later frames may still hear "start again")
        assert notices and notices[0].startswith(b"offline 1008 "), notices
        assert hub.stat("mqtt_dropped_closing") == 1
