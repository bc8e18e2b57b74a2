"""Throwaway virtual environment holding the reference HiveMind packages.

The reference implementation (hivemind-bus-client 0.4.4, hivemind-core 4.0.0)
is the authority on wire compatibility. We never import it into our own
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

_STAMP = "\n".join(REFERENCE_PACKAGES)


def cache_dir() -> Path:
    """Folder that holds the cached reference venv."""
    root = os.environ.get("HIVEMIND_REF_CACHE") or Path.home() / ".cache" / "hivemind-reference"
    return Path(root)


def venv_dir() -> Path:
    """Path of the reference venv (it may not exist yet)."""
    return cache_dir() / "venv"


def python_path() -> Path:
    """Interpreter of the reference venv."""
    return venv_dir() / "bin" / "python"


def is_ready() -> bool:
    """True when the venv exists and was built for the current pins."""
    stamp = venv_dir() / "hivemind-ref.stamp"
    return python_path().exists() and stamp.exists() and stamp.read_text() == _STAMP


def ensure(log=None) -> Path:
    """Build the reference venv if needed and return its interpreter.

    Raises ``RuntimeError`` with pip's output when the install fails.
    """
    if is_ready():
        return python_path()
    out = log or sys.stderr
    target = venv_dir()
    print(f"building reference venv ({', '.join(REFERENCE_PACKAGES)}) ...", file=out)
    target.parent.mkdir(parents=True, exist_ok=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(target)
    proc = subprocess.run(
        [str(python_path()), "-m", "pip", "install", "-q", *REFERENCE_PACKAGES],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"reference venv install failed:\n{proc.stdout}\n{proc.stderr}")
    (target / "hivemind-ref.stamp").write_text(_STAMP)
    return python_path()


if __name__ == "__main__":
    print(ensure())
