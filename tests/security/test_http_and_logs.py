"""The hub's files, logs and HTTP listener against a hostile or careless world, over real sockets.

Each test starts ``hivemind-core listen`` in a subprocess (with or without
``-v``, with the HTTP listener) and checks one figure, named in the test.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import stat
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from interop import harness
from support.net import free_port, wait_until

from .hub import CLI, Creds, Hub, eventually, satellite, url, utterance


@contextlib.contextmanager
def hub_with_http(tmp: Path, *, verbose: bool) -> Iterator[tuple[Hub, int]]:
    """Register ``sat`` and ``victim`` and run ``hivemind-core [-v] listen --http-port``."""
    env = harness.isolated_env(tmp)
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
