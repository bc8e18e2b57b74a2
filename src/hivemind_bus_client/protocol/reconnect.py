"""Reconnect policy: which failures are worth retrying, and how long to wait.

Satellites must come back within seconds after a hub restart, and must *not*
hammer a hub that refused their credentials (``docs/client.md``, reconnect
policy). So failures are classified:

* **fatal** (surface to the user, never retry): the hub refused the access key
  or the password, the two ends could not agree on a cipher/encoding, the hub
  closed with a code of :data:`FATAL_CLOSE_CODES` (policy or protocol: 1002,
  1003, 1007, 1008, 1010), the peer broke the protocol or a frame failed
  authentication, or the client is misconfigured;
* **retryable**: everything else: refused/unreachable socket, timeouts, and
  closes such as 1000, 1005 after the handshake, the permission kick 4003, and
  the codes of :data:`RETRY_CLOSE_CODES` (1001, 1006, 1011, 1012, 1013), which
  say "come back later" even when they end a handshake.

Delays come from :func:`backoff`: exponential with jitter, the first retry
under a second, capped. Clients accept any iterable of
delays instead (``reconnect_delays=[0.1, 0.5, 1]`` tries three times).
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from hivemind_bus_client.exceptions import (
    CloseCode,
    ConfigurationError,
    ConnectionClosed,
    HandshakeError,
)

__all__ = ["FATAL_CLOSE_CODES", "RETRY_CLOSE_CODES", "backoff", "is_fatal"]

#: Close codes after which reconnecting cannot help: the peer refused us or
#: what we sent.
FATAL_CLOSE_CODES: frozenset[CloseCode] = frozenset(
    {
        CloseCode.PROTOCOL_ERROR,
        CloseCode.UNSUPPORTED_DATA,
        CloseCode.INVALID_DATA,
        CloseCode.POLICY,
        CloseCode.MANDATORY_EXTENSION,
    }
)

#: Close codes a hub uses to say "come back later" (going away, dropped,
#: internal error, restart, overloaded); never a credential refusal, even
#: when they end a handshake.
RETRY_CLOSE_CODES: frozenset[CloseCode] = frozenset(
    {
        CloseCode.GOING_AWAY,
        CloseCode.ABNORMAL,
        CloseCode.INTERNAL,
        CloseCode.RESTART,
        CloseCode.TRY_AGAIN,
    }
)


def backoff(
    initial: float = 0.5,
    factor: float = 2.0,
    max_delay: float = 30.0,
    jitter: float = 0.5,
    rng: random.Random | None = None,
) -> Iterator[float]:
    """Endless jittered exponential delays.

    The n-th delay is ``min(max_delay, initial * factor**n)`` scaled down by a
    random fraction of up to ``jitter`` ("equal jitter"), so a fleet of
    satellites dropped by the same hub restart spreads its retries while the
    first retry still comes within ``initial`` seconds.
    """
    if not 0.0 <= jitter <= 1.0:
        raise ValueError("jitter must be between 0 and 1")
    draw = (rng or random.Random()).random
    delay = initial
    while True:
        base = min(max_delay, delay)
        yield base * (1.0 - jitter * draw())
        delay = delay * factor if delay < max_delay else max_delay


def is_fatal(exc: BaseException) -> bool:
    """True when retrying after ``exc`` cannot succeed (see the module docstring)."""
    if isinstance(exc, (HandshakeError, ConfigurationError)):
        return True
    if isinstance(exc, ConnectionClosed):
        return exc.code in FATAL_CLOSE_CODES
    return False
