"""The hub's files, logs and HTTP listener against a hostile or careless world, over real sockets.

Each test starts ``hivemind-core listen`` in a subprocess (with or without
``-v``, with the HTTP listener) and checks one figure, named in the test.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import stat
import subprocess
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from interop import harness
from support.net import free_port, wait_until

from .hub import CLI, Creds, Hub, MiB, eventually, satellite, url, utterance


@contextlib.contextmanager
def hub_with_http(
    tmp: Path, *, verbose: bool, config: dict[str, object] | None = None
) -> Iterator[tuple[Hub, int]]:
    """Register ``sat`` and ``victim`` and run ``hivemind-core [-v] listen --http-port``."""
    env = harness.isolated_env(tmp)
    if config is not None:
        folder = tmp / "config" / "hivemind-core"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "server.json").write_text(json.dumps(config))
    creds = {}
    for name in ("sat", "victim"):
        c = Creds(key=f"key-{name}-{uuid.uuid4().hex[:8]}", password=f"pw-{uuid.uuid4().hex}")
        subprocess.run(
            [CLI, "add-client", "--name", name, "--access-key", c.key, "--password", c.password],
            env=env,
            check=True,
            capture_output=True,
            timeout=60,
        )
        creds[name] = c
    port, http_port = free_port(), free_port()
    argv = [CLI, *(["-v"] if verbose else []), "listen", "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--http-port", str(http_port), "--agent", "embedded"]
    proc = harness.start_process("hub", argv, env=env, log_path=tmp / "hub.log")
    try:
        wait_until(
            lambda: (
                (harness.port_open("127.0.0.1", port) and harness.port_open("127.0.0.1", http_port))
                or not proc.alive()
            ),
            timeout=60,
            what="the hub to listen",
        )
        assert proc.alive(), proc.log()
        yield Hub(port, proc, creds), http_port
    finally:
        proc.stop()


def token(key: str, useragent: str = "security-test") -> str:
    return base64.b64encode(f"{useragent}:{key}".encode()).decode("ascii")


def http_post(port: int, path: str, auth: str, data: bytes = b"") -> int:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}?authorization={auth}", data=data, method="POST"
    )
    req.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def run(coro: object, timeout: float = 60) -> None:
    asyncio.run(asyncio.wait_for(coro, timeout))  # type: ignore[arg-type]


async def refused_ws(hub: Hub, key: str) -> None:
    with contextlib.suppress(InvalidStatus, OSError, Exception):
        async with connect(url(hub, key), ping_interval=None) as ws:
            await asyncio.wait_for(ws.wait_closed(), 5)


async def wrong_password(hub: Hub) -> None:
    real = hub.creds["victim"]
    hub.creds["victim-bad"] = Creds(real.key, "not-the-password")
    try:
        with contextlib.suppress(Exception):
            sat = await asyncio.wait_for(satellite(hub, "victim-bad"), 5)
            await sat.close()
    finally:
        del hub.creds["victim-bad"]


# ---- item 17: the database files ----------------------------------------------------


def test_clients_db_wal_and_shm_are_0600_in_a_0700_folder(tmp_path: Path) -> None:
    with hub_with_http(tmp_path, verbose=False) as (hub, _):

        async def scenario() -> None:
            sat = await satellite(hub, "sat")
            await sat.close()

        run(scenario())
        folder = tmp_path / "data" / "hivemind-core"
        files = sorted(folder.glob("clients.db*"))
        assert any(f.name == "clients.db-wal" for f in files), files
        modes = {f.name: oct(stat.S_IMODE(f.stat().st_mode)) for f in files}
        assert all(m == "0o600" for m in modes.values()), f"database files not 0600: {modes}"
        dmode = oct(stat.S_IMODE(folder.stat().st_mode))
        assert dmode == "0o700", f"database folder is {dmode}, not 0700"


# ---- item 18: no secret in the -v log -----------------------------------------------


def test_0_secrets_in_the_verbose_log_over_websocket_and_http(tmp_path: Path) -> None:
    with hub_with_http(tmp_path, verbose=True) as (hub, http_port):
        good, victim = hub.creds["sat"], hub.creds["victim"]

        async def scenario() -> None:
            sat = await satellite(hub, "sat")
            await sat.emit(utterance("log check"))
            await eventually(lambda: "log check" in sat.speaks(), 5)
            await sat.close()
            await refused_ws(hub, "no-such-key-" + uuid.uuid4().hex)
            await wrong_password(hub)

        run(scenario())
        assert http_post(http_port, "/connect", token(victim.key)) == 200
        assert http_post(http_port, "/disconnect", token(victim.key)) == 200
        assert http_post(http_port, "/connect", token("bad-" + victim.key)) == 401
        wait_until(lambda: "refused" in hub.log(), timeout=5, what="the refusals to be logged")
        log = hub.log()
        assert "DEBUG" in log, "the hub's log is not verbose"
        secrets = {
            "sat key": good.key,
            "sat password": good.password,
            "victim key": victim.key,
            "victim password": victim.password,
            "sat token": token(good.key),
            "victim token": token(victim.key),
            "bad token": token("bad-" + victim.key),
        }
        hits = {name: log.count(value) for name, value in secrets.items() if value in log}
        assert hits == {}, f"secrets in the -v log: {hits}"


# ---- item 20: listen says what it does ----------------------------------------------


def test_listen_without_v_logs_1_start_line_1_per_connect_leave_and_refusal(
    tmp_path: Path,
) -> None:
    with hub_with_http(tmp_path, verbose=False) as (hub, _):
        wait_until(lambda: "listening" in hub.log(), timeout=10, what="the start line")

        async def scenario() -> None:
            sat = await satellite(hub, "sat")
            await sat.close()
            await refused_ws(hub, "no-such-key-" + uuid.uuid4().hex)

        run(scenario())
        wait_until(
            lambda: "left" in hub.log() and "refused" in hub.log(),
            timeout=5,
            what="the leave and refusal lines",
        )
        lines = [ln for ln in hub.log().splitlines() if ln.startswith("INFO")]
        start = [ln for ln in lines if "listening" in ln]
        assert len(start) == 1, lines
        for part in ("127.0.0.1", f"ws:{hub.port}", "http:", "embedded", "sqlite", "protocol"):
            assert part in start[0], f"{part!r} missing from the start line {start[0]!r}"
        assert len([ln for ln in lines if "connected" in ln and "satellite" in ln]) == 1, lines
        assert len([ln for ln in lines if "satellite" in ln and "left" in ln]) == 1, lines
        refusals = [ln for ln in lines if "refused" in ln]
        assert len(refusals) == 1 and "invalid access key" in refusals[0], lines
        assert not [ln for ln in hub.log().splitlines() if ln.startswith("DEBUG")]


# ---- item 16: the throttle keys by address and key; trusted proxies -------------------


async def attempt(hub: Hub, key: str, forwarded: str | None = None) -> str:
    """One websocket login with ``key``: ``"429"``, ``"open"``, or the close code."""
    headers = {"X-Forwarded-For": forwarded} if forwarded else None
    try:
        async with connect(url(hub, key), ping_interval=None, additional_headers=headers) as ws:
            try:
                await asyncio.wait_for(ws.recv(), 2)
            except TimeoutError:
                return "open"
            except ConnectionClosed:
                return str(ws.close_code)
            return "open"
    except InvalidStatus as exc:
        return str(exc.response.status_code)


def test_11_wrong_guesses_from_one_address_leave_a_right_key_from_it_1_login(
    tmp_path: Path,
) -> None:
    with hub_with_http(tmp_path, verbose=False) as (hub, _):

        async def scenario() -> None:
            for _ in range(11):
                await attempt(hub, "guess-" + uuid.uuid4().hex)
            assert await attempt(hub, "guess-" + uuid.uuid4().hex) == "429", "key guesser"
            for _ in range(11):
                await wrong_password(hub)
            assert await attempt(hub, hub.creds["victim"].key) == "429", "password guesser"
            sat = await asyncio.wait_for(satellite(hub, "sat"), 10)  # the right key, same address
            await sat.close()

        run(scenario())


def test_x_forwarded_for_is_honoured_only_from_1_trusted_proxy_cidr(tmp_path: Path) -> None:
    config = {"trusted_proxies": ["127.0.0.0/8"]}
    with hub_with_http(tmp_path, verbose=False, config=config) as (hub, _):

        async def scenario() -> None:
            for _ in range(11):
                await attempt(hub, "guess-" + uuid.uuid4().hex, "10.0.0.1")
            assert await attempt(hub, "guess-" + uuid.uuid4().hex, "10.0.0.1") == "429"
            other = await attempt(hub, "guess-" + uuid.uuid4().hex, "10.0.0.2")
            assert other == "1008", f"another client behind the proxy got {other}"

        run(scenario())

    with hub_with_http(tmp_path / "untrusted", verbose=False) as (hub, _):

        async def spoofed() -> None:
            for i in range(11):
                await attempt(hub, "guess-" + uuid.uuid4().hex, f"10.0.1.{i}")
            got = await attempt(hub, "guess-" + uuid.uuid4().hex, "10.0.2.1")
            assert got == "429", f"a spoofed X-Forwarded-For from an untrusted peer got {got}"

        run(spoofed())


# ---- items 6 and 8, hub part: dropped frames and pre-handshake faults are counted ----


def test_a_replayed_frame_counts_1_replays_dropped_and_a_pre_handshake_fault_1_failure() -> None:
    from hub.hubkit import TestClient, auth_path
    from hub.hubkit import running_hub as inprocess_hub

    async def scenario() -> None:
        async with inprocess_hub() as hub:
            row = hub.db.add_client("sat", password="pw")
            sat = await TestClient(hub.port, row.api_key, "pw").connect()
            sat.conn.send(utterance("replay me"))
            frames = sat.conn.frames_to_send()
            for _ in range(2):
                await sat.send_raw(frames[-1])
            stats = hub.server.stats
            assert await eventually(lambda: stats.get("replays_dropped", 0) == 1), dict(stats)
            await sat.close()
            before = stats.get("auth_failures", 0)
            async with connect(f"ws://127.0.0.1:{hub.port}{auth_path(row.api_key)}") as ws:
                await ws.send("{not json")
                with contextlib.suppress(ConnectionClosed):
                    while True:
                        await asyncio.wait_for(ws.recv(), 5)
            assert await eventually(lambda: stats.get("auth_failures", 0) == before + 1), dict(
                stats
            )
            assert stats.get("pre_handshake_closes") == 1, dict(stats)

    run(scenario())


# ---- item 14: no body read before authentication -----------------------------------


def post_unread(port: int, size: int) -> bytes:
    """POST a ``size``-byte body with no credentials; the hub's answer (the body may go unsent)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        head = (
            f"POST /send_message HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n\r\n"
        )
        sock.sendall(head.encode())
        chunk = b"message=" + b"a" * (MiB - 8)
        sent = 0
        with contextlib.suppress(OSError):
            while sent < size:
                piece = chunk[: min(len(chunk), size - sent)]
                sock.sendall(piece)
                sent += len(piece)
        with contextlib.suppress(OSError):
            return sock.recv(4096)
        return b""


