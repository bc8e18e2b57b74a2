"""The HTTP polling transport over loopback: HiveMindHTTPClient against our hub's HTTP listener.

The hub (HubServer with the embedded agent and a throwaway SQLite database,
plus :class:`HTTPListener`) runs on its own event loop in a background
thread; the sync client runs in the test thread, as a user runs it. Raw
``http.client`` requests check the listener's answers to malformed input.

(No ``__init__.py`` here on purpose: a package named ``http`` would shadow the
standard library.)
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from ovos_bus_client.message import Message

from hivemind_bus_client import crypto
from hivemind_bus_client.exceptions import (
    AuthenticationFailed,
    ConnectionClosed,
    HiveMindEntryPointNotFound,
    UnauthorizedKeyError,
)
from hivemind_bus_client.http_client import DEFAULT_HTTP_USERAGENT, HiveMindHTTPClient
from hivemind_bus_client.identity import NodeIdentity
from hivemind_core.agents.embedded import EmbeddedAgent
from hivemind_core.config import HubConfig
from hivemind_core.database import open_database
from hivemind_core.http_listener import HTTPListener, start_http_listener
from hivemind_core.server import HubServer

HUB_KEY = crypto.create_private_key()


class HubThread:
    """A hub with an HTTP listener on 127.0.0.1, run on an event loop in a thread."""

    def __init__(self, tmp: Path, listener_options: dict[str, Any], **overrides: Any) -> None:
        self.cfg = HubConfig(host="127.0.0.1", port=0, db_path=str(tmp / "clients.db"))
        for name, value in overrides.items():
            setattr(self.cfg, name, value)
        self.listener_options = listener_options
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: HubServer
        self.listener: HTTPListener
        self.db: Any = None

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the hub's loop and return its result."""
        fut: Future[Any] = Future()

        def run() -> None:
            try:
                fut.set_result(fn())
            except BaseException as exc:
                fut.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return fut.result(10)

    def start(self) -> HubThread:
        self.thread.start()

        async def up() -> None:
            self.db = open_database(self.cfg, backend="sqlite", path=self.cfg.db_path)
            self.server = HubServer(self.cfg, self.db, EmbeddedAgent(self.cfg), private_key=HUB_KEY)
            await self.server.start()
            self.listener = await start_http_listener(
                self.server, "127.0.0.1", 0, **self.listener_options
            )

        asyncio.run_coroutine_threadsafe(up(), self.loop).result(20)
        return self

    def stop(self) -> None:
        async def down() -> None:
            await self.listener.close()
            await self.server.stop()
            self.db.close()

        asyncio.run_coroutine_threadsafe(down(), self.loop).result(20)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    @property
    def port(self) -> int:
        return self.listener.port

    def add_client(self, name: str, password: str = "pw", **kw: Any) -> Any:
        return self.call(lambda: self.db.add_client(name, password=password, **kw))

    def stat(self, name: str) -> int:
        return int(self.call(lambda: self.server.stats.get(name, 0)))

    def links(self) -> int:
        return int(self.call(lambda: len(self.server.connections)))


@pytest.fixture
def make_hub() -> Iterator[Callable[..., HubThread]]:
    hubs: list[HubThread] = []
    tmps: list[tempfile.TemporaryDirectory[str]] = []

    def make(listener_options: dict[str, Any] | None = None, **overrides: Any) -> HubThread:
        tmp = tempfile.TemporaryDirectory(prefix="http-hub-")
        tmps.append(tmp)
        hub = HubThread(Path(tmp.name), listener_options or {}, **overrides).start()
        hubs.append(hub)
        return hub

    yield make
    for hub in hubs:
        hub.stop()
    for tmp in tmps:
        tmp.cleanup()


@pytest.fixture
def hub(make_hub: Callable[..., HubThread]) -> HubThread:
    return make_hub()


def client_for(hub: HubThread, key: str, password: str = "pw", **kw: Any) -> HiveMindHTTPClient:
    return HiveMindHTTPClient(
        key=key,
        password=password,
        host="http://127.0.0.1",
        port=hub.port,
        identity=NodeIdentity({}),
        site_id=kw.pop("site_id", "kitchen"),
        **kw,
    )


def utterance(text: str) -> Message:
    return Message("recognizer_loop:utterance", {"utterances": [text]})


