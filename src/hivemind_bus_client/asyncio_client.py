"""The asyncio HiveMind client, :class:`AsyncHiveMessageBusClient`.

Same constructor and the same methods as
:class:`hivemind_bus_client.client.HiveMessageBusClient`, with the blocking
ones as coroutines (``connect``, ``emit``, ``wait_for_*``, ``query``,
``cascade``, ``ping``, ``close``). Everything runs on the caller's event loop;
no threads are started.

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
from collections.abc import Callable
from typing import Any

from ovos_bus_client.message import Message

from hivemind_bus_client._handlers import Call, Waiter, hive_type
from hivemind_bus_client.client import BinaryDataCallbacks, ClientCore
from hivemind_bus_client.protocol.cascade import CascadeResult, is_response, query_id_of
from hivemind_bus_client.protocol.message import (
    HiveMessage,
    HiveMessageType,
    HiveMindBinaryPayloadType,
)

__all__ = ["AsyncHiveMessageBusClient", "BinaryDataCallbacks"]

LOG = logging.getLogger(__name__)

_T = HiveMessageType
_DEFAULT_WAIT = 3.0


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
    ) -> AsyncHiveMessageBusClient:
        """Open the link; returns once the handshake is complete.

        Raises the same errors as the sync client's ``connect``.
        """
        del bus, protocol
        if self._begin_connect(site_id, timeout):
            return self
        engine = self._engine
        await engine.open_link()
        engine.start_supervisor()
        return self

    async def close(self) -> None:
        """Close the link and stop reconnecting."""
        await self._engine.close()
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

    @property
    def fatal_error(self) -> BaseException | None:
        """Why the client stopped for good, if it did."""
        return self._engine.fatal_error

    # -- sending -----------------------------------------------------------------------

    async def emit(
        self,
        message: HiveMessage | Message,
        binary_type: HiveMindBinaryPayloadType | int = HiveMindBinaryPayloadType.UNDEFINED,
    ) -> None:
        """Send a message (an OVOS Message goes as BUS); see the sync client's ``emit``."""
        await self._engine.send(self.prepare(message, binary_type))

    async def emit_mycroft(self, message: Message) -> None:
        """Send an OVOS message to the hub's bus (as BUS)."""
        await self.emit(HiveMessage(_T.BUS, message))

    async def emit_intercom(self, message: HiveMessage | Message, pubkey: str) -> None:
        """Send ``message`` end-to-end encrypted to the node owning ``pubkey``."""
        await self.emit(self._engine.make_intercom(self.prepare(message), pubkey))

    # -- waiting -----------------------------------------------------------------------

    async def _wait(
        self,
        msg_type: HiveMessageType,
        timeout: float,
        payload_type: str | None = None,
        predicate: Callable[[HiveMessage], bool] | None = None,
        before: Any = None,
    ) -> HiveMessage | None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[HiveMessage] = loop.create_future()

        def resolve(msg: HiveMessage) -> None:
            if not fut.done():
                fut.set_result(msg)

        waiter = Waiter(msg_type, resolve, payload_type, predicate)
        self._registry.add_waiter(waiter)
        try:
            if before is not None:
                await before
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            return None
        finally:
            self._registry.remove_waiter(waiter)

    async def wait_for_message(
        self, message_type: HiveMessageType | str, timeout: float = _DEFAULT_WAIT
    ) -> HiveMessage | Message | None:
        """The next hive message of ``message_type`` (OVOS type: the next such BUS payload)."""
        htype = hive_type(message_type)
        if htype is None:
            return await self.wait_for_mycroft(str(message_type), timeout)
        return await self._wait(htype, timeout)

    async def wait_for_mycroft(
        self, mycroft_msg_type: str, timeout: float = _DEFAULT_WAIT
    ) -> Message | None:
        """The next BUS message of OVOS type ``mycroft_msg_type``."""
        msg = await self._wait(_T.BUS, timeout, payload_type=mycroft_msg_type)
        return msg.payload if msg is not None else None

    async def wait_for_payload(
        self,
        payload_type: str,
        message_type: HiveMessageType | str = _T.THIRDPRTY,
        timeout: float = _DEFAULT_WAIT,
    ) -> HiveMessage | None:
        """The next ``message_type`` message whose payload type is ``payload_type``."""
        htype = hive_type(message_type) or _T.THIRDPRTY
        return await self._wait(htype, timeout, payload_type=payload_type)

    async def wait_for_response(
        self,
        message: HiveMessage | Message,
        reply_type: str | None = None,
        timeout: float = _DEFAULT_WAIT,
    ) -> HiveMessage | None:
        """Send ``message`` and return the reply (see the sync client), or ``None``."""
        msg = self.prepare(message)
        if msg.msg_type is _T.BUS:
            inner = msg.payload
            ptype = reply_type or (inner.msg_type if isinstance(inner, Message) else None)
            return await self._wait(_T.BUS, timeout, payload_type=ptype, before=self.emit(msg))
        htype = (hive_type(reply_type) if reply_type else None) or msg.msg_type
        return await self._wait(htype, timeout, before=self.emit(msg))

    async def wait_for_payload_response(
        self,
        message: HiveMessage | Message,
        payload_type: str,
        reply_type: HiveMessageType | str | None = None,
        timeout: float = _DEFAULT_WAIT,
    ) -> HiveMessage | None:
        """Send ``message``; the next ``reply_type`` message with payload type ``payload_type``."""
        msg = self.prepare(message)
        htype = (hive_type(reply_type) if reply_type else None) or msg.msg_type
        return await self._wait(htype, timeout, payload_type=payload_type, before=self.emit(msg))

    # -- mesh helpers ------------------------------------------------------------------

    async def query(
        self, message: HiveMessage | Message, timeout: float = 10.0
    ) -> HiveMessage | None:
        """Send a QUERY wrapping ``message``; the first answer or ``None``."""
        qid, request = self._wrap_request(_T.QUERY, self.prepare(message))
        return await self._wait(
            _T.QUERY,
            timeout,
            predicate=lambda m: is_response(m) and query_id_of(m) == qid,
            before=self.emit(request),
        )

    async def cascade(
        self,
        message: HiveMessage | Message,
        timeout: float | None = None,
        expected: int | None = None,
    ) -> CascadeResult:
        """Send a CASCADE wrapping ``message`` and gather the answers (see the sync client)."""
        qid, request = self._wrap_request(_T.CASCADE, self.prepare(message))
        window = self._engine.cascade_timeout if timeout is None else timeout
        fut: asyncio.Future[CascadeResult] = asyncio.get_running_loop().create_future()

        def finished(result: CascadeResult) -> None:
            if not fut.done():
                fut.set_result(result)

        self._engine.begin_cascade(qid, finished, expected, window)
        await self.emit(request)
        try:
            return await asyncio.wait_for(fut, window + 5)
        except asyncio.TimeoutError:
            return CascadeResult(qid, [], None, False)

    async def ping(self, timeout: float = 5.0) -> list[HiveMessage]:
        """Flood a PING and return the PONGs received within ``timeout`` seconds."""
        ping_id, outer = self._make_ping()
        pongs: list[HiveMessage] = []

        def collect(msg: HiveMessage) -> None:
            data = msg.payload if isinstance(msg.payload, dict) else {}
            if data.get("ping_id") == ping_id:
                msg.metadata.setdefault("received_at", time.time())
                pongs.append(msg)

        self._engine.note_own_ping(ping_id)
        self.on(_T.PONG, collect)
        started = time.monotonic()
        try:
            await self.emit(outer)
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
