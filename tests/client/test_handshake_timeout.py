"""``handshake_timeout`` is honoured by every client transport against a silent peer.

Each peer accepts the transport (websocket upgrade, HTTP ``/connect``, MQTT broker
connection) and then never speaks HiveMind. With ``handshake_timeout=0.5`` and a
long ``connect_timeout`` the client must give up after about half a second with
``ConnectTimeout``, not after the whole connect timeout.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from hivemind_bus_client.client import HiveMessageBusClient
from hivemind_bus_client.exceptions import ConnectTimeout
from hivemind_bus_client.http_client import HiveMindHTTPClient
from hivemind_bus_client.identity import NodeIdentity
from support.silent import silent_websocket_server

LIMITS = {"connect_timeout": 8.0, "handshake_timeout": 0.5, "reconnect": False}


def _timed_failure(client: Any) -> float:
    started = time.monotonic()
    try:
        with pytest.raises(ConnectTimeout):
            client.connect()
    finally:
        client.close()
    return time.monotonic() - started


def _gives_up_in_time(client_class: Any, **kwargs: Any) -> None:
    """Connecting to a silent peer fails with ConnectTimeout after about handshake_timeout."""
    took = _timed_failure(client_class(password="p", **kwargs, **LIMITS))
    assert 0.4 < took < 2.5, took


@pytest.fixture
def silent_websocket() -> Iterator[int]:
    """A websocket server that accepts and never sends a frame."""
    with silent_websocket_server() as port:
        yield port


def test_websocket_client_honours_handshake_timeout(
    silent_websocket: int, identity: NodeIdentity
) -> None:
    _gives_up_in_time(
        HiveMessageBusClient,
        key="k",
        host="ws://127.0.0.1",
        port=silent_websocket,
        identity=identity,
    )


class _SilentHTTP(BaseHTTPRequestHandler):
    """Accepts /connect, then every poll returns no frame."""

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = json.dumps({"messages": [], "b64_messages": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = _answer
    do_POST = _answer

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def silent_http() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SilentHTTP)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def test_http_client_honours_handshake_timeout(silent_http: int, identity: NodeIdentity) -> None:
    _gives_up_in_time(
        HiveMindHTTPClient,
        key="k",
        host="http://127.0.0.1",
        port=silent_http,
        identity=identity,
    )


def test_mqtt_client_honours_handshake_timeout(
    mosquitto: tuple[str, int],
    identity: NodeIdentity,
) -> None:
    from hivemind_bus_client.mqtt_client import HiveMindMQTTClient

    host, port = mosquitto
    _gives_up_in_time(
        HiveMindMQTTClient,
        key="nobody-answers",
        host=host,
        port=port,
        identity=identity,
        prefix="silent-test",
    )
