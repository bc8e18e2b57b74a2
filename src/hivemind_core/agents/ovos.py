"""The OVOS agent: bridges satellites to an ``ovos-messagebus`` (ovos-core's bus).

Messages from satellites are written to the bus as JSON; every bus message
that names a live satellite peer in ``context.destination`` (OVOS' ``reply``
swaps source and destination, so answers to injected messages do) is handed
to the hub, which sends it to that satellite only.

QUERY and CASCADE requests (:meth:`OVOSAgent.ask`) are written to the bus
with ``context.source`` set to a one-off ``hive.query::<id>`` address, so the
skills' replies (OVOS ``reply`` makes the request's source their destination)
come back to the agent, not to a satellite. For an utterance the answer is
the first ``speak``; an ``ovos.utterance.handled`` or
``complete_intent_failure`` before any ``speak`` declines (the hub then asks
upstream). For any other message type the first reply is the answer. Without
a bus, or when nothing answers within ``query_timeout``, the agent declines.

The first connection must succeed within ``ovos_connect_timeout`` seconds or
:meth:`OVOSAgent.start` raises :class:`~hivemind_core.agents.base.AgentError`
saying which address failed (the reference blocks forever). Afterwards a lost
bus is reconnected with a short capped backoff; messages injected meanwhile
are buffered (bounded) and flushed on reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import deque
from typing import Any

from hivemind_bus_client.exceptions import HiveMindError
from hivemind_bus_client.protocol.reconnect import backoff
from hivemind_bus_client.transport.channel import ChannelClosed
from hivemind_bus_client.transport.websocket import WebSocketChannel, connect
from hivemind_core.agents.base import Agent, AgentError, AnswerCallback, ReplyCallback
from hivemind_core.config import HubConfig

__all__ = ["OVOSAgent"]

LOG = logging.getLogger(__name__)

#: Address prefix of the agent's own QUERY/CASCADE requests on the bus.
ASK_PREFIX = "hive.query::"
#: Bus messages that end an utterance without an answer.
_UNANSWERED = frozenset({"ovos.utterance.handled", "complete_intent_failure"})

#: First and longest delay between reconnection attempts, seconds.
RECONNECT_INITIAL = 0.1
RECONNECT_MAX = 5.0
#: Frames (and bytes) written to the bus while it reads slower than we write.
_MAX_FRAMES = 10_000


class OVOSAgent(Agent):
    """Agent backed by an OVOS message bus.

    Args:
        config: reads ``ovos_host``, ``ovos_port``, ``ovos_route`` and
            ``ovos_connect_timeout``.
        backlog: messages kept while the bus is unreachable (oldest dropped first).
    """

    name = "ovos"

    def __init__(self, config: HubConfig | None = None, *, backlog: int = 1000) -> None:
        super().__init__(config)
        cfg = self.config
        route = cfg.ovos_route if cfg.ovos_route.startswith("/") else "/" + cfg.ovos_route
        self.url = f"ws://{cfg.ovos_host}:{cfg.ovos_port}{route}"
        self.connect_timeout = cfg.ovos_connect_timeout
        self._ws: WebSocketChannel | None = None
        self._task: asyncio.Task[None] | None = None
        self._backlog: deque[str] = deque(maxlen=backlog)
        self._stopping = False
        #: Times the bus connection was re-established after a loss.
        self.reconnects = 0
        #: QUERY/CASCADE requests waiting for their answer:
        #: address -> (the reply type that answers, callback, its timeout timer).
        self._asks: dict[str, tuple[str | None, AnswerCallback, asyncio.TimerHandle]] = {}
        self.connected = asyncio.Event()

    async def _open(self, timeout: float) -> WebSocketChannel:
        return await connect(
            self.url,
            open_timeout=timeout,
            max_size=None,
            ping_interval=20,
            ping_timeout=20,
            max_frames=_MAX_FRAMES,
        )

    async def start(self, reply: ReplyCallback) -> None:
        """Connect to the bus (within the connect timeout) and start relaying.

        Raises:
            AgentError: the bus did not accept a connection in time.
        """
        await super().start(reply)
        try:
            ws = await self._open(self.connect_timeout)
        except HiveMindError as exc:
            raise AgentError(
                f"cannot reach the OVOS message bus at {self.url} within "
                f"{self.connect_timeout:g}s ({type(exc).__name__}: {exc}). Is ovos-messagebus "
                "running? Set ovos_host/ovos_port, or use the embedded agent."
            ) from None
        LOG.info("connected to the OVOS message bus at %s", self.url)
        self._attach(ws)
        self._task = asyncio.get_running_loop().create_task(
            self._run(ws), name="hivemind-ovos-agent"
        )

    def _attach(self, ws: WebSocketChannel) -> None:
        self._ws = ws
        self.connected.set()
        while self._backlog:
            self._write(ws, self._backlog.popleft())

    @staticmethod
    def _write(ws: WebSocketChannel, text: str) -> None:
        with contextlib.suppress(ChannelClosed):  # the reader notices and reconnects
            ws.write_nowait(text)

    async def _run(self, ws: WebSocketChannel) -> None:
        while not self._stopping:
            try:
                await self._pump(ws)
            except ChannelClosed:
                pass
            except Exception:
                LOG.exception("OVOS agent: unexpected error reading the bus")
            self._ws = None
            self.connected.clear()
            if self._stopping:
                return
            LOG.warning("lost the OVOS message bus at %s; reconnecting", self.url)
            fresh = await self._reconnect()
            if fresh is None:
                return
            ws = fresh
            self.reconnects += 1
            LOG.info("reconnected to the OVOS message bus at %s", self.url)
            self._attach(ws)

    async def _pump(self, ws: WebSocketChannel) -> None:
        reply = self.reply
        while True:
            raw = await ws.recv()
            if isinstance(raw, bytes):
                continue
            # Satellite peers always contain "::"; skip parsing everything else.
            if "::" not in raw:
                continue
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            if isinstance(msg, dict):
                context = msg.get("context")
                if not isinstance(context, dict):
                    reply(msg)
                    continue
                dest = context.get("destination")
                if isinstance(dest, str) and dest.startswith(ASK_PREFIX):
                    self._answered(dest, msg)
                elif not str(context.get("source")).startswith(ASK_PREFIX):
                    reply(msg)  # (our own requests, echoed by the bus, are nobody's)

    async def _reconnect(self) -> WebSocketChannel | None:
        for attempt, delay in enumerate(
            backoff(initial=RECONNECT_INITIAL, max_delay=RECONNECT_MAX), start=1
        ):
            if self._stopping:
                return None
            await asyncio.sleep(delay)
            try:
                return await self._open(max(self.connect_timeout, 1.0))
            except HiveMindError as exc:
                LOG.debug("OVOS bus reconnect attempt %d failed: %s", attempt, exc)
        return None

    def inject(self, message: dict[str, Any]) -> None:
        """Write ``message`` to the bus (buffered while the bus is away)."""
        text = json.dumps(message, ensure_ascii=False)
        ws = self._ws
        if ws is None:
            if len(self._backlog) == self._backlog.maxlen:
                LOG.warning("OVOS bus unreachable: backlog full, dropping the oldest message")
            self._backlog.append(text)
            return
        self._write(ws, text)

    def ask(self, message: dict[str, Any], answer: AnswerCallback) -> None:
        """Put a QUERY/CASCADE request on the bus and answer with the skills' reply.

        Declines at once when the bus is away (the hub then forwards the
        request instead of waiting), and after ``query_timeout`` seconds
        without an answer.
        """
        ws = self._ws
        if ws is None:
            answer(None)
            return
        address = f"{ASK_PREFIX}{uuid.uuid4().hex}"
        context = message.get("context")
        context = dict(context) if isinstance(context, dict) else {}
        context["source"] = address
        context.setdefault("destination", "skills")
        mtype = message.get("type")
        wanted = "speak" if mtype == "recognizer_loop:utterance" else None
        timer = asyncio.get_running_loop().call_later(
            self.config.query_timeout, self._answered, address, None
        )
        self._asks[address] = (wanted, answer, timer)
        self._write(ws, json.dumps({**message, "context": context}, ensure_ascii=False))

    def _answered(self, address: str, msg: dict[str, Any] | None) -> None:
        """A bus message addressed to one of our requests (None: its time is up)."""
        pending = self._asks.get(address)
        if pending is None:
            return
        wanted, answer, timer = pending
        mtype = msg.get("type") if msg is not None else None
        if msg is not None and wanted is not None and mtype != wanted:
            if mtype not in _UNANSWERED:
                return  # progress messages (handler start, ...): keep waiting
            msg = None
        del self._asks[address]
        timer.cancel()
        answer(msg)

    def client_connected(self, peer: str, session_id: str) -> None:
        """Tell the bus (``hive.client.connect``, without the access key the reference leaks)."""
        self.inject(
            {
                "type": "hive.client.connect",
                "data": {"peer": peer, "session_id": session_id},
                "context": {"source": peer},
            }
        )

    def client_disconnected(self, peer: str) -> None:
        """Tell the bus (``hive.client.disconnect``)."""
        self.inject(
            {"type": "hive.client.disconnect", "data": {"peer": peer}, "context": {"source": peer}}
        )

    async def stop(self) -> None:
        """Close the bus connection (pending QUERY/CASCADE requests are dropped)."""
        self._stopping = True
        for _, _, timer in self._asks.values():
            timer.cancel()
        self._asks.clear()
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