def raw(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, json.loads(data) if data else {}
    finally:
        conn.close()


def raw_bytes(port: int, payload: bytes) -> bytes:
    """Send raw bytes, return everything the listener answers before closing."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(payload)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def auth(key: str, useragent: str = "raw-ua") -> str:
    return base64.b64encode(f"{useragent}:{key}".encode()).decode()


def form(**fields: str) -> tuple[bytes, dict[str, str]]:
    from urllib.parse import urlencode

    return urlencode(fields).encode(), {"Content-Type": "application/x-www-form-urlencoded"}


# -- the client against our listener ---------------------------------------------------


def test_password_handshake_utterance_and_speak_answer(hub: HubThread) -> None:
    row = hub.add_client("sat1")
    client = client_for(hub, row.api_key)
    assert client.useragent == DEFAULT_HTTP_USERAGENT
    t0 = time.monotonic()
    client.connect()
    try:
        assert time.monotonic() - t0 < 5
        assert client.connected
        assert client.handshake_info is not None
        assert client.handshake_info["mode"] == "password"
        # binary frames do not survive the reference's form decoding: never offered
        assert client.handshake_info["binarize"] is False
        spoken: list[Message] = []
        client.on_mycroft("speak", spoken.append)
        t1 = time.monotonic()
        answer = client.wait_for_response(utterance("echo hi there"), reply_type="speak", timeout=5)
        elapsed = time.monotonic() - t1
        assert answer is not None, "no speak answer over HTTP"
        assert answer.payload.data["utterance"] == "hi there"
        # polling right after sending: well under the 1 s idle poll interval
        assert elapsed < 0.9, elapsed
        deadline = time.monotonic() + 3
        while not spoken and time.monotonic() < deadline:
            time.sleep(0.02)
        assert spoken and spoken[0].data["utterance"] == "hi there"
        assert client.peer is not None
        assert client.peer.startswith(f"{DEFAULT_HTTP_USERAGENT}::{row.client_id}::sat1::")
        assert hub.stat("http_connections") == 1
    finally:
        client.close()
    # /disconnect unregistered the link at the hub
    deadline = time.monotonic() + 3
    while hub.links() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert hub.links() == 0


def test_wait_for_message_and_emit_mycroft(hub: HubThread) -> None:
    row = hub.add_client("sat")
    with client_for(hub, row.api_key) as client:
        box: list[Any] = []
        waiter = threading.Thread(target=lambda: box.append(client.wait_for_message("speak", 5)))
        waiter.start()
        time.sleep(0.05)
        client.emit_mycroft(utterance("echo second"))
        waiter.join(6)
        assert box and box[0] is not None
        assert box[0].data["utterance"] == "second"


def test_wrong_key_is_unauthorized(hub: HubThread) -> None:
    client = client_for(hub, "no-such-key", reconnect=False)
    with pytest.raises(UnauthorizedKeyError, match="refused the access key"):
        client.connect()
    assert not client.connected
    assert hub.stat("auth_failures") == 1


def test_wrong_password_is_authentication_failed(hub: HubThread) -> None:
    row = hub.add_client("sat", password="right")
    client = client_for(hub, row.api_key, password="wrong", reconnect=False)
    with pytest.raises(AuthenticationFailed) as info:
        client.connect()
    assert not isinstance(info.value, UnauthorizedKeyError)
    assert not client.connected
    client.close()
    deadline = time.monotonic() + 3
    while hub.links() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert hub.links() == 0, "failed handshake left a link behind"


def test_nothing_listening_is_entry_point_not_found() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = HiveMindHTTPClient(
        key="k",
        password="p",
        host="127.0.0.1",
        port=port,
        identity=NodeIdentity({}),
        reconnect=False,
    )
    with pytest.raises(HiveMindEntryPointNotFound):
        client.connect()


def test_two_clients_get_only_their_own_replies(hub: HubThread) -> None:
    a_row = hub.add_client("a")
    b_row = hub.add_client("b")
    with (
        client_for(hub, a_row.api_key, site_id="a") as a,
        client_for(hub, b_row.api_key, site_id="b") as b,
    ):
        seen_a: list[str] = []
        seen_b: list[str] = []
        a.on_mycroft("speak", lambda m: seen_a.append(m.data["utterance"]))
        b.on_mycroft("speak", lambda m: seen_b.append(m.data["utterance"]))
        for i in range(3):
            a.emit(utterance(f"echo alpha {i}"))
            b.emit(utterance(f"echo beta {i}"))
        deadline = time.monotonic() + 5
        while (len(seen_a) < 3 or len(seen_b) < 3) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)  # anything misrouted would arrive by now
        assert sorted(seen_a) == [f"alpha {i}" for i in range(3)]
        assert sorted(seen_b) == [f"beta {i}" for i in range(3)]


def test_hub_side_close_reaches_the_client(hub: HubThread) -> None:
    row = hub.add_client("sat")
    client = client_for(hub, row.api_key, reconnect=False, poll_interval=0.1)
    client.connect()
    try:
        assert hub.call(lambda: hub.db.delete_client(row.client_id)) is True
        deadline = time.monotonic() + 5
        while client.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not client.connected
        assert isinstance(client.fatal_error, ConnectionClosed)
        assert client.fatal_error.code == 1008
    finally:
        client.close()


# -- the listener against malformed input ------------------------------------------------


def test_malformed_requests_get_http_errors_and_never_crash(
    make_hub: Callable[..., HubThread],
) -> None:
    hub = make_hub(failed_auth_budget=100)
    port = hub.port
    row = hub.add_client("sat")
    q = f"?authorization={auth(row.api_key)}"
    # bad authorization, unknown key
    assert raw(port, "POST", "/connect?authorization=%%%")[0] == 401
    status, data = raw(port, "POST", "/connect?authorization=" + auth("nope"))
    assert status == 401 and "error" in data
    assert raw(port, "POST", "/connect")[0] == 401
    # unknown path, wrong method
    assert raw(port, "GET", "/nowhere" + q)[0] == 404
    assert raw(port, "GET", "/connect" + q)[0] == 405
    # not connected yet
    status, data = raw(port, "GET", "/get_messages" + q)
    assert status == 409 and data["error"] == "Client is not connected"
    status, data = raw(port, "POST", "/connect" + q)
    assert status == 200 and data["status"] == "Connected" and len(data["link_secret"]) >= 40
    # missing message
    body, headers = form(other="x")
    assert raw(port, "POST", "/send_message" + q, body, headers) == (
        400,
        {"error": "Missing message"},
    )
    # huge body: refused before it is read
    answer = raw_bytes(
        port,
        f"POST /send_message{q} HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n".encode(),
    )
    assert answer.startswith(b"HTTP/1.1 413")
    # chunked bodies are not supported
    answer = raw_bytes(
        port,
        f"POST /send_message{q} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        "0\r\n\r\n".encode(),
    )
    assert answer.startswith(b"HTTP/1.1 501")
    # an HTTP/1.1 request without Host is malformed
    assert raw_bytes(port, f"POST /connect{q} HTTP/1.1\r\n\r\n".encode()).startswith(
        b"HTTP/1.1 400"
    )
    # garbage request line, oversized headers, bad Content-Length
    assert raw_bytes(port, b"HELLO\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert raw_bytes(port, b"GET /x HTTP/1.1\r\nX: " + b"a" * 70000 + b"\r\n\r\n").startswith(
        b"HTTP/1.1 431"
    )
    assert raw_bytes(port, b"POST /connect HTTP/1.1\r\nContent-Length: -1\r\n\r\n").startswith(
        b"HTTP/1.1 400"
    )
    # many headers, each under the line limit, together over max_header_size
    many = b"".join(b"X-%d: %s\r\n" % (i, b"a" * 4000) for i in range(6))
    assert raw_bytes(
        port, b"GET /get_messages HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n"
    ).startswith(b"HTTP/1.1 431")
    # a non-form body
    status, _ = raw(port, "POST", "/send_message" + q, b"{}", {"Content-Type": "application/json"})
    assert status == 400
    # bad JSON frame: HTTP error, and the core closes the link (1002) as on a websocket
    body, headers = form(message="{not json")
    status, data = raw(port, "POST", "/send_message" + q, body, headers)
    assert status == 400 and data["code"] == 1002
    status, data = raw(port, "GET", "/get_messages" + q)
    assert status == 409 and data["code"] == 1002
    # the listener still serves a real client
    client = client_for(hub, row.api_key)
    client.connect()
    try:
        answer_msg = client.wait_for_response(
            utterance("echo still alive"), reply_type="speak", timeout=5
        )
        assert answer_msg is not None and answer_msg.payload.data["utterance"] == "still alive"
    finally:
        client.close()
    assert hub.stat("errors") == 0


def test_failed_logins_are_throttled(make_hub: Callable[..., HubThread]) -> None:
    hub = make_hub(failed_auth_budget=3, auth_window=60.0)
    for _ in range(3):
        assert raw(hub.port, "POST", "/connect?authorization=" + auth("guess"))[0] == 401
    conn = http.client.HTTPConnection("127.0.0.1", hub.port, timeout=10)
    conn.request("POST", "/connect?authorization=" + auth("guess"))
    resp = conn.getresponse()
    resp.read()
    conn.close()
    assert resp.status == 429
    assert int(resp.getheader("Retry-After") or 0) >= 1


def test_unpolled_links_expire(make_hub: Callable[..., HubThread]) -> None:
    hub = make_hub(listener_options={"idle_timeout": 0.4})
    row = hub.add_client("sat")
    q = f"?authorization={auth(row.api_key)}"
    assert raw(hub.port, "POST", "/connect" + q)[0] == 200
    assert hub.links() == 1
    time.sleep(1.0)
    assert hub.links() == 0
    assert hub.stat("http_idle_closed") == 1


def test_reconnect_replaces_the_link_of_a_key(hub: HubThread) -> None:
    row = hub.add_client("sat")
    q = f"?authorization={auth(row.api_key)}"
    assert raw(hub.port, "POST", "/connect" + q)[0] == 200
    assert raw(hub.port, "POST", "/connect" + q)[0] == 200
    assert hub.links() == 1
    assert raw(hub.port, "POST", "/disconnect" + q) == (200, {"status": "Disconnected"})
    assert raw(hub.port, "POST", "/disconnect" + q)[0] == 409
    assert hub.links() == 0


def test_client_reconnects_after_a_retryable_hub_close(hub: HubThread) -> None:
    row = hub.add_client("sat")
    client = client_for(hub, row.api_key, poll_interval=0.1, reconnect_delays=[0.05, 0.2, 0.5])
    client.connect()
    try:
        assert client.stats["connects"] == 1
        hub.call(lambda: hub.listener.links[row.api_key].close(1001, "going away for a test"))
        deadline = time.monotonic() + 5
        while client.stats["connects"] < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert client.stats["connects"] == 2, "the client did not reconnect"
        answer = client.wait_for_response(
            utterance("echo back again"), reply_type="speak", timeout=5
        )
        assert answer is not None and answer.payload.data["utterance"] == "back again"
        assert client.fatal_error is None
    finally:
        client.close()


def test_binary_frames_both_ways(hub: HubThread) -> None:
    from hivemind_bus_client.message import HiveMessage, HiveMessageType, HiveMindBinaryPayloadType
    from hivemind_core.binary import BinaryHandler

    got: list[bytes] = []

    class Reverse(BinaryHandler):
        def handle(self, message: HiveMessage, peer: str, reply: Any) -> None:
            got.append(message.payload)
            reply(
                HiveMessage(
                    HiveMessageType.BINARY,
                    payload=message.payload[::-1],
                    metadata={"file_name": "r.bin"},
                    bin_type=HiveMindBinaryPayloadType.FILE,
                )
            )

    hub.call(lambda: setattr(hub.server, "binary_handler", Reverse()))
    row = hub.add_client("sat")
    with client_for(hub, row.api_key) as client:
        back: list[tuple[bytes, dict[str, Any]]] = []
        client.on_bin(HiveMessageType.BINARY, lambda data, ctx: back.append((data, ctx)))
        client.emit(
            HiveMessage(HiveMessageType.BINARY, b"\x00\x01\x02\xff"),
            binary_type=HiveMindBinaryPayloadType.RAW_AUDIO,
        )
        deadline = time.monotonic() + 5
        while not back and time.monotonic() < deadline:
            time.sleep(0.02)
        assert got == [b"\x00\x01\x02\xff"]
        assert back and back[0][0] == b"\xff\x02\x01\x00"


def test_slow_request_heads_are_cut_off_at_read_timeout(
    make_hub: Callable[..., HubThread],
) -> None:
    """A connection that never completes a request head is closed after
    ``read_timeout`` (0.5 s here), also on a kept-alive connection after an answer,
    as the hand-written listener did (now through aiohttp's keep-alive timeout;
    fails when the listener leaves that at aiohttp's default of 75 s)."""
    hub = make_hub(listener_options={"read_timeout": 0.5})
    row = hub.add_client("sat")
    q = f"?authorization={auth(row.api_key)}"

    def seconds_until_closed(sock: socket.socket, trickle: bytes) -> float:
        start = time.monotonic()
        for byte in trickle:  # one byte every 0.1 s, never the blank line
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.1)
        sock.settimeout(5)
        try:
            while sock.recv(65536):
                pass
        except OSError:
            pass
        return time.monotonic() - start

    slow_head = f"GET /get_messages{q} HTTP/1.1\r\nHost: x\r\nX-Slow: ".encode() + b"a" * 60
    with socket.create_connection(("127.0.0.1", hub.port)) as sock:
        took = seconds_until_closed(sock, slow_head)
    assert took < 3, f"a trickled request head held the connection {took:.1f} s (limit 0.5 s)"

    with socket.create_connection(("127.0.0.1", hub.port)) as sock:
        took = seconds_until_closed(sock, b"")
    assert took < 3, f"a silent connection was kept {took:.1f} s (limit 0.5 s)"

    # after a whole answer, the next head has its own deadline
    with socket.create_connection(("127.0.0.1", hub.port)) as sock:
        sock.sendall(f"POST /connect{q} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode())
        sock.settimeout(5)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        took = seconds_until_closed(sock, b"GET /get_messages HTTP/1.1\r\nX-Slow: " + b"a" * 60)
    assert took < 3, f"a kept-alive connection's second head was allowed {took:.1f} s"


# -- link secrets and connection caps (issue #11 items 15 and the caps) -------------------

SECRET = "X-HiveMind-Link-Secret"


def test_a_bound_link_refuses_every_request_without_its_secret(hub: HubThread) -> None:
    row = hub.add_client("sat")
    q = f"?authorization={auth(row.api_key, 'thief')}"
    with client_for(hub, row.api_key) as client:
        secret = client._http_channel.link_secret
        assert secret, "our client did not keep the link secret"
        for method, path in (("GET", "/get_messages"), ("GET", "/get_binary_messages")):
            assert raw(hub.port, method, path + q) == (403, {"error": "link secret required"})
        body, headers = form(message="garbage")
        assert raw(hub.port, "POST", "/send_message" + q, body, headers)[0] == 403
        assert raw(hub.port, "POST", "/disconnect" + q)[0] == 403
        assert raw(hub.port, "POST", "/connect" + q) == (409, {"error": "link in use"})
        wrong = {SECRET: "x" * len(secret)}
        assert raw(hub.port, "GET", "/get_messages" + q, headers=wrong)[0] == 403
        assert hub.stat("http_link_refused") == 6
        answer = client.wait_for_response(utterance("echo mine"), reply_type="speak", timeout=5)
        assert answer is not None and answer.payload.data["utterance"] == "mine"
        # with the secret the link may be replaced (our reconnect after a lost channel)
        status, data = raw(hub.port, "POST", "/connect" + q, headers={SECRET: secret})
        assert status == 200 and data["link_secret"] != secret


def test_an_unbound_link_is_replaced_and_a_stale_secret_is_told_to_start_again(
    hub: HubThread,
) -> None:
    row = hub.add_client("sat")
    q = f"?authorization={auth(row.api_key)}"
    status, first = raw(hub.port, "POST", "/connect" + q)
    assert status == 200
    mine = {SECRET: first["link_secret"]}
    # claimed, but its handshake never completed: any /connect of the key replaces it
    assert raw(hub.port, "GET", "/get_messages" + q, headers=mine)[0] == 200
    status, second = raw(hub.port, "POST", "/connect" + q)
    assert status == 200 and second["link_secret"] != first["link_secret"]
    status, data = raw(hub.port, "GET", "/get_messages" + q, headers=mine)
    assert status == 409 and data["error"] == "Client is not connected", data
    assert data["reason"] == "replaced by a new /connect"
    # a client that never sends a secret (the reference's) polls as before
    assert raw(hub.port, "GET", "/get_messages" + q)[0] == 200
    assert hub.stat("http_link_refused") == 0
    assert hub.links() == 1


def test_http_links_are_capped_in_total_and_per_address(
    make_hub: Callable[..., HubThread],
) -> None:
    hub = make_hub(max_connections=2, max_connections_per_address=0)
    keys = [hub.add_client(f"sat{n}").api_key for n in range(3)]
    assert raw(hub.port, "POST", f"/connect?authorization={auth(keys[0])}")[0] == 200
    assert raw(hub.port, "POST", f"/connect?authorization={auth(keys[1])}")[0] == 200
    status, data = raw(hub.port, "POST", f"/connect?authorization={auth(keys[2])}")
    assert (status, data) == (503, {"error": "too many connections (2)"})
    assert hub.stat("refused_connection_cap") == 1
    # a new /connect of a key with a live link replaces it: no extra link
    assert raw(hub.port, "POST", f"/connect?authorization={auth(keys[1])}")[0] == 200
    assert raw(hub.port, "POST", f"/disconnect?authorization={auth(keys[0])}")[0] == 200
    assert raw(hub.port, "POST", f"/connect?authorization={auth(keys[2])}")[0] == 200

    per = make_hub(max_connections=0, max_connections_per_address=1)
    a, b = per.add_client("a").api_key, per.add_client("b").api_key
    assert raw(per.port, "POST", f"/connect?authorization={auth(a)}")[0] == 200
    status, data = raw(per.port, "POST", f"/connect?authorization={auth(b)}")
    assert (status, data) == (503, {"error": "too many connections from this address (1)"})
    assert per.stat("refused_connection_cap") == 1
    assert per.links() == 1
