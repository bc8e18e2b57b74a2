"""The two threads of the sync client: the I/O loop and the handler dispatcher.

* :class:`LoopThread` runs an asyncio loop with the link (engine and node);
* :class:`Dispatcher` runs handler calls one at a time, in arrival order.

Because handlers never run on the I/O thread, a handler may block on the hub
(``wait_for_response``) without deadlocking the client: its waiter is resolved
by the I/O thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from hivemind_bus_client.client.handlers import Call
from hivemind_bus_client.exceptions import InvalidState

__all__ = ["Dispatcher", "LoopThread"]

LOG = logging.getLogger(__name__)


class Dispatcher:
    """Runs handler calls on one thread, in order; exceptions are logged, not raised.

    Args:
        on_awaitable: given each coroutine a handler returns (to run it on the loop).
    """

    def __init__(self, on_awaitable: Callable[[Any], None]) -> None:
        self._queue: queue.SimpleQueue[list[Call] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._on_awaitable = on_awaitable

    def start(self) -> None:
        """Start the thread (again, after :meth:`stop`)."""
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._run, name="hivemind-client-dispatch", daemon=True
            )
            self._thread.start()

    def put(self, calls: list[Call]) -> None:
        """Queue a batch of calls."""
        self._queue.put(calls)

    def stop(self) -> None:
        """Let the queued calls run, then end the thread."""
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._queue.put(None)
            if thread is not threading.current_thread():
                thread.join(timeout=5)
        self._thread = None

    def _run(self) -> None:
        while True:
            calls = self._queue.get()
            if calls is None:
                return
            for fn, args in calls:
                try:
                    result = fn(*args)
                    if asyncio.iscoroutine(result):
                        self._on_awaitable(result)
                except Exception:
                    LOG.exception("handler %r failed", getattr(fn, "__name__", fn))


class LoopThread:
    """An asyncio event loop on a daemon thread."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> asyncio.AbstractEventLoop:
        """Start the loop (once); returns it."""
        if self.loop is not None:
            return self.loop
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="hivemind-client-io", daemon=True)
        self._thread.start()
        ready.wait()
        self.loop = loop
        return loop

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float | None = None) -> Any:
        """Run ``coro`` on the loop and wait for its result (from another thread).

        Raises:
            InvalidState: no loop, or called from the loop's own thread.
            concurrent.futures.TimeoutError: no result within ``timeout``.
        """
        if self.loop is None:
            coro.close()
            raise InvalidState("not connected: call connect() first")
        if self._thread is threading.current_thread():
            coro.close()
            raise InvalidState("blocking client call made from the client's I/O thread")
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise

    def submit(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` on the loop without waiting (dropped when there is no loop)."""
        loop = self.loop
        if loop is None:
            coro.close()
            return
        asyncio.run_coroutine_threadsafe(coro, loop)

    def stop(self) -> None:
        """Stop the loop and join its thread."""
        loop, thread = self.loop, self._thread
        self.loop, self._thread = None, None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
