"""The channel under one MQTT satellite link, and the outbox every publish goes through.

Kept apart from :mod:`.mqtt` (the listener) so each stays small: a
:class:`BrokerChannel` only publishes through, and reports its close to, an
object with ``topic``, ``publish`` and ``notify`` (:class:`Publisher`); the
listener queues each publish in its :class:`BrokerOutbox`, which one task
drains in order, so writes never wait.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from hivemind_bus_client.transport import mqtt as wire
from hivemind_bus_client.transport.channel import Frame, QueueChannel

__all__ = ["BrokerChannel", "BrokerOutbox", "Publisher"]

LOG = logging.getLogger(__name__)


class Publisher(Protocol):
    """What a :class:`BrokerChannel` needs of its listener."""

    def topic(self, ident: str, direction: str) -> str:
        """``<prefix>/<ident>/<direction>``."""

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """Queue one publish (never waits)."""

    def notify(self, key: str, code: int, reason: str) -> None:
        """Tell the satellite of ``key`` that its link ended, and why."""


class BrokerChannel(QueueChannel):
    """The channel of one MQTT satellite: frames are published on its ``/out`` topic.

    Frames from the satellite are fed by the listener. When the hub closes the
    channel, the satellite is told on its status topic, unless :attr:`notify`
    was cleared (it left or restarted itself).
    """

    def __init__(self, listener: Publisher, key: str) -> None:
        super().__init__(wire.key_address(key), sender=self._publish, on_close=self._closed)
        self.listener = listener
        self.key = key
        #: Tell the satellite when the link ends (not when it left or restarted itself).
        self.notify = True
        self._out = listener.topic(key, "out")

    def _publish(self, frame: Frame) -> None:
        self.listener.publish(self._out, wire.payload_of(frame))

    def _closed(self, code: int, reason: str) -> None:
        if self.notify:
            self.listener.notify(self.key, code, reason)


class BrokerOutbox:
    """Publishes waiting for the broker, drained in order by :meth:`run`.

    Args:
        node: the hub (stats).
        limit: publishes queued before new ones are dropped (``mqtt_outbox_overflow``).
        qos: the QoS of every publish.
        client: the current broker connection (None while it is lost: the
            batch is dropped and counted ``mqtt_publish_failed``).
    """

    def __init__(self, node: Any, limit: int, qos: int, client: Callable[[], Any]) -> None:
        self.node = node
        self.limit = limit
        self.qos = qos
        self.client = client
        self.queue: deque[tuple[str, bytes, bool]] = deque()
        self.wake = asyncio.Event()
        #: Set while nothing waits to be published.
        self.idle = asyncio.Event()
        self.idle.set()

    def put(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """Queue one publish (never waits); dropped and counted when the outbox is full."""
        if len(self.queue) >= self.limit:
            self.node.count("mqtt_outbox_overflow")
            LOG.warning("MQTT outbox full (%d); dropped a publish to %s", self.limit, topic)
            return
        self.queue.append((topic, payload, retain))
        self.idle.clear()
        self.wake.set()

    async def run(self) -> None:
        """Drain the outbox in order; each batch is pipelined (paho writes in call order)."""
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.queue:
                batch = list(self.queue)
                self.queue.clear()
                client = self.client()
                if client is None:
                    self.node.count("mqtt_publish_failed", len(batch))
                    continue
                results = await asyncio.gather(
                    *(client.publish(t, p, qos=self.qos, retain=r) for t, p, r in batch),
                    return_exceptions=True,
                )
                failed = [r for r in results if isinstance(r, BaseException)]
                if failed:
                    self.node.count("mqtt_publish_failed", len(failed))
                    LOG.warning("%d MQTT publish(es) failed: %s", len(failed), failed[0])
            self.idle.set()
