"""Compare two git revisions with their own ``benchmarks/hub.py`` and ``benchmarks/codec.py``.

    python benchmarks/compare.py fdc8539 HEAD
    python benchmarks/compare.py --repeat 3 --quick fdc8539 HEAD
    python benchmarks/compare.py --only codec --codec-seconds 0.5 main h1-protocol

Each revision gets a clean checkout (``git archive``: tracked files only, so
uncommitted changes are not measured) and a venv with that checkout installed
in editable mode, which also builds its C accelerator in place. Both are cached
under ``$HIVEMIND_BENCH_CACHE`` or ``<user cache>/hivemind-bench/<commit>`` and
reused by later runs; delete the folder to rebuild. The checkout is an export,
not a ``git worktree``, so nothing is registered in the repository.

Every revision runs *its own* benchmark scripts with the same options, against
its own hub (``hub.py --target ours``, embedded agent). Runs are interleaved
(A, B, A, B, ...) so that load from other processes hits both alike; with
``--repeat N`` each figure is the median of N runs and the ``spread`` column
gives the largest (max - min) / median of the two, the run-to-run noise a
difference must exceed to mean something. The raw AES-GCM ceiling row measures
the machine, not the code: a ratio far from 1.00 there means the machine was
busier during one revision's runs.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import venv
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Short runs: a few seconds per revision and script.
QUICK_HUB = "--handshakes 5 --rtt 100 --pipeline 400 --satellites 10 --idle 0 --no-echo"
DEFAULT_HUB = "--handshakes 10 --rtt 300 --pipeline 2000 --satellites 50 --idle 200 --no-echo"


def cache_root() -> Path:
    """Where checkouts and venvs are kept."""
    env = os.environ.get("HIVEMIND_BENCH_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hivemind-bench"


def git(*args: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


@dataclass
class Revision:
    """One revision under test: its name on the command line, commit and cached venv."""

    name: str
    commit: str
    home: Path
    runs: list[dict[str, float]] = field(default_factory=list)
    notes: set[str] = field(default_factory=set)

    @property
    def label(self) -> str:
        short = self.commit[:9]
        return short if self.name.startswith(short[:7]) else f"{self.name} ({short})"

    @property
    def checkout(self) -> Path:
        return self.home / "checkout"

    @property
    def python(self) -> Path:
        return self.home / "venv" / "bin" / "python"


def prepare(name: str) -> Revision:
    """Resolve ``name`` and make sure its checkout and venv exist."""
    commit = git("rev-parse", "--verify", f"{name}^{{commit}}")
    rev = Revision(name, commit, cache_root() / commit[:12])
    stamp = rev.home / "ready"
    if stamp.exists() and stamp.read_text() == commit:
        return rev
    print(f"== building checkout and venv of {rev.label} in {rev.home}", file=sys.stderr)
    shutil.rmtree(rev.home, ignore_errors=True)
    rev.home.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{commit[:12]}.", dir=rev.home.parent))
    try:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", "--format=tar", commit],
            check=True,
            capture_output=True,
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 / 3.10.12
                tar.extractall(tmp / "checkout", filter="data")
            else:
                tar.extractall(tmp / "checkout")  # our own repository: trusted
        venv.EnvBuilder(with_pip=True).create(tmp / "venv")
        # The venv and the editable install must live at their final paths.
        tmp.rename(rev.home)
        subprocess.run(
            [str(rev.python), "-m", "pip", "install", "-q", "-e", str(rev.checkout)],
            check=True,
        )
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(rev.home, ignore_errors=True)
        raise
    stamp.write_text(commit)
    return rev


def _run(rev: Revision, script: str, args: list[str], timeout: float) -> str:
    cmd = [str(rev.python), str(rev.checkout / "benchmarks" / script), *args]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run(
        cmd, cwd=rev.checkout, env=env, capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{rev.label}: {script} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
        )
    return proc.stdout


def _pct(values: list[float], p: float) -> float:
    """Same percentile rule as ``benchmarks/hub.py``."""
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def hub_figures(rev: Revision, hub_args: list[str], timeout: float) -> dict[str, float]:
    """One run of the revision's ``hub.py`` against its own hub."""
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as tmp:
        out = Path(tmp) / "hub.json"
        _run(rev, "hub.py", ["--target", "ours", *hub_args, "--json", str(out)], timeout)
        data = json.loads(out.read_text())
    (row,) = data["rows"]
    if row.get("error"):
        raise RuntimeError(f"{rev.label}: hub.py stopped early: {row['error']}")
    sats = _option(hub_args, "--satellites", "50")
    figures = {
        "hub handshake pw p50 (ms)": _pct(row["handshake_pw"], 50) * 1000,
        "hub handshake rsa p50 (ms)": _pct(row["handshake_rsa"], 50) * 1000,
        "hub rtt p50 (ms)": _pct(row["rtt"], 50) * 1000,
        "hub rtt p99 (ms)": _pct(row["rtt"], 99) * 1000,
        "hub msg/s x1": float(row["throughput_1"]),
        f"hub msg/s x{sats}": float(row["throughput_50"]),
    }
    if "rss_per_conn_kib" in row:
        figures["hub KiB per idle link"] = float(row["rss_per_conn_kib"])
    return figures


