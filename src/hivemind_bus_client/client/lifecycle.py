"""Connecting with retries, for both client faces.

``connect(handshake_max_retries=N)`` (the 1.2.x client's keyword, used by the
2026 bridges) retries a first connect that failed for a retryable reason (no
socket, a timeout, a link closed during the handshake) up to ``N`` more times,
with the engine's reconnect delays in between. A refusal (wrong key or
password, no common handshake) is raised at once: retrying cannot fix it.
``None`` or ``0`` is one attempt, as ``connect()`` always was.
"""

from __future__ import annotations

import asyncio
import logging

from hivemind_bus_client.client.engine import LinkEngine
from hivemind_bus_client.exceptions import ConfigurationError, HiveMindError, InvalidState
from hivemind_bus_client.protocol.reconnect import is_fatal

__all__ = ["check_retries", "open_with_retries", "retry_budget"]

LOG = logging.getLogger(__name__)


def check_retries(retries: int | None) -> int:
    """``handshake_max_retries`` as a count of extra attempts.

    Raises:
        ConfigurationError: not ``None`` nor a non-negative integer.
    """
    if retries is None:
        return 0
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ConfigurationError(
            f"handshake_max_retries must be None or an integer >= 0, not {retries!r}"
        )
    return retries


def retry_budget(engine: LinkEngine, retries: int) -> float:
    """Seconds a connect with ``retries`` extra attempts may take at most."""
    cfg = engine.config
    per_attempt = cfg.connect_timeout + cfg.max_reconnect_delay
    return (retries + 1) * per_attempt + 5


async def open_with_retries(engine: LinkEngine, retries: int) -> None:
    """Open the engine's link, retrying retryable failures ``retries`` times.

    Raises:
        HiveMindError: the last failure, or a refusal at once.
        InvalidState: the client was closed while waiting to retry.
    """
    delays = engine.delays()
    failures = 0
    while True:
        try:
            await engine.open_link()
            return
        except HiveMindError as exc:
            failures += 1
            delay = next(delays, None) if failures <= retries else None
            if is_fatal(exc) or delay is None:
                raise
            LOG.info("connect attempt %d failed (%s); retrying in %.1f s", failures, exc, delay)
        await asyncio.sleep(delay)
        if engine.closing:
            raise InvalidState("the client was closed while connecting")
