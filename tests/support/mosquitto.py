"""The private mosquitto broker of the MQTT tests (a session fixture, registered by the
root conftest so every folder can use it)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.net import free_port


def _mosquitto() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    fallback = Path("/usr/sbin/mosquitto")
    return str(fallback) if fallback.exists() else None


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """A private ``mosquitto`` on a free loopback port for the session; yields ``(host, port)``.

    Skips only when the binary is not installed (CI installs Debian's mosquitto).
    Tests keep apart by using a topic prefix of their own.
    """
    binary = _mosquitto()
    if binary is None:
        pytest.skip("mosquitto is not installed")
    workdir: Path = tmp_path_factory.mktemp("mosquitto")
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n", encoding="ascii"
    )
    log = workdir / "mosquitto.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen([binary, "-c", str(conf)], stdout=fh, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"mosquitto did not start: {log.read_text(errors='replace')[-2000:]}"
                )
            time.sleep(0.05)
        yield "127.0.0.1", port
    finally:
        proc.kill()  # no persistence: nothing to lose
        proc.wait()
