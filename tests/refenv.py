"""Throwaway virtual environments holding the reference HiveMind packages.

Two generations: ``v1`` (hivemind-bus-client 0.4.4, hivemind-core 4.0.0, the
default) and ``v3`` (hivemind-bus-client 1.2.12a1, hivemind-core 5.3.10a1, the
Noise line). Each is the authority on wire compatibility for its protocol. We never import it into our own
environment: it lives in a separate venv that tests, vector generators and
benchmarks drive as subprocesses. The venv is built once and cached.

Cache location: ``$HIVEMIND_REF_CACHE`` or ``~/.cache/hivemind-reference``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

#: Exact reference pins. bitstring 5 breaks hivemind-bus-client 0.4.4's import.
REFERENCE_PACKAGES = (
    "hivemind-core==4.0.0",
    "hivemind-bus-client==0.4.4",
    "bitstring<5",
    "ovos-messagebus",
)

#: The 2026 line (protocol v3): the newest client and hub releases.
REFERENCE_V3_PACKAGES = (
    "hivemind-core==5.3.10a1",
    "hivemind-bus-client==1.2.12a1",
    "ovos-messagebus",
)

GENERATIONS = {"v1": REFERENCE_PACKAGES, "v3": REFERENCE_V3_PACKAGES}


def cache_dir() -> Path:
    """Folder that holds the cached reference venv."""
    root = os.environ.get("HIVEMIND_REF_CACHE") or Path.home() / ".cache" / "hivemind-reference"
    return Path(root)


def venv_dir(generation: str = "v1") -> Path:
    """Path of the reference venv of ``generation`` (it may not exist yet)."""
    return cache_dir() / ("venv" if generation == "v1" else f"venv-{generation}")


def python_path(generation: str = "v1") -> Path:
    """Interpreter of the reference venv of ``generation``."""
    return venv_dir(generation) / "bin" / "python"


def _stamp(generation: str) -> str:
    return "\n".join(GENERATIONS[generation])


def is_ready(generation: str = "v1") -> bool:
    """True when the venv exists and was built for the current pins."""
    stamp = venv_dir(generation) / "hivemind-ref.stamp"
    return (
        python_path(generation).exists()
        and stamp.exists()
        and stamp.read_text() == _stamp(generation)
    )


def ensure(log=None, generation: str = "v1") -> Path:
    """Build the reference venv of ``generation`` if needed and return its interpreter.

    Raises ``RuntimeError`` with pip's output when the install fails.
    """
    if is_ready(generation):
        return python_path(generation)
    packages = GENERATIONS[generation]
    pre = ("--pre",) if generation != "v1" else ()  # the v3 line is published as alphas
    out = log or sys.stderr
    target = venv_dir(generation)
    print(f"building reference venv ({', '.join(packages)}) ...", file=out)
    target.parent.mkdir(parents=True, exist_ok=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(target)
    proc = subprocess.run(
        [str(python_path(generation)), "-m", "pip", "install", "-q", *pre, *packages],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"reference venv install failed:\n{proc.stdout}\n{proc.stderr}")
    (target / "hivemind-ref.stamp").write_text(_stamp(generation))
    return python_path(generation)


if __name__ == "__main__":
    print(ensure(generation=sys.argv[1] if len(sys.argv) > 1 else "v1"))