def codec_figures(rev: Revision, seconds: float, timeout: float) -> dict[str, float]:
    """One run of the revision's ``codec.py`` (reference figures skipped)."""
    text = _run(rev, "codec.py", ["--seconds", str(seconds), "--no-reference", "--json"], timeout)
    data = json.loads(text.strip().splitlines()[-1])
    ours = data["ours"]
    rev.notes.add(f"C accelerator {'on' if ours.get('accelerated') else 'off'}")
    figures: dict[str, float] = {}
    for enc, value in ours["encode"].items():
        figures[f"codec encode {enc} (/s)"] = float(value)
    for enc, value in ours["decode"].items():
        figures[f"codec decode {enc} (/s)"] = float(value)
    figures["codec binary encode (/s)"] = float(ours["binary_encode"])
    figures["codec binary decode (/s)"] = float(ours["binary_decode"])
    figures["codec Connection.receive_frame (/s)"] = float(ours["connection_receive"])
    figures["raw AES-GCM ceiling (/s)"] = float(data["aes_gcm_ceiling"])
    return figures


def _option(args: list[str], name: str, default: str) -> str:
    return (
        args[args.index(name) + 1] if name in args and args.index(name) + 1 < len(args) else default
    )


def _lower_is_better(metric: str) -> bool:
    return "(ms)" in metric or "KiB" in metric


def _fmt(value: float) -> str:
    if value != value:  # NaN
        return "n/a"
    return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"


def table(a: Revision, b: Revision) -> str:
    """Median of each figure side by side, with B/A and the run-to-run spread."""
    metrics = list(dict.fromkeys(m for run in a.runs + b.runs for m in run))
    width = max(len(m) for m in metrics) + 2
    head = f"{'figure':<{width}}{a.label:>16}{b.label:>24}{'B/A':>8}{'spread':>8}  better"
    lines = [head, "-" * len(head)]
    for m in metrics:
        va = [r[m] for r in a.runs if m in r]
        vb = [r[m] for r in b.runs if m in r]
        ma = statistics.median(va) if va else float("nan")
        mb = statistics.median(vb) if vb else float("nan")
        ratio = mb / ma if ma else float("nan")
        spreads = [
            (max(v) - min(v)) / statistics.median(v)
            for v in (va, vb)
            if len(v) > 1 and statistics.median(v)
        ]
        spread = f"{max(spreads):.0%}" if spreads else "-"
        better = "lower" if _lower_is_better(m) else "higher"
        lines.append(f"{m:<{width}}{_fmt(ma):>16}{_fmt(mb):>24}{ratio:>8.2f}{spread:>8}  {better}")
    runs = len(a.runs)
    lines.append(f"medians of {runs} interleaved run(s) per revision; B/A > 1 means B is higher")
    for rev in (a, b):
        if rev.notes:
            lines.append(f"{rev.label}: {', '.join(sorted(rev.notes))}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rev_a", help="baseline revision (A), e.g. fdc8539")
    ap.add_argument("rev_b", help="revision to compare (B), e.g. HEAD")
    ap.add_argument("--repeat", type=int, default=1, help="interleaved runs per revision")
    ap.add_argument("--only", choices=["hub", "codec"], help="run one benchmark only")
    ap.add_argument(
        "--quick", action="store_true", help=f"short hub runs ({QUICK_HUB}) and 0.2 s codec figures"
    )
    ap.add_argument("--hub-args", help=f"options for hub.py (default: {DEFAULT_HUB})")
    ap.add_argument("--codec-seconds", type=float, help="codec.py --seconds (default 0.5)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per script run")
    args = ap.parse_args()

    hub_args = shlex.split(args.hub_args or (QUICK_HUB if args.quick else DEFAULT_HUB))
    seconds = args.codec_seconds or (0.2 if args.quick else 0.5)
    a, b = prepare(args.rev_a), prepare(args.rev_b)
    for i in range(args.repeat):
        for rev in (a, b):
            print(f"== run {i + 1}/{args.repeat}: {rev.label}", file=sys.stderr)
            figures: dict[str, float] = {}
            if args.only in (None, "codec"):
                figures.update(codec_figures(rev, seconds, args.timeout))
            if args.only in (None, "hub"):
                figures.update(hub_figures(rev, hub_args, args.timeout))
            rev.runs.append(figures)
    print(table(a, b))
    return 0


if __name__ == "__main__":
    sys.exit(main())
