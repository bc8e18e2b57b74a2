"""``last_seen`` writes that never stall a live link.

The hub records a client's ``last_seen`` when it connects and when it leaves.
A database write can wait (another process may hold the sqlite write lock for
seconds: a backup, a ``sqlite3`` shell), so :class:`LastSeenWriter` keeps the
newest time per client, and writes the batch after ``delay`` seconds in a
worker thread (``asyncio.to_thread``), never on the event loop. Without a
running loop (tools, tests) it writes at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

__all__ = ["LastSeenWriter"]

LOG = logging.getLogger(__name__)


class LastSeenWriter:
    """Debounced, off-loop ``db.touch(client_id, when)`` calls.

    Args:
        db: the client database (nothing is done when it has no ``touch``).
        delay: seconds a time waits before it is written (touches in that
            window are written together).
        count: the node's stats counter (``errors`` for failed writes).
    """

    def __init__(self, db: Any, delay: float, count: Callable[[str], None]) -> None:
        self.db = db
        self.delay = max(0.0, delay)
        self._count = count
        self._pending: dict[int, float] = {}
        self._task: asyncio.Task[None] | None = None

    def touch(self, client_id: int) -> None:
        """Record that ``client_id`` was seen now."""
        if getattr(self.db, "touch", None) is None:
            return
        self._pending[client_id] = time.time()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        if self._task is None:
            self._task = loop.create_task(self._later(), name="hivemind-last-seen")

    async def _later(self) -> None:
        try:
            while self._pending:
                await asyncio.sleep(self.delay)
                batch, self._pending = self._pending, {}
                await asyncio.to_thread(self._write, batch)
        finally:
            self._task = None

    async def aclose(self) -> None:
        """Stop the debounce task and write what is pending, in a worker thread."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.to_thread(self.flush)

    def flush(self) -> None:
        """Write what is pending now, in this thread (shutdown, no loop)."""
        batch, self._pending = self._pending, {}
        self._write(batch)

    def _write(self, batch: dict[int, float]) -> None:
        touch = getattr(self.db, "touch", None)
        if touch is None:
            return
        for client_id, when in batch.items():
            try:
                touch(client_id, when)
            except Exception:
                self._count("errors")
                LOG.debug("could not update last_seen", exc_info=True)
