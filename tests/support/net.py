"""The one ``free_port`` and the one ``wait_until`` of the test suite."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port on ``host`` that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_until(
    check: Callable[[], object], *, timeout: float = 10.0, what: str = "", interval: float = 0.02
) -> float:
    """Poll ``check`` until it returns something true; return the seconds waited.

    Raises ``AssertionError`` naming ``what`` when ``timeout`` passes first.
    """
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or check}")
        time.sleep(interval)
    return time.monotonic() - start
