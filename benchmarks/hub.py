"""Hub benchmark: handshake time, utterance round trip, pipelined throughput, memory per idle link.

Runs against our hub (a subprocess started here, embedded agent or OVOS agent)
or the reference hub 4.0.0 (started through ``tests/interop/harness.py``, with
a real ovos-messagebus and the echo responder), plus a bare websocket echo
server as the floor (and, when a bus runs, the bus's own utterance -> speak
round trip, the floor of the OVOS-backed rows). The load generator is one
asyncio process speaking our sans-I/O client ``Connection`` over
``websockets``; its own cost is part of every figure, identically for every
target.

    python benchmarks/hub.py                      # ours (embedded agent) + echo baseline
    python benchmarks/hub.py --target reference   # the reference hub (builds its venv once)
    python benchmarks/hub.py --target ours-ovos   # ours, answering through ovos-messagebus
    python benchmarks/hub.py --target all --idle 1000 --rtt 500 --pipeline 2000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

from hivemind_bus_client import crypto  # noqa: E402
from hivemind_bus_client.connection import (  # noqa: E402
    CloseRequested,
    Connection,
    HandshakeComplete,
    MessageReceived,
    Role,
)
from hivemind_bus_client.message import HiveMessage, HiveMessageType  # noqa: E402
from interop import harness  # noqa: E402

BUS = HiveMessageType.BUS
HOST = "127.0.0.1"
UTTERANCE = {
    "type": "recognizer_loop:utterance",
    "data": {"utterances": ["echo hello hive"], "lang": "en-US"},
    "context": {"destination": "skills"},
}
CLIENT_KEY = crypto.create_private_key()


# --------------------------------------------------------------------------- client


class BenchClient:
    """One satellite: our client connection over a websockets socket."""

    def __init__(self, port: int, key: str, password: str | None, session: str) -> None:
        import base64

        token = base64.b64encode(f"hub-bench:{key}".encode()).decode()
        self.url = f"ws://{HOST}:{port}/?authorization={token}"
        self.conn = Connection(
            Role.CLIENT,
            password=password,
            private_key=None if password else CLIENT_KEY,
            hello={"session": {"session_id": session, "site_id": "bench"}, "site_id": "bench"},
        )
        self.ready = asyncio.Event()
        self.answers = 0
        self.waiter: asyncio.Future[None] | None = None
        self.target = 0
        self.ws: Any = None
        self.task: asyncio.Task[None] | None = None
        self.error: str | None = None
        # Stock clients put their session in every message (the reference hub
        # kicks a non-admin whose message carries no session, i.e. "default").
        msg = dict(UTTERANCE)
        msg["context"] = {
            **UTTERANCE["context"],
            "session": {"session_id": session, "site_id": "bench"},
        }
        self.message = msg

    async def start(self, timeout: float = 60) -> float:
        t0 = time.perf_counter()
        self.ws = await connect(self.url, compression=None, max_size=None, open_timeout=timeout)
        self.conn.start(0.0)
        self.task = asyncio.get_running_loop().create_task(self._read())
        await asyncio.wait_for(self.ready.wait(), timeout)
        return time.perf_counter() - t0

    async def _read(self) -> None:
        conn, ws = self.conn, self.ws
        try:
            for frame in conn.frames_to_send():
                await ws.send(frame)
            async for frame in ws:
                conn.receive_frame(frame)
                for ev in conn.events():
                    if type(ev) is MessageReceived:
                        msg = ev.message
                        if msg.msg_type is BUS and msg.payload_dict().get("type") == "speak":
                            self.answers += 1
                            w = self.waiter
                            if w is not None and self.answers >= self.target and not w.done():
                                w.set_result(None)
                    elif type(ev) is HandshakeComplete:
                        self.ready.set()
                    elif type(ev) is CloseRequested:
                        self.error = f"{ev.code} {ev.reason}"
                for out in conn.frames_to_send():
                    await ws.send(out)
        except Exception as exc:  # benchmark: report, do not crash
            self.error = self.error or repr(exc)

    def frame(self) -> str | bytes:
        return self.conn.encode(HiveMessage(BUS, self.message))

    async def wait_answers(self, n: int, timeout: float = 120) -> None:
        self.target = n
        if self.answers >= n:
            return
        self.waiter = asyncio.get_running_loop().create_future()
        await asyncio.wait_for(self.waiter, timeout)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        if self.task:
            self.task.cancel()


# --------------------------------------------------------------------------- targets


@dataclass
class Target:
    name: str
    port: int
    pid: int
    bench_key: str
    bench_password: str
    idle_key: str
    #: Further clients ``our_hub(extra=...)`` registered: name -> (key, password).
    extra: dict[str, tuple[str, str]] = field(default_factory=dict)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


_OUR_HUB = """
import json, logging, sys
logging.basicConfig(level=logging.WARNING)
from hivemind_core.config import HubConfig
from hivemind_core.service import run
run(HubConfig.from_dict(json.loads(sys.argv[1])))
"""


#: Hub settings lifted for the capacity figures (see ``our_hub``).
CAPACITY_SETTINGS = {
    "agent_rate": 0,
    "propagate_rate": 0,
    "max_connections_per_address": 0,
}


@contextlib.contextmanager
def our_hub(
    workdir: Path, agent: str = "embedded", bus: Any = None, extra: tuple[str, ...] = ()
) -> Iterator[Target]:
    from hivemind_core.config import HubConfig
    from hivemind_core.database import open_database

    port = harness.free_port()
    cfg = HubConfig(host=HOST, port=port, db_path=str(workdir / "clients.db"), agent=agent)
    cfg.handshake_timeout = 120.0
    # The benchmark measures the hub's capacity from one address: the
    # per-satellite rate limits and the per-address connection cap, which
    # stop a hostile satellite, are lifted (0 turns a limit off).
    for name, value in CAPACITY_SETTINGS.items():
        if hasattr(cfg, name):
            setattr(cfg, name, value)
    if bus is not None:
        cfg.ovos_host, cfg.ovos_port, cfg.ovos_route = bus.host, bus.port, bus.route
    db = open_database(cfg, backend="sqlite", path=cfg.db_path)
    bench = db.add_client("bench", password="bench-password")
    idle = db.add_client("idle", password="")
    others = {}
    for name in extra:
        password = f"{name}-password"
        others[name] = (db.add_client(name, password=password).api_key, password)
    db.close()
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    log = (workdir / "hub.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-c", _OUR_HUB, json.dumps(cfg.to_dict())],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        harness.wait_until(lambda: harness.port_open(HOST, port), timeout=30, what="our hub")
        yield Target(
            f"ours ({agent})", port, proc.pid, bench.api_key, "bench-password", idle.api_key, others
        )
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@contextlib.contextmanager
def reference_hub(workdir: Path, bus: Any, refpython: Path) -> Iterator[Target]:
    bench = harness.make_client("bench")
    idle = harness.make_client("idle", password=False)
    with harness.reference_hub(refpython, bus, workdir / "ref", clients=[bench, idle]) as hub:
        yield Target(
            "reference 4.0.0",
            hub.port,
            hub.proc.pid,
            bench.access_key,
            bench.password or "",
            idle.access_key,
        )


_ECHO = """
import asyncio, sys
from websockets.asyncio.server import serve
async def echo(ws):
    async for m in ws:
        await ws.send(m)
