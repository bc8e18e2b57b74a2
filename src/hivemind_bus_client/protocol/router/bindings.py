"""The bindings of open QUERY and CASCADE requests, and their timer heap.

A request this node takes part in is a :class:`Pending` binding
``query_id -> link it came from``. Each binding has two deadlines, kept in
one heap of :class:`TimerEntry`: the local agent's (``TimerKind.LOCAL``) and
the binding's lifetime (``TimerKind.EXPIRE``). Entries are never removed from
the heap; an entry whose binding is gone or whose deadline moved is skipped
when it comes up. What the router does at each deadline is in ``requests``.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hivemind_bus_client.protocol.message import HiveMessage
from hivemind_bus_client.protocol.router.actions import RequestKind

__all__ = ["Bindings", "Pending", "RequestTable", "TimerEntry", "TimerKind"]


class TimerKind(Enum):
    """Which deadline of a binding a timer entry stands for."""

    LOCAL = "local"  #: the local agent's time to answer is up
    EXPIRE = "expire"  #: the binding is forgotten (QUERY: answered with a timeout)


@dataclass(slots=True)
class Pending:
    """A QUERY or CASCADE this node takes part in: where answers must go back to."""

    kind: RequestKind
    query_id: str
    origin: str | None
    request: HiveMessage
    originator: str
    local_deadline: float
    expires: float
    #: QUERY: the request went upstream. CASCADE: unused.
    forwarded: bool = False
    #: The local agent answered, declined or ran out of time.
    local_done: bool = False
    #: Peers of the links the request was sent to: the only ones whose answers count.
    sent_to: frozenset[str] = frozenset()


class Bindings(dict[str, Pending]):
    """``query_id -> Pending`` that keeps a count of bindings per origin link.

    Every way a binding leaves (``del``, ``pop``) goes through the overrides
    below, so the per-link quota is an O(1) lookup.
    """

    def __init__(self) -> None:
        super().__init__()
        self.per_origin: dict[str | None, int] = {}

    def __setitem__(self, key: str, value: Pending) -> None:
        old = self.get(key)
        if old is not None:
            self._forget(old)
        super().__setitem__(key, value)
        self.per_origin[value.origin] = self.per_origin.get(value.origin, 0) + 1

    def __delitem__(self, key: str) -> None:
        self._forget(self[key])
        super().__delitem__(key)

    def pop(self, key: str, *default: Any) -> Any:  # type: ignore[override]
        if key in self:
            self._forget(self[key])
        return super().pop(key, *default)

    def _forget(self, p: Pending) -> None:
        n = self.per_origin.get(p.origin, 0) - 1
        if n > 0:
            self.per_origin[p.origin] = n
        else:
            self.per_origin.pop(p.origin, None)


@dataclass(frozen=True, slots=True, order=True)
class TimerEntry:
    """One deadline in the heap, ordered by ``when`` then insertion order."""

    when: float
    seq: int
    kind: RequestKind = field(compare=False)
    query_id: str = field(compare=False)
    what: TimerKind = field(compare=False)


class RequestTable:
    """The bindings of open QUERY and CASCADE requests and their timer heap."""

    def __init__(self) -> None:
        self.queries = Bindings()
        self.cascades = Bindings()
        self._timers: list[TimerEntry] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self.queries) + len(self.cascades)

    def pending_from(self, origin: str) -> int:
        """Open bindings (QUERY + CASCADE) of requests that came from link ``origin``."""
        return self.queries.per_origin.get(origin, 0) + self.cascades.per_origin.get(origin, 0)

    def of(self, kind: RequestKind) -> Bindings:
        """The bindings of one kind."""
        return self.queries if kind is RequestKind.QUERY else self.cascades

    def add(self, p: Pending) -> None:
        """Bind ``p`` and arm its deadlines (the local one only for a received request)."""
        self.of(p.kind)[p.query_id] = p
        if p.origin is not None:
            self.push(p, TimerKind.LOCAL, p.local_deadline)
        else:
            p.local_done = True
        self.push(p, TimerKind.EXPIRE, p.expires)

    def push(self, p: Pending, what: TimerKind, when: float) -> None:
        """Arm deadline ``what`` of ``p`` at ``when``."""
        self._seq += 1
        heapq.heappush(self._timers, TimerEntry(when, self._seq, p.kind, p.query_id, what))

    def _live(self, entry: TimerEntry) -> Pending | None:
        """The binding ``entry`` still stands for, or None when it is stale."""
        p = self.of(entry.kind).get(entry.query_id)
        if p is None:
            return None
        if entry.what is TimerKind.LOCAL:
            return p if not p.local_done and p.local_deadline == entry.when else None
        return p if p.expires == entry.when else None

    def next_deadline(self) -> float | None:
        """The earliest live deadline, or None."""
        while self._timers and self._live(self._timers[0]) is None:
            heapq.heappop(self._timers)
        return self._timers[0].when if self._timers else None

    def pop_due(self, now: float) -> list[tuple[Pending, TimerKind]]:
        """Remove and return the live deadlines due at ``now``, earliest first."""
        due: list[tuple[Pending, TimerKind]] = []
        while self._timers and self._timers[0].when <= now:
            entry = heapq.heappop(self._timers)
            p = self._live(entry)
            if p is not None:
                due.append((p, entry.what))
        return due
