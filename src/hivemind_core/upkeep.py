"""The hub's background duties: permission reload and the one idle sweep of every transport.

* Permissions: the client database's ``revision()`` is polled; when it moves,
  every connected satellite's record is read again. A link whose record is
  gone, whose key changed or became the reference's ``revoked`` tombstone is
  closed (1008); the others get their new permissions at once.
* Idle links: every satellite link, whatever its transport, has an
  ``idle_timeout`` (websocket and MQTT links the hub's, HTTP links the HTTP
  listener's). One sweep closes those without a sign of life for that long
  (1001). Listeners with bookkeeping of their own to age (the HTTP
  listener's tombstones) add it with :meth:`Upkeep.also`.
* The event loop's lateness, with ``loop_watch`` set (:mod:`hivemind_core.loopwatch`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from hivemind_bus_client.exceptions import CloseCode
from hivemind_bus_client.protocol.router import Permissions
from hivemind_core.admission import REVOKED_KEY
from hivemind_core.loopwatch import watch_loop
from hivemind_core.node import HubNode

__all__ = ["Upkeep", "sweep_interval"]

LOG = logging.getLogger(__name__)


def sweep_interval(idle: float) -> float:
    """How often to look for links idle for ``idle`` seconds: a quarter of it, 50 ms to 5 s."""
    return min(max(idle / 4, 0.05), 5.0)


class Upkeep:
    """Runs the node's background duties (see the module docstring).

    Args:
        node: the hub.
        permission_poll: seconds between checks of the database revision.
    """

    def __init__(self, node: HubNode, permission_poll: float = 1.0) -> None:
        self.node = node
        self.permission_poll = permission_poll
        self._revision: Any = None
        self._idle: set[float] = set()
        self._extras: list[Callable[[float], None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._sweeper: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    # -- life cycle ---------------------------------------------------------------

    def start(self) -> None:
        """Start watching permissions (and sweeping, once an idle timeout is known)."""
        with contextlib.suppress(Exception):
            self._revision = self.node.db.revision()
        self._tasks.append(
            asyncio.get_running_loop().create_task(
                self._watch_permissions(), name="hivemind-permission-watch"
            )
        )
        if self._idle:
            self._start_sweeper()
        cfg = self.node.config
        if cfg.loop_watch > 0:
            self._tasks.append(
                asyncio.get_running_loop().create_task(
                    watch_loop(self.node, cfg.loop_watch, cfg.loop_stall_ms),
                    name="hivemind-loop-watch",
                )
            )

    async def stop(self) -> None:
        """Cancel every duty."""
        tasks = self._tasks + ([self._sweeper] if self._sweeper is not None else [])
        self._tasks, self._sweeper = [], None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def watch_idle(self, idle: float | None) -> None:
        """Links with this ``idle_timeout`` exist: sweep often enough for it."""
        if not idle or idle <= 0:
            return
        self._idle.add(idle)
        self._wake.set()
        if self._tasks and self._sweeper is None:
            self._start_sweeper()

    def also(self, duty: Callable[[float], None]) -> None:
        """Call ``duty(now)`` on every sweep (and sweep at all, for it)."""
        self._extras.append(duty)

    def _start_sweeper(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(
            self._sweep_idle(), name="hivemind-idle-sweep"
        )

    # -- permissions -----------------------------------------------------------------

    def reload_permissions(self) -> None:
        """Re-read every connected client's record; close links whose record is gone."""
        node = self.node
        records = {c.client_id: c for c in node.db.list_clients()}
        for link in list(node.connections):
            old = link.client
            record = records.get(old.client_id)
            if record is None or record.api_key != old.api_key or record.api_key == REVOKED_KEY:
                LOG.info("credentials of %s were revoked; closing", link.peer or link.base_name)
                link.close(CloseCode.POLICY, "credentials revoked")
                continue
            link.client = record
            if link.peer is not None:
                rlink = node.router.links.get(link.peer)
                if rlink is not None:
                    rlink.permissions = Permissions.from_record(record)
        node.count("permission_reloads")

    async def _watch_permissions(self) -> None:
        while True:
            await asyncio.sleep(self.permission_poll)
            try:
                rev = self.node.db.revision()
                if rev != self._revision:
                    self._revision = rev
                    self.reload_permissions()
            except Exception:
                self.node.count("errors")
                LOG.exception("permission reload failed")

    # -- idle links ------------------------------------------------------------------

    def sweep(self, now: float) -> None:
        """Close every link idle past its own timeout; run the extra duties."""
        for link in list(self.node.connections):
            idle = link.idle_timeout
            if not idle or idle <= 0 or link.closing:
                continue
            if link.idle_since(now) < now - idle:
                self.node.count(link.idle_counter)
                link.close(CloseCode.GOING_AWAY, link.idle_reason)
        for duty in self._extras:
            try:
                duty(now)
            except Exception:
                self.node.count("errors")
                LOG.exception("sweep duty failed")

    async def _sweep_idle(self) -> None:
        while True:
            self._wake.clear()
            interval = sweep_interval(min(self._idle)) if self._idle else 5.0
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)
            try:
                self.sweep(self.node.now())
            except Exception:
                self.node.count("errors")
                LOG.exception("idle sweep failed")
