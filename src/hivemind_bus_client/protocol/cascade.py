"""Client-side gathering of CASCADE answers (``docs/hub.md``, routing of CASCADE).

A CASCADE request floods the hive and every node that can answer does, so
the originator receives any number of responses, each carrying
``metadata = {query_id, originator_peer, responder_peer, is_response: true}``.
:class:`CascadeAggregator` buffers the responses of each open request until
``cascade_timeout`` seconds have passed (default 5) or the expected number of
responders has answered, then hands the list to ``cascade_select_callback``
and reports the one it picked.

Like the connection core it is sans-I/O: the caller passes ``now`` and asks
for the next deadline, so the asyncio engine drives it with one timer and
tests drive it without sleeping.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hivemind_bus_client.protocol.message import HiveMessage, HiveMessageType

__all__ = [
    "CascadeAggregator",
    "CascadeResult",
    "first_response",
    "is_response",
    "new_query_id",
    "query_id_of",
]

LOG = logging.getLogger(__name__)

#: Default gathering window in seconds.
DEFAULT_CASCADE_TIMEOUT = 5.0

SelectCallback = Callable[[list[HiveMessage]], "HiveMessage | None"]


def new_query_id() -> str:
    """A fresh ``query_id`` for a QUERY or CASCADE: 32 lowercase hex digits.

    The one id format of this package: the router assigns it to requests that
    arrive without one, and originators (client or hub) use it for their own.
    """
    return uuid.uuid4().hex


def query_id_of(msg: HiveMessage) -> str | None:
    """The ``query_id`` of a QUERY/CASCADE message (outer metadata, then inner)."""
    qid = msg.metadata.get("query_id")
    if not qid and msg.msg_type in (HiveMessageType.QUERY, HiveMessageType.CASCADE):
        inner = msg.payload
        if isinstance(inner, HiveMessage):
            qid = inner.metadata.get("query_id")
    return qid if isinstance(qid, str) and qid else None


def is_response(msg: HiveMessage) -> bool:
    """True for a QUERY/CASCADE answer (``metadata.is_response``)."""
    return bool(msg.metadata.get("is_response"))


def first_response(responses: Sequence[HiveMessage]) -> HiveMessage | None:
    """Default selection: the first answer that arrived (the nearest node, usually)."""
    return responses[0] if responses else None


@dataclass
class CascadeResult:
    """What one CASCADE request gathered."""

    query_id: str
    responses: list[HiveMessage]
    selected: HiveMessage | None
    complete: bool
    """True when the expected number of responders answered before the timeout."""


@dataclass
class _Pending:
    deadline: float
    expected: int | None
    responses: list[HiveMessage] = field(default_factory=list)
    responders: set[str] = field(default_factory=set)


class CascadeAggregator:
    """Buffers CASCADE responses per ``query_id`` (see the module docstring).

    Args:
        cascade_timeout: gathering window per request, in seconds.
        cascade_select_callback: picks one response from the list; ``None``
            means :func:`first_response`. An exception in it is logged and the
            first response is used.
        hive_mapper: optional topology source; when it knows how many nodes the
            hive has (an ``expected_responders()`` method, a ``nodes`` collection,
            or ``len()``), a request resolves as soon as that many answered.
    """

    def __init__(
        self,
        cascade_timeout: float = DEFAULT_CASCADE_TIMEOUT,
        cascade_select_callback: SelectCallback | None = None,
        hive_mapper: Any = None,
    ) -> None:
        self.cascade_timeout = cascade_timeout
        self.cascade_select_callback = cascade_select_callback
        self.hive_mapper = hive_mapper
        self._pending: dict[str, _Pending] = {}

    def _mapper_count(self) -> int | None:
        mapper = self.hive_mapper
        if mapper is None:
            return None
        try:
            if hasattr(mapper, "expected_responders"):
                return int(mapper.expected_responders())
            nodes = getattr(mapper, "nodes", None)
            if nodes is not None:
                return len(nodes)
            return len(mapper)
        except Exception:  # a mapper that cannot tell: fall back to the timeout
            LOG.debug("hive_mapper gave no node count", exc_info=True)
            return None

    def start(
        self,
        query_id: str,
        now: float,
        expected: int | None = None,
        timeout: float | None = None,
    ) -> None:
        """Open a request: responses with ``query_id`` are buffered from now on."""
        if expected is None:
            expected = self._mapper_count()
        window = self.cascade_timeout if timeout is None else timeout
        self._pending[query_id] = _Pending(deadline=now + window, expected=expected)

    def is_pending(self, query_id: str) -> bool:
        """True while ``query_id`` is gathering."""
        return query_id in self._pending

    def add(self, response: HiveMessage, now: float) -> list[CascadeResult]:
        """Buffer one response; returns the requests that completed because of it.

        A response for an unknown ``query_id``, or a second one from the same
        responder, is ignored.
        """
        qid = query_id_of(response)
        pending = self._pending.get(qid) if qid else None
        if pending is None:
            return self.poll(now)
        responder = response.metadata.get("responder_peer") or response.source_peer or ""
        if responder and responder in pending.responders:
            return self.poll(now)
        if responder:
            pending.responders.add(str(responder))
        pending.responses.append(response)
        done = []
        if pending.expected is not None and len(pending.responses) >= pending.expected:
            done.append(self._finish(qid, complete=True))  # type: ignore[arg-type]
        return done + self.poll(now)

    def poll(self, now: float) -> list[CascadeResult]:
        """Finish every request whose window has passed."""
        due = [qid for qid, p in self._pending.items() if p.deadline <= now]
        return [self._finish(qid, complete=False) for qid in due]

    def next_deadline(self) -> float | None:
        """When :meth:`poll` must next be called, or ``None``."""
        return min((p.deadline for p in self._pending.values()), default=None)

    def cancel(self, query_id: str) -> None:
        """Forget a request without selecting anything."""
        self._pending.pop(query_id, None)

    def _finish(self, query_id: str, complete: bool) -> CascadeResult:
        pending = self._pending.pop(query_id)
        responses = pending.responses
        selected: HiveMessage | None = None
        if responses:
            select = self.cascade_select_callback or first_response
            try:
                selected = select(list(responses))
            except Exception:
                LOG.exception("cascade_select_callback failed; using the first response")
                selected = responses[0]
        return CascadeResult(query_id, responses, selected, complete)