async def main():
    async with serve(echo, "127.0.0.1", int(sys.argv[1]), compression=None, max_size=None):
        await asyncio.Future()
asyncio.run(main())
"""


async def echo_baseline(n: int) -> dict[str, Any]:
    port = harness.free_port()
    proc = subprocess.Popen([sys.executable, "-c", _ECHO, str(port)])
    try:
        harness.wait_until(lambda: harness.port_open(HOST, port), timeout=20, what="echo server")
        # A frame the size of an encrypted utterance.
        payload = json.dumps({"ciphertext": "x" * 600, "tag": "y" * 24, "nonce": "z" * 24})
        async with connect(f"ws://{HOST}:{port}/", compression=None) as ws:
            rtts = []
            for _ in range(n):
                t0 = time.perf_counter()
                await ws.send(payload)
                await ws.recv()
                rtts.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            for _ in range(n):
                await ws.send(payload)
            for _ in range(n):
                await ws.recv()
            tput = n / (time.perf_counter() - t0)
        return {"rtt": rtts, "throughput_1": tput}
    finally:
        proc.terminate()
        proc.wait(10)


async def bus_baseline(bus: Any, n: int) -> dict[str, Any]:
    """Utterance -> speak straight on the OVOS bus, no hub: the floor of every OVOS-backed row."""
    msg = json.dumps({**UTTERANCE, "context": {"source": "bench", "destination": "skills"}})
    async with connect(f"ws://{bus.host}:{bus.port}{bus.route}", compression=None) as ws:
        rtts = []
        for _ in range(n):
            t0 = time.perf_counter()
            await ws.send(msg)
            while json.loads(await ws.recv()).get("type") != "speak":
                pass
            rtts.append(time.perf_counter() - t0)
    return {"rtt": rtts}


# --------------------------------------------------------------------------- measurements


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


async def pipelined(sats: list[BenchClient], per: int, timeout: float) -> tuple[float, str]:
    """Each satellite sends ``per`` utterances back to back; answers per second.

    A hub that loses answers still gets a figure: the answers that did arrive
    over the time spent waiting for them, with a note saying how many.
    """
    bases = [s.answers for s in sats]

    async def blast(s: BenchClient, base: int) -> None:
        for _ in range(per):
            await s.ws.send(s.frame())
        await s.wait_answers(base + per, timeout=timeout)

    t0 = time.perf_counter()
    results = await asyncio.gather(
        *(blast(s, b) for s, b in zip(sats, bases, strict=True)), return_exceptions=True
    )
    elapsed = time.perf_counter() - t0
    got = sum(s.answers - b for s, b in zip(sats, bases, strict=True))
    if got == per * len(sats):
        return got / elapsed, ""
    errors = ", ".join(sorted({repr(r) for r in results if isinstance(r, BaseException)}))
    return got / elapsed, f"{got} of {per * len(sats)} answered in {elapsed:.0f} s ({errors})"


async def measure(target: Target, args: argparse.Namespace) -> dict[str, Any]:
    """Every figure for one target; a phase that fails is reported, not fatal."""
    out: dict[str, Any] = {
        "name": target.name,
        "handshake_pw": [],
        "handshake_rsa": [],
        "rtt": [],
        "throughput_1": float("nan"),
        "throughput_50": float("nan"),
    }
    try:
        await _measure(target, args, out)
    except Exception as exc:
        out["error"] = repr(exc)
        print(f"{target.name}: stopped early: {exc!r}", file=sys.stderr)
    return out


async def _measure(target: Target, args: argparse.Namespace, out: dict[str, Any]) -> None:
    # Handshake time (password, then RSA).
    for label, key, pw in (
        ("pw", target.bench_key, target.bench_password),
        ("rsa", target.idle_key, None),
    ):
        times = []
        for i in range(args.handshakes):
            c = BenchClient(target.port, key, pw, f"hs-{label}-{i}")
            try:
                times.append(await c.start())
            except Exception as exc:
                out[f"handshake_{label}_error"] = repr(exc)
                break
            finally:
                await c.close()
        out[f"handshake_{label}"] = times
    # Round trip.
    c = BenchClient(target.port, target.bench_key, target.bench_password, "rtt")
    await c.start()
    for _ in range(5):  # warm-up
        await c.ws.send(c.frame())
        await c.wait_answers(c.answers + 1, timeout=20)
    rtts = []
    for _ in range(args.rtt):
        n = c.answers + 1
        t0 = time.perf_counter()
        await c.ws.send(c.frame())
        await c.wait_answers(n, timeout=20)
        rtts.append(time.perf_counter() - t0)
    out["rtt"] = rtts
    # Pipelined, 1 satellite, then many.
    out["throughput_1"], note = await pipelined([c], args.pipeline, args.timeout)
    if note:
        out["throughput_1_note"] = note
    await c.close()
    sats = [
        BenchClient(target.port, target.bench_key, target.bench_password, f"sat-{i}")
        for i in range(args.satellites)
    ]
    try:
        await asyncio.gather(*(s.start(timeout=args.timeout) for s in sats))
    except Exception as exc:
        raise RuntimeError(f"connecting {len(sats)} satellites: {exc!r}") from exc
    per = max(1, args.pipeline // len(sats))
    out["throughput_50"], note = await pipelined(sats, per, args.timeout)
    if note:
        out["throughput_50_note"] = note
    await asyncio.gather(*(s.close() for s in sats))
    # Memory per idle connection.
    if args.idle:
        await asyncio.sleep(1.0)
        before = rss_kib(target.pid)
        idle: list[BenchClient] = []
        for start in range(0, args.idle, 100):
            batch = [
                BenchClient(target.port, target.idle_key, None, f"idle-{i}")
                for i in range(start, min(args.idle, start + 100))
            ]
            await asyncio.gather(*(b.start(timeout=args.timeout) for b in batch))
            idle.extend(batch)
        await asyncio.sleep(2.0)
        after = rss_kib(target.pid)
        out["idle_n"] = len(idle)
        out["rss_per_conn_kib"] = (after - before) / max(1, len(idle))
        out["rss_total_mib"] = after / 1024
        await asyncio.gather(*(b.close() for b in idle))


def ms(v: float) -> str:
    return f"{v * 1000:.2f}"


def table(
    rows: list[dict[str, Any]], echo: dict[str, Any] | None, bus: dict[str, Any] | None = None
) -> str:
    head = (
        f"{'target':<22} {'hs pw p50':>10} {'hs rsa p50':>11} {'rtt p50':>8} {'rtt p99':>8} "
        f"{'msg/s x1':>9} {'msg/s x50':>10} {'KiB/idle':>9}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['name']:<22} {ms(pct(r['handshake_pw'], 50)):>10} {ms(pct(r['handshake_rsa'], 50)):>11} "
            f"{ms(pct(r['rtt'], 50)):>8} {ms(pct(r['rtt'], 99)):>8} {r['throughput_1']:>9.0f} "
            f"{r['throughput_50']:>10.0f} {r.get('rss_per_conn_kib', float('nan')):>9.1f}"
        )
    if echo:
        lines.append(
            f"{'bare websocket echo':<22} {'':>10} {'':>11} {ms(pct(echo['rtt'], 50)):>8} "
            f"{ms(pct(echo['rtt'], 99)):>8} {echo['throughput_1']:>9.0f} {'':>10} {'':>9}"
        )
    if bus:
        lines.append(
            f"{'bare OVOS bus + reply':<22} {'':>10} {'':>11} {ms(pct(bus['rtt'], 50)):>8} "
            f"{ms(pct(bus['rtt'], 99)):>8}"
        )
    for r in rows:
        for n in ("1", "50"):
            if r.get(f"throughput_{n}_note"):
                lines.append(
                    f"{r['name']}: msg/s x{n} from partial answers: {r[f'throughput_{n}_note']}"
                )
        if r.get("error"):
            lines.append(f"{r['name']}: stopped early: {r['error']}")
    lines.append("times in ms; rtt = utterance sent -> speak answer received by the satellite")
    return "\n".join(lines)


async def amain(args: argparse.Namespace) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, args.idle * 2 + 512))
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    targets = ["ours", "ours-ovos", "reference"] if args.target == "all" else [args.target]
    rows = []
    with tempfile.TemporaryDirectory(prefix="hub-bench-") as tmp, contextlib.ExitStack() as stack:
        bus = None
        refpython = None
        if any(t in ("ours-ovos", "reference") for t in targets):
            refpython = harness.ref_python(log=sys.stderr)
            bus = stack.enter_context(harness.ovos_bus(refpython, Path(tmp) / "bus"))
        for name in targets:
            work = Path(tmp) / name
            work.mkdir()
            if name == "ours":
                cm = our_hub(work)
            elif name == "ours-ovos":
                cm = our_hub(work, "ovos", bus)
            elif name == "reference":
                cm = reference_hub(work, bus, refpython)  # type: ignore[arg-type]
            else:
                print(f"unknown target {name}", file=sys.stderr)
                return 2
            with cm as target:
                print(f"benchmarking {target.name} on port {target.port} ...", file=sys.stderr)
                rows.append(await measure(target, args))
        bus_floor = await bus_baseline(bus, min(args.rtt, 100)) if bus is not None else None
        echo = await echo_baseline(args.rtt) if args.echo else None
    print(table(rows, echo, bus_floor))
    if args.json:
        Path(args.json).write_text(
            json.dumps({"rows": rows, "echo": echo, "bus": bus_floor}, default=str)
        )
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="ours", choices=["ours", "ours-ovos", "reference", "all"])
    ap.add_argument("--handshakes", type=int, default=10)
    ap.add_argument("--rtt", type=int, default=300)
    ap.add_argument("--pipeline", type=int, default=2000)
    ap.add_argument("--satellites", type=int, default=50)
    ap.add_argument(
        "--idle", type=int, default=1000, help="idle satellites for the memory figure (0 = skip)"
    )
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--no-echo", dest="echo", action="store_false")
    ap.add_argument("--json", help="also write raw figures to this file")
    return asyncio.run(amain(ap.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
