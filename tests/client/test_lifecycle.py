"""The 1.2.x constructor and lifecycle additions, over real sockets.

``websocket_ping_interval`` / ``websocket_ping_timeout`` / ``websocket_connect_timeout``
/ ``max_protocol_version``, ``connect(handshake_max_retries=)``,
``close_connection()`` beside ``close()``, ``connected_event`` and
``handshake_event`` (docs/client.md, "Configuration" and "Connect").
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from ovos_bus_client.message import Message
from websockets.asyncio.server import ServerConnection, serve

from hivemind_bus_client.asyncio_client import AsyncHiveMessageBusClient
from hivemind_bus_client.client import HiveMessageBusClient
from hivemind_bus_client.exceptions import (
    AuthenticationFailed,
    ConfigurationError,
    ConnectionClosedError,
    ConnectTimeout,
    HiveMindEntryPointNotFound,
    InvalidState,
)
from hivemind_bus_client.identity import NodeIdentity
from support.net import free_port, wait_until

from .fakehub import Account, FakeHub

MakeClient = Callable[..., HiveMessageBusClient]


def utterance(text: str) -> Message:
    return Message("recognizer_loop:utterance", {"utterances": [text]})


def live_ws(client: HiveMessageBusClient) -> Any:
    """The websockets connection under the client's current link."""
    driver = client.protocol.engine.driver
    assert driver is not None
    return driver.channel.ws  # type: ignore[attr-defined]


class LoopServer:
    """A websockets server on its own loop thread running ``handler`` per connection."""

    def __init__(self, handler: Callable[[ServerConnection], Any]) -> None:
        self.port = free_port()
        self.accepted = 0
        self._handler = handler
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _serve(self, ws: ServerConnection) -> None:
        self.accepted += 1
        await self._handler(ws)

    def _run(self) -> None:
        async def main() -> None:
            self._stop = asyncio.Event()
            async with serve(self._serve, "127.0.0.1", self.port, compression=None):
                self._started.set()
                await self._stop.wait()

        self._loop.run_until_complete(main())

    def __enter__(self) -> LoopServer:
        self._thread.start()
        assert self._started.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture
def try_again_server() -> Iterator[LoopServer]:
    """Upgrades every socket, then closes it with 1013 (retryable) before any HELLO."""

    async def refuse(ws: ServerConnection) -> None:
        await ws.close(1013, "busy, try again")

    with LoopServer(refuse) as server:
        yield server


# -- constructor keywords ---------------------------------------------------------------


def test_keepalive_defaults_are_20_s_on_the_live_socket(
    hub: FakeHub, make_client: MakeClient
) -> None:
    client = make_client(hub)
    client.connect()
    ws = live_ws(client)
    assert (ws.ping_interval, ws.ping_timeout) == (20.0, 20.0)


def test_websocket_ping_keywords_reach_the_socket(hub: FakeHub, make_client: MakeClient) -> None:
    client = make_client(hub, websocket_ping_interval=3, websocket_ping_timeout=4)
    client.connect()
    ws = live_ws(client)
    assert (ws.ping_interval, ws.ping_timeout) == (3, 4)
    assert (client.config.ping_interval, client.config.ping_timeout) == (3, 4)


def test_websocket_ping_keywords_notice_a_dead_link(hub: FakeHub, make_client: MakeClient) -> None:
    client = make_client(hub, websocket_ping_interval=0.2, websocket_ping_timeout=0.2)
    client.connect()
    hub.freeze_all()
    # With the 20 s defaults this takes 20 to 40 s: well past the wait.
    wait_until(lambda: client.stats["connects"] == 2 and client.connected, timeout=8)


def test_websocket_ping_none_disables_the_keepalive(hub: FakeHub, make_client: MakeClient) -> None:
    client = make_client(hub, websocket_ping_interval=None)
    client.connect()
    assert live_ws(client).ping_interval is None


