"""The asyncio HiveMind client, :class:`AsyncHiveMessageBusClient`.

Same constructor and the same methods as
:class:`hivemind_bus_client.client.HiveMessageBusClient`, with the blocking
ones as coroutines (``connect``, ``emit``, ``wait_for_*``, ``query``,
``cascade``, ``ping``, ``close``). Everything runs on the caller's event loop;
no threads are started. The requests are written once in
:class:`~hivemind_bus_client.client.core.ClientCore`; this face only says how to wait
(each request method returns a coroutine here).

Handlers may be plain functions or coroutine functions. Plain functions run
inline on the loop, so they must not block; coroutine handlers run as tasks
and may ``await client.wait_for_response(...)`` freely::

    async with AsyncHiveMessageBusClient(key=..., password=..., host=...) as client:
        reply = await client.wait_for_response(
            Message("recognizer_loop:utterance", {"utterances": ["hi"]}), "speak"
        )
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ovos_bus_client.message import Message

from hivemind_bus_client.client.core import ClientCore, Request
from hivemind_bus_client.client.handlers import Call, Waiter
from hivemind_bus_client.client.lifecycle import check_retries, open_with_retries
from hivemind_bus_client.client.shaping import BinaryDataCallbacks
from hivemind_bus_client.protocol.cascade import CascadeResult
from hivemind_bus_client.protocol.message import (
    HiveMessage,
    HiveMessageType,
    HiveMindBinaryPayloadType,
)

__all__ = ["AsyncHiveMessageBusClient", "BinaryDataCallbacks"]

LOG = logging.getLogger(__name__)

_T = HiveMessageType


class AsyncHiveMessageBusClient(ClientCore):
    """A HiveMind satellite on asyncio (see the module docstring).

    Constructor arguments are those of
    :class:`~hivemind_bus_client.client.HiveMessageBusClient`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- lifecycle ---------------------------------------------------------------------

    async def connect(
        self,
        bus: Any = None,
        protocol: Any = None,
        site_id: str | None = None,
        timeout: float | None = None,
        handshake_max_retries: int | None = None,
    ) -> AsyncHiveMessageBusClient:
        """Open the link; returns once the handshake is complete.

        Takes and raises what the sync client's ``connect`` does.
        """
        del bus, protocol
        retries = check_retries(handshake_max_retries)
        if self._begin_connect(site_id, timeout):
            return self
        engine = self._engine
        await open_with_retries(engine, retries)
        engine.start_supervisor()
        return self

    async def close_connection(self) -> None:
        """Drop the socket only: the client reconnects by itself (:meth:`close` is permanent)."""
        await self._engine.drop_link()

    async def close(self) -> None:
        """Close the link for good and stop reconnecting."""
        await self._engine.close()
        self._node.stop_timers()
        self.connected_event.clear()
        self.handshake_event.clear()
        for task in list(self._tasks):
            task.cancel()

    async def __aenter__(self) -> AsyncHiveMessageBusClient:
        if not self.connected:
            await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def wait_for_handshake(self, timeout: float | None = None) -> bool:
        """Wait until a keyed link exists; ``False`` on timeout."""
        ready = self._engine.ready
        if ready is None:
            return False
        try:
            await asyncio.wait_for(ready.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    # -- sending -----------------------------------------------------------------------

    async def emit(
        self,
        message: HiveMessage | Message,
        binary_type: HiveMindBinaryPayloadType | int = HiveMindBinaryPayloadType.UNDEFINED,
    ) -> None:
        """Send a message (an OVOS Message goes as BUS); see the sync client's ``emit``."""
        await self._engine.send(self.prepare(message, binary_type))

    # -- how this face waits -------------------------------------------------------------

    async def _wait(self, request: Request, timeout: float) -> Any:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[HiveMessage] = loop.create_future()

        def resolve(msg: HiveMessage) -> None:
            if not fut.done():
                fut.set_result(msg)

        waiter = Waiter(request.msg_type, resolve, request.payload_type, request.predicate)
        self._registry.add_waiter(waiter)
        try:
            if request.send is not None:
                await self.emit(request.send)
            if request.originate is not None:
                await self._send_originated(request.originate)
            return request.result(await asyncio.wait_for(fut, timeout))
        except asyncio.TimeoutError:
            return None
        finally:
            self._registry.remove_waiter(waiter)

    async def _gather(
        self, qid: str, request: HiveMessage, window: float, expected: int | None
    ) -> CascadeResult:
        fut: asyncio.Future[CascadeResult] = asyncio.get_running_loop().create_future()

        def finished(result: CascadeResult) -> None:
            if not fut.done():
                fut.set_result(result)

        self._node.begin_cascade(qid, finished, expected, window)
        await self._send_originated(request)
        try:
            return await asyncio.wait_for(fut, window + 5)
        except asyncio.TimeoutError:
            return self._no_answers(qid)

    async def _flood(self, timeout: float) -> list[HiveMessage]:
        pongs: list[HiveMessage] = []
        flood: list[str] = []
        collect = self._pong_collector(flood, pongs)
        self.on(_T.PONG, collect)
        started = time.monotonic()
        try:
            await self._start_ping(flood)
            await asyncio.sleep(max(0.0, timeout - (time.monotonic() - started)))
        finally:
            self.remove(_T.PONG, collect)
        return pongs

    # -- plumbing ----------------------------------------------------------------------

    def _dispatch(self, calls: list[Call]) -> None:
        for fn, args in calls:
            try:
                result = fn(*args)
            except Exception:
                LOG.exception("handler %r failed", getattr(fn, "__name__", fn))
                continue
            if asyncio.iscoroutine(result):
                task = asyncio.get_running_loop().create_task(result)
                self._tasks.add(task)
                task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            LOG.error("async handler failed", exc_info=task.exception())
