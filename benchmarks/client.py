"""Client latency against the reference hub: ours next to the stock client, same run.

Starts the reference stack once (ovos-messagebus + echo responder +
``hivemind-core listen`` 4.0.0, see ``tests/interop/harness.py``), then measures

* **connect**: from constructing the client to a completed handshake
  (socket, HELLO, HANDSHAKE, encrypted HELLO), ``--connects`` times;
* **round trip**: an utterance sent as BUS until its ``speak`` answer arrives
  through hub -> OVOS bus -> responder -> hub, ``--count`` times on one link;

for our ``HiveMessageBusClient`` (in this process) and for the stock
``HiveMessageBusClient`` 0.4.4 (in the reference venv, via
``tests/interop/_refclient.py``), and prints p50/p99 of each.

Usage: ``python benchmarks/client.py [--count 200] [--connects 10] [--json]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ovos_bus_client.message import Message

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from hivemind_bus_client.client import HiveMessageBusClient  # noqa: E402
from hivemind_bus_client.identity import NodeIdentity  # noqa: E402
from interop import harness  # noqa: E402


def pct(values: list[float], q: float) -> float | None:
    """The q-quantile (0..1) of ``values``, nearest-rank; ``None`` when empty."""
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))
    return ordered[index]


def summary(values: list[float]) -> dict[str, Any]:
    """n, p50, p99 and mean in milliseconds."""

    def ms(v: float | None) -> float | None:
        return round(v * 1000, 2) if v is not None else None

    return {
        "n": len(values),
        "p50_ms": ms(pct(values, 0.50)),
        "p99_ms": ms(pct(values, 0.99)),
        "mean_ms": ms(statistics.fmean(values)) if values else None,
    }


def ours(hub: harness.ReferenceHub, count: int, connects: int, workdir: Path) -> dict[str, Any]:
    """Connect and round-trip figures of our client."""
    creds = hub.client("sat")
    identity = NodeIdentity(workdir / "ours" / "_identity.json")

    def make() -> HiveMessageBusClient:
        return HiveMessageBusClient(
            key=creds.access_key,
            password=creds.password,
            host=hub.host,
            port=hub.port,
            identity=identity,
            site_id="bench",
        )

    connect_times = []
    for _ in range(connects):
        started = time.perf_counter()
        client = make()
        client.connect()
        connect_times.append(time.perf_counter() - started)
        client.close()
    rtts = []
    client = make()
    client.connect()
    try:
        for n in range(count):
            msg = Message("recognizer_loop:utterance", {"utterances": [f"bench {n}"]})
            started = time.perf_counter()
            reply = client.wait_for_response(msg, reply_type="speak", timeout=10)
            if reply is None:
                raise RuntimeError(f"no answer to utterance {n}")
            rtts.append(time.perf_counter() - started)
        negotiated = client.handshake_info
    finally:
        client.close()
    return {"connect": summary(connect_times), "roundtrip": summary(rtts), "negotiated": negotiated}


def reference(
    refpython: Path, hub: harness.ReferenceHub, count: int, connects: int, workdir: Path
) -> dict[str, Any]:
    """The same figures for the stock client (one process per connect)."""
    creds = hub.client("sat")
    connect_times = []
    rtts: list[float] = []
    for n in range(connects):
        report = harness.run_reference_client(
            refpython,
            hub.host,
            hub.port,
            creds.access_key,
            creds.password or "",
            site_id="bench",
            timeout=40,
            workdir=workdir / "ref",
            count=count if n == 0 else 1,
        )
        if not report.get("connected"):
            raise RuntimeError(f"stock client did not connect: {report.get('error')}")
        connect_times.append(report["connect_s"])
        if n == 0:
            rtts = list(report["rtts"])
    return {"connect": summary(connect_times), "roundtrip": summary(rtts), "negotiated": None}


def main() -> int:
    """Run the benchmark and print a table (or JSON)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=200, help="utterance round trips per client")
    ap.add_argument("--connects", type=int, default=10, help="connect+handshake samples")
    ap.add_argument("--no-reference", action="store_true", help="skip the stock client")
    ap.add_argument("--json", action="store_true", help="print JSON")
    args = ap.parse_args()

    refpython = harness.ref_python(log=sys.stderr)
    with (
        tempfile.TemporaryDirectory(prefix="hm-client-bench-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        work = Path(tmp)
        bus = stack.enter_context(harness.ovos_bus(refpython, work / "bus"))
        hub = stack.enter_context(harness.reference_hub(refpython, bus, work / "hub"))
        results = {"ours": ours(hub, args.count, args.connects, work)}
        if not args.no_reference:
            results["reference"] = reference(refpython, hub, args.count, args.connects, work)

    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"reference hub 4.0.0, {args.count} round trips, {args.connects} connects")
    print(f"{'client':<11}{'connect p50':>13}{'connect p99':>13}{'rtt p50':>10}{'rtt p99':>10}")
    for name, res in results.items():
        c, r = res["connect"], res["roundtrip"]
        print(
            f"{name:<11}{c['p50_ms']:>10} ms{c['p99_ms']:>10} ms"
            f"{r['p50_ms']:>7} ms{r['p99_ms']:>7} ms"
        )
    if results["ours"]["negotiated"]:
        print(f"ours negotiated: {results['ours']['negotiated']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