def test_websocket_connect_timeout_bounds_the_opening() -> None:
    """A listener that accepts TCP but never answers the upgrade."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        port = listener.getsockname()[1]
        client = HiveMessageBusClient(
            key="k",
            password="p",
            host="127.0.0.1",
            port=port,
            identity=NodeIdentity({}),
            connect_timeout=10,
            websocket_connect_timeout=0.5,
        )
        started = time.monotonic()
        with pytest.raises(ConnectTimeout):
            client.connect()
        took = time.monotonic() - started
        client.close()
    assert took < 3, f"connect gave up after {took:.1f} s, not about 0.5 s"


def test_websocket_connect_timeout_default_is_30_s() -> None:
    client = HiveMessageBusClient(key="k", host="h", identity=NodeIdentity({}))
    assert client.config.websocket_connect_timeout == 30.0


def test_max_protocol_version_is_stored_and_v1_is_spoken(
    hub: FakeHub, make_client: MakeClient
) -> None:
    default = make_client(hub)
    assert default.max_protocol_version == 3
    default.connect()
    assert default.handshake_info is not None and default.handshake_info["mode"] == "password"
    one = make_client(hub, max_protocol_version=1)
    assert one.max_protocol_version == 1
    one.connect()
    assert one.wait_for_response(utterance("v1"), reply_type="speak") is not None


@pytest.mark.parametrize("bad", [0, 4, -1, "3", 2.0, True, None])
def test_max_protocol_version_outside_1_to_3_is_refused(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="max_protocol_version"):
        HiveMessageBusClient(key="k", host="h", identity=NodeIdentity({}), max_protocol_version=bad)


# -- connect(handshake_max_retries=) -------------------------------------------------------


def _client_for(port: int, **kw: Any) -> HiveMessageBusClient:
    kw.setdefault("key", "sat-key")
    kw.setdefault("password", "hunter22")
    return HiveMessageBusClient(
        host="127.0.0.1",
        port=port,
        identity=NodeIdentity({}),
        connect_timeout=5,
        reconnect_delays=[0.1] * 50,
        **kw,
    )


def test_without_retries_connect_tries_once(try_again_server: LoopServer) -> None:
    client = _client_for(try_again_server.port)
    with pytest.raises(ConnectionClosedError, match="try again"):
        client.connect()
    client.close()
    assert try_again_server.accepted == 1


def test_handshake_max_retries_bounds_the_attempts(try_again_server: LoopServer) -> None:
    client = _client_for(try_again_server.port)
    with pytest.raises(ConnectionClosedError):
        client.connect(handshake_max_retries=2)
    client.close()
    assert try_again_server.accepted == 3  # the first attempt and two retries


def test_handshake_max_retries_waits_for_a_hub_that_comes_up() -> None:
    port = free_port()
    client = _client_for(port)
    with FakeHub([Account("sat-key", "hunter22")], port=port) as hub:
        hub.stop_listening()
        threading.Timer(0.8, hub.restart).start()
        try:
            client.connect(handshake_max_retries=30)
            assert client.connected
            assert client.wait_for_response(utterance("up"), reply_type="speak") is not None
        finally:
            client.close()


def test_a_hub_that_is_down_fails_connect_without_retries() -> None:
    client = _client_for(free_port())
    with pytest.raises(HiveMindEntryPointNotFound):
        client.connect(handshake_max_retries=None)
    client.close()


def test_a_refusal_is_not_retried(hub: FakeHub) -> None:
    client = _client_for(hub.port, password="wrong")
    with pytest.raises(AuthenticationFailed):
        client.connect(handshake_max_retries=5)
    client.close()
    assert hub.connections == 1


@pytest.mark.parametrize("bad", [-1, 1.5, "3", True])
def test_handshake_max_retries_must_be_a_count(hub: FakeHub, bad: Any) -> None:
    client = _client_for(hub.port)
    with pytest.raises(ConfigurationError, match="handshake_max_retries"):
        client.connect(handshake_max_retries=bad)
    assert hub.connections == 0


# -- close_connection() and close() -----------------------------------------------------------


def test_close_connection_drops_the_socket_and_the_client_comes_back(
    hub: FakeHub, make_client: MakeClient
) -> None:
    client = make_client(hub, reconnect_delays=[0.05] * 5)
    client.connect()
    first = client.protocol.conn
    client.close_connection()
    wait_until(lambda: client.stats["connects"] == 2 and client.connected, timeout=5)
    assert client.protocol.conn is not first
    assert hub.connections == 2
    reply = client.wait_for_response(utterance("after drop"), reply_type="speak")
    assert reply is not None and reply.payload.data["utterance"] == "echo: after drop"


def test_close_is_permanent(hub: FakeHub, make_client: MakeClient) -> None:
    client = make_client(hub, reconnect_delays=[0.05] * 5)
    client.connect()
    client.close()
    time.sleep(0.5)
    assert hub.connections == 1 and not client.connected
    with pytest.raises(InvalidState):
        client.emit(utterance("gone"))


def test_close_connection_before_connect_does_nothing(
    hub: FakeHub, make_client: MakeClient
) -> None:
    client = make_client(hub)
    client.close_connection()
    assert hub.connections == 0 and not client.connected_event.is_set()


# -- connected_event and handshake_event ------------------------------------------------------


def test_events_follow_the_link(hub: FakeHub, make_client: MakeClient) -> None:
    client = make_client(hub, reconnect=False)
    assert not client.connected_event.is_set() and not client.handshake_event.is_set()
    client.connect()
    assert client.connected_event.is_set() and client.handshake_event.is_set()
    hub.drop_all(1011)
    wait_until(lambda: not client.connected_event.is_set(), timeout=5)
    assert not client.handshake_event.is_set()


def test_events_clear_on_close(hub: FakeHub, make_client: MakeClient) -> None:
    client = make_client(hub)
    client.connect()
    client.close()
    assert not client.connected_event.is_set() and not client.handshake_event.is_set()


def test_connected_event_is_set_when_the_socket_opens_before_the_handshake() -> None:
    """A hub that upgrades the socket and then stays silent: the socket is up,
    the link is not keyed; once the handshake deadline passes both are clear."""

    async def silent(ws: ServerConnection) -> None:
        await asyncio.sleep(30)

    with LoopServer(silent) as server:
        client = _client_for(server.port, handshake_timeout=1.5)
        failure: list[BaseException] = []

        def run() -> None:
            try:
                client.connect()
            except BaseException as exc:
                failure.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        wait_until(client.connected_event.is_set, timeout=5, what="the socket to open")
        assert not client.handshake_event.is_set()
        thread.join(10)
        client.close()
    assert failure and isinstance(failure[0], ConnectTimeout), failure
    assert not client.connected_event.is_set()


# -- the asyncio face ----------------------------------------------------------------------


def test_asyncio_face_close_connection_retries_and_events(
    hub: FakeHub, identity: NodeIdentity
) -> None:
    async def scenario() -> dict[str, Any]:
        client = AsyncHiveMessageBusClient(
            key="sat-key",
            password="hunter22",
            host=hub.host,
            port=hub.port,
            identity=identity,
            connect_timeout=5,
            reconnect_delays=[0.05] * 5,
            websocket_ping_interval=7,
        )
        await client.connect(handshake_max_retries=2)
        try:
            keyed = client.handshake_event.is_set() and client.connected_event.is_set()
            ping = client.protocol.engine.driver.channel.ws.ping_interval  # type: ignore[union-attr]
            await client.close_connection()
            started = time.monotonic()
            while client.stats["connects"] < 2 and time.monotonic() - started < 5:
                await asyncio.sleep(0.01)
            reply = await client.wait_for_response(utterance("async"), reply_type="speak")
            return {"keyed": keyed, "ping": ping, "connects": client.stats["connects"], "r": reply}
        finally:
            await client.close()
            assert not client.handshake_event.is_set()

    out = asyncio.run(scenario())
    assert out["keyed"] and out["ping"] == 7
    assert out["connects"] == 2
    assert out["r"] is not None and out["r"].payload.data["utterance"] == "echo: async"
