"""An honest satellite's figures while hostile peers attack the hub, next to the quiet ones.

Starts our hub (``benchmarks/hub.py``'s ``our_hub``: embedded agent, sqlite
database, the per-satellite rate limits lifted so the honest satellite's
throughput is the hub's, not a limit's) and measures one honest satellite:
the time to connect (password handshake), the utterance round trip (p50,
p99) and pipelined utterances a second. It does so with the hub quiet, then
while each attack runs in a process of its own, then with all of them at once:

* ``replay``: 10 sockets replay the honest client's captured password
  HANDSHAKE (its own access key, no password needed), as fast as the hub
  lets them;
* ``bomb``: a keyed satellite sends zlib-compressed PROPAGATEs that inflate
  to 12 MiB (about 12 KB on the wire each), reconnecting after every refusal;
* ``slow``: a keyed satellite pipelines utterances asking for 64 KB answers
  and never reads its socket, reconnecting whenever the hub closes it.

Each row also gives what the attack achieved (frames a second sent, links it
got, reconnections the hub refused) and the hub's peak resident memory so far.

    python benchmarks/attacks.py                    # quiet, each attack, all at once
    python benchmarks/attacks.py --rtt 500 --seconds 8
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from ovos_bus_client.message import Message  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402

from hivemind_bus_client.connection import (  # noqa: E402
    CloseRequested,
    Connection,
    HandshakeComplete,
    Role,
)
from hivemind_bus_client.message import HiveMessage, HiveMessageType  # noqa: E402
from hivemind_bus_client.serialization import encode_frame  # noqa: E402
from hub import HOST, BenchClient, Target, our_hub, pct  # noqa: E402

ATTACKS = ("replay", "bomb", "slow")
MiB = 1024 * 1024


def _url(port: int, key: str, useragent: str) -> str:
    token = base64.b64encode(f"{useragent}:{key}".encode()).decode("ascii")
    return f"ws://{HOST}:{port}/?authorization={token}"


async def keyed(port: int, key: str, password: str, useragent: str) -> tuple[Any, Connection]:
    """A websocket and the client end of a password-keyed link over it."""
    ws = await connect(_url(port, key, useragent), max_size=None, ping_interval=None)
    conn = Connection(
        Role.CLIENT,
        password=password,
        hello={"session": {"session_id": f"{useragent}-{os.getpid()}"}, "site_id": "attack"},
    )
    conn.start(time.monotonic())
    for frame in conn.frames_to_send():
        await ws.send(frame)
    while True:
        conn.receive_frame(await asyncio.wait_for(ws.recv(), 30))
        done = False
        for event in conn.events():
            if isinstance(event, HandshakeComplete):
                done = True
            elif isinstance(event, CloseRequested):
                raise RuntimeError(f"refused: {event.code} {event.reason}")
        for frame in conn.frames_to_send():
            await ws.send(frame)
        if done:
            return ws, conn


async def capture_handshake(port: int, key: str, password: str) -> str:
    """The first HANDSHAKE frame of an honest opening: what a sniffer on the path saw."""
    ws = await connect(_url(port, key, "capture"), max_size=None, ping_interval=None)
    conn = Connection(Role.CLIENT, password=password)
    conn.start(time.monotonic())
    shake = None
    try:
        while shake is None:
            conn.receive_frame(await asyncio.wait_for(ws.recv(), 30))
            conn.events()
            for frame in conn.frames_to_send():
                if isinstance(frame, str) and json.loads(frame).get("msg_type") == "shake":
                    shake = frame
                await ws.send(frame)
    finally:
        await ws.close()
    return shake


# --------------------------------------------------------------------------- attackers


class Tally:
    """What one attacker process did; printed as one JSON line when it is stopped."""

    def __init__(self) -> None:
        self.sent = 0
        #: Links opened: each one after the first means the hub closed the one before.
        self.links = 0
        self.errors = 0
        self.last_error = ""
        self.start = time.monotonic()

    def report(self) -> str:
        took = time.monotonic() - self.start
        return json.dumps(
            {
                "sent": self.sent,
                "per_s": self.sent / took,
                "links": self.links,
                "errors": self.errors,
                "last_error": self.last_error,
            }
        )


async def replay(args: argparse.Namespace, tally: Tally) -> None:
    shake = Path(args.frame).read_text()
    url = _url(args.port, args.key, "replayer")

    async def one() -> None:
        while True:
            try:
                async with connect(url, ping_interval=None, max_size=None) as ws:
                    tally.links += 1
                    while True:
                        await ws.send(shake)
                        tally.sent += 1
                        await asyncio.sleep(0)
            except Exception:
                await asyncio.sleep(0.001)

    await asyncio.gather(*(one() for _ in range(10)))


def _bomb(inflated: int) -> bytes:
    inner = HiveMessage(HiveMessageType.BUS, Message("speak", {"utterance": "a" * inflated}, {}))
    return encode_frame(HiveMessage(HiveMessageType.PROPAGATE, inner), compressed=True)


async def bomb(args: argparse.Namespace, tally: Tally) -> None:
    plain = _bomb(12 * MiB)
    while True:
        try:
            ws, conn = await keyed(args.port, args.key, args.password, "bomber")
            tally.links += 1
            cipher = conn.cipher
            assert cipher is not None
            with contextlib.suppress(Exception):
                while True:
                    await ws.send(cipher.seal_bytes(plain))
                    tally.sent += 1
                    await asyncio.sleep(0)
        except Exception as exc:
            tally.errors += 1
            tally.last_error = repr(exc)[:120]
            await asyncio.sleep(0.05)


async def slow(args: argparse.Namespace, tally: Tally) -> None:
    ask = HiveMessage(
        HiveMessageType.BUS,
        Message(
            "recognizer_loop:utterance",
            {"utterances": ["echo " + "x" * 64_000]},
            {"session": {"session_id": f"slow-{os.getpid()}"}},
        ),
    )
    while True:
        try:
            ws, conn = await keyed(args.port, args.key, args.password, "slow-reader")
            tally.links += 1
            with contextlib.suppress(Exception):
                while True:  # never reads: websockets stops reading once its queue is full
                    await ws.send(conn.encode(ask))
                    tally.sent += 1
                    await asyncio.sleep(0.001)
        except Exception as exc:
            tally.errors += 1
            tally.last_error = repr(exc)[:120]
            await asyncio.sleep(0.05)


def attacker_main(args: argparse.Namespace) -> int:
    tally = Tally()
    stop = asyncio.Event()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        task = loop.create_task(
            {"replay": replay, "bomb": bomb, "slow": slow}[args.attacker](args, tally)
        )
        await stop.wait()
        task.cancel()
        with contextlib.suppress(BaseException):
            await task

    asyncio.run(run())
    print(tally.report(), flush=True)
    return 0


# --------------------------------------------------------------------------- the honest side


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def honest(target: Target, args: argparse.Namespace) -> dict[str, Any]:
    """Connect times, round trips and pipelined answers of one honest satellite."""
    out: dict[str, Any] = {"connect": [], "rtt": [], "tput": float("nan")}
    for i in range(args.connects):
        c = BenchClient(target.port, target.bench_key, target.bench_password, f"honest-c{i}")
        try:
            out["connect"].append(await c.start(timeout=30))
        except Exception as exc:
            out["error"] = f"connect: {exc!r}"
        finally:
            await c.close()
    c = BenchClient(target.port, target.bench_key, target.bench_password, "honest")
    try:
        await c.start(timeout=30)
        for _ in range(args.rtt):
            n = c.answers + 1
            t0 = time.perf_counter()
            await c.ws.send(c.frame())
            await c.wait_answers(n, timeout=30)
            out["rtt"].append(time.perf_counter() - t0)
        base = c.answers
        t0 = time.perf_counter()
        for _ in range(args.pipeline):
            await c.ws.send(c.frame())
        await c.wait_answers(base + args.pipeline, timeout=120)
        out["tput"] = args.pipeline / (time.perf_counter() - t0)
    except Exception as exc:
        out["error"] = out.get("error") or repr(exc)
    finally:
        await c.close()
    return out


def spawn(kind: str, target: Target, frame_file: Path, workdir: Path) -> subprocess.Popen[str]:
    key, password = target.extra["attacker"]
    if kind == "replay":  # the honest client's own key: a sniffed opening
        key, password = target.bench_key, ""
    argv = [sys.executable, __file__, "--attacker", kind, "--port", str(target.port)]
    argv += ["--key", key, "--password", password, "--frame", str(frame_file)]
    err = (workdir / f"attacker-{kind}.log").open("w")
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True)


def stop(proc: subprocess.Popen[str]) -> dict[str, Any]:
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        return {"error": "did not stop"}
    lines = [line for line in out.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {"error": "no report"}


def ms(v: float) -> str:
    return f"{v * 1000:.2f}"


def row(name: str, fig: dict[str, Any], rss: float, attackers: dict[str, Any]) -> str:
    what = ", ".join(
        f"{k} {a.get('per_s', 0):.0f}/s on {a.get('links', 0)} links ({a.get('errors', 0)} refused)"
        for k, a in attackers.items()
    )
    line = (
        f"{name:<8} {ms(pct(fig['connect'], 50)):>10} {ms(max(fig['connect'] or [float('nan')])):>10} "
        f"{ms(pct(fig['rtt'], 50)):>8} {ms(pct(fig['rtt'], 99)):>8} {fig['tput']:>8.0f} {rss:>9.0f}  {what}"
    )
    if fig.get("error"):
        line += f"  [honest: {fig['error']}]"
    return line


async def amain(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="attack-bench-") as tmp:
        work = Path(tmp)
        with our_hub(work, extra=("attacker",)) as target:
            frame_file = work / "handshake.txt"
            frame_file.write_text(
                await capture_handshake(target.port, target.bench_key, target.bench_password)
            )
            head = (
                f"{'scenario':<8} {'conn p50':>10} {'conn max':>10} {'rtt p50':>8} {'rtt p99':>8} "
                f"{'msg/s':>8} {'peak MiB':>9}  attackers"
            )
            lines = [head, "-" * len(head)]
            await honest(target, args)  # warm-up, not reported
            scenarios = [("quiet", ())] + [(a, (a,)) for a in args.attacks]
            if len(args.attacks) > 1:
                scenarios.append(("all", tuple(args.attacks)))
            for name, kinds in scenarios:
                print(f"scenario {name} ...", file=sys.stderr)
                procs = {k: spawn(k, target, frame_file, work) for k in kinds}
                await asyncio.sleep(args.warmup if kinds else 0)
                fig = await honest(target, args)
                tallies = {k: stop(p) for k, p in procs.items()}
                lines.append(row(name, fig, peak_rss_mib(target.pid), tallies))
                await asyncio.sleep(1.0)  # let the hub settle between scenarios
    lines.append(
        "times in ms; conn = new honest satellite to keyed; rtt = utterance -> speak; "
        "msg/s = pipelined utterances answered; peak MiB = hub peak RSS so far"
    )
    print("\n".join(lines))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--attacks", nargs="*", default=list(ATTACKS), choices=ATTACKS)
    ap.add_argument("--connects", type=int, default=5, help="honest connections timed per scenario")
    ap.add_argument("--rtt", type=int, default=300, help="sequential round trips per scenario")
    ap.add_argument("--pipeline", type=int, default=1000, help="pipelined utterances per scenario")
    ap.add_argument(
        "--warmup", type=float, default=2.0, help="seconds an attack runs before measuring"
    )
    # The attacker side (this script re-run as a child process).
    ap.add_argument("--attacker", choices=ATTACKS, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--key", help=argparse.SUPPRESS)
    ap.add_argument("--password", help=argparse.SUPPRESS)
    ap.add_argument("--frame", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.attacker:
        return attacker_main(args)
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
