"""Key derivations off the event loop, with bounded concurrency and a bounded queue.

A password HANDSHAKE costs a PBKDF2 (about 25 ms) and a v3 PSK an Argon2id
(64 MiB and tens of milliseconds). Run on the loop, a flood of them stops every
other link; run in an unbounded pool, a burst multiplies the memory. A
:class:`KeyWork` runs them in a small thread pool of its own (``workers``
threads, so at most ``workers`` derivations run at once and at most ``workers``
times 64 MiB is held by Argon2id) and refuses work past ``max_pending`` queued
jobs with :class:`KeyWorkBusy`, which a link answers by closing 1013 (try
again later) rather than waiting behind an attacker's queue.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from hivemind_bus_client.exceptions import CloseCode, HiveMindError

__all__ = ["KeyWork", "KeyWorkBusy"]

LOG = logging.getLogger(__name__)

T = TypeVar("T")


class KeyWorkBusy(HiveMindError):
    """More key derivations are queued than :attr:`KeyWork.max_pending`; try again later."""

    close_code = CloseCode.TRY_AGAIN


class KeyWork:
    """A bounded executor for key derivations (see the module docstring).

    Args:
        workers: threads, so derivations running at once (at least 1).
        max_pending: derivations queued or running before :meth:`run` refuses.
    """

    def __init__(self, workers: int = 2, max_pending: int = 32) -> None:
        self.workers = max(1, int(workers))
        self.max_pending = max(1, int(max_pending))
        self.pending = 0
        #: Derivations done, and refused because the queue was full.
        self.done = 0
        self.refused = 0
        self._pool: ThreadPoolExecutor | None = None

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="hivemind-keywork")
        return self._pool

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` in a worker thread; raises :class:`KeyWorkBusy` when the queue is full."""
        if self.pending >= self.max_pending:
            self.refused += 1
            if self.refused == 1 or self.refused % 100 == 0:
                LOG.warning(
                    "key derivation queue full (%d): refused %d", self.pending, self.refused
                )
            # The message is the close reason the peer reads: the same whatever was queued.
            raise KeyWorkBusy("try again later")
        self.pending += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor(), fn, *args)
        finally:
            self.pending -= 1
            self.done += 1

    def shutdown(self) -> None:
        """Stop the threads (queued work is dropped); a later :meth:`run` starts new ones."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