def test_20_unauthenticated_40_mb_posts_raise_hub_rss_by_under_64_mib(tmp_path: Path) -> None:
    with hub_with_http(tmp_path, verbose=False) as (hub, http_port):
        for _ in range(11):
            http_post(http_port, "/connect", token("guess-" + uuid.uuid4().hex))
        assert http_post(http_port, "/connect", token("guess-x")) == 429, "not throttled"
        before = hub.peak_rss()
        answers = [post_unread(http_port, 40 * MiB) for _ in range(20)]
        growth = hub.peak_rss() - before
        assert growth < 64 * MiB, f"hub RSS grew by {growth / MiB:.0f} MiB"
        assert all(a.startswith(b"HTTP/1.1 429") for a in answers), answers[:2]


# ---- item 15: an HTTP link is bound to its opener, not to the access key ---------------


def http_get(port: int, path: str, auth: str) -> tuple[int, dict[str, object]]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}?authorization={auth}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_key_alone_cannot_drain_disconnect_or_take_over_a_live_http_link(tmp_path: Path) -> None:
    from ovos_bus_client.message import Message

    from hivemind_bus_client.http_client import HiveMindHTTPClient
    from hivemind_bus_client.identity import NodeIdentity

    with hub_with_http(tmp_path, verbose=False) as (hub, http_port):
        sat = hub.creds["sat"]
        client = HiveMindHTTPClient(
            key=sat.key,
            password=sat.password,
            host="http://127.0.0.1",
            port=http_port,
            identity=NodeIdentity({}),
            site_id="kitchen",
        )
        client.connect()
        stolen: list[object] = []
        statuses: set[int] = set()
        stop = threading.Event()
        attacker = token(sat.key, "attacker")

        def drain() -> None:  # the attacker polls as fast as it can
            while not stop.is_set():
                for path in ("/get_messages", "/get_binary_messages"):
                    status, data = http_get(http_port, path, attacker)
                    statuses.add(status)
                    stolen.extend(data.get("messages") or [])  # type: ignore[arg-type]
                    stolen.extend(data.get("b64_messages") or [])  # type: ignore[arg-type]

        thief = threading.Thread(target=drain, daemon=True)
        thief.start()
        try:
            for n in range(5):
                ask = Message("recognizer_loop:utterance", {"utterances": [f"echo honest {n}"]})
                answer = client.wait_for_response(ask, reply_type="speak", timeout=10)
                assert answer is not None, f"the honest client lost answer {n}"
                assert answer.payload.data["utterance"] == f"honest {n}"
            stop.set()
            thief.join(15)
            assert stolen == [], "the attacker drained frames of the live link"
            assert statuses == {403}, statuses
            # neither /disconnect, /send_message nor /connect touch the live link
            assert http_post(http_port, "/disconnect", attacker) == 403
            assert http_post(http_port, "/send_message", attacker, b"message=garbage") == 403
            assert http_post(http_port, "/connect", attacker) == 409
            ask = Message("recognizer_loop:utterance", {"utterances": ["echo still mine"]})
            answer = client.wait_for_response(ask, reply_type="speak", timeout=10)
            assert answer is not None and answer.payload.data["utterance"] == "still mine"
        finally:
            stop.set()
            client.close()
        # once the honest client disconnected, the key may open a link again
        assert http_post(http_port, "/connect", attacker) == 200


@pytest.mark.xfail(
    reason="fails the same way without link secrets: the stock 0.4.4 HTTP client handles "
    "every hub frame twice (its _handle_hive_protocol calls protocol.handle_* and then the "
    "same handlers the protocol registered with hm.on), so it answers each HANDSHAKE twice "
    "with different IVs and ends keyed differently from the hub (1008)",
    strict=False,
)
def test_stock_reference_http_client_keeps_working(tmp_path: Path) -> None:
    try:
        refpython = harness.ref_python()
    except RuntimeError as exc:
        pytest.skip(f"no reference venv: {exc}")
    script = Path(__file__).parents[1] / "interop" / "_refhttp.py"
    with hub_with_http(tmp_path, verbose=False) as (hub, http_port):
        sat = hub.creds["sat"]
        argv = [str(refpython), str(script), "127.0.0.1", str(http_port), sat.key, sat.password]
        proc = subprocess.run([*argv, "3"], capture_output=True, text=True, timeout=90, check=False)
        lines = proc.stdout.strip().splitlines()
        assert lines, proc.stderr[-3000:]
        result = json.loads(lines[-1])
        assert result["error"] is None, (result, proc.stderr[-3000:], hub.log()[-3000:])
        assert result["answers"] == ["reference 0", "reference 1", "reference 2"]
