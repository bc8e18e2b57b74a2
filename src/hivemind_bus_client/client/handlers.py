"""Who gets which received message: handler lists, one-shot waiters, fan-out rules.

Shared by every client flavour. The registry is written from user threads and
read on the I/O thread, so writers swap in new tuples under a lock and readers
iterate the tuple they picked up (copy-on-write, no lock on the hot path).

:meth:`HandlerRegistry.collect` turns one received :class:`HiveMessage` into
the list of callback invocations; the client then runs them (the sync client
on its dispatcher thread, the asyncio client on the loop). Waiters are
resolved inside ``collect``, on the I/O thread itself, so a handler blocked
in ``wait_for_response`` on the dispatcher thread is still woken up.

Fan-out rules (what differs from the reference is marked *ours*):

* hive handlers (``on(HiveMessageType.X, fn)``) get every received message of
  type X as a :class:`HiveMessage`;
* *ours*: PING and PONG nested in a transport message (PROPAGATE(PING)) also
  reach the PING/PONG handlers, with the outer route when theirs is empty;
* OVOS handlers (``on("speak", fn)``, ``on_mycroft``) get the OVOS ``Message``
  of every BUS message of that type, and of a BROADCAST(BUS) that targets
  this site or no site;
* binary handlers (``on_bin``) get ``(data, context)`` for BINARY messages,
  ``context`` being the metadata plus ``bin_type``;
* ``on("message", fn)`` gets the JSON text of every non-binary message, as in
  the reference;
* *ours*: a PONG that arrives while nobody listens for PONGs is kept for
  :data:`UNHEARD_PONG_WINDOW` seconds and handed to the first PONG handler
  registered in that time. A PONG only ever answers a PING this client sent,
  and code that emits its PING before registering the handler (as the seed
  docs' topology sample does) would otherwise miss the fastest answers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ovos_bus_client.message import Message

from hivemind_bus_client.protocol.message import (
    TRANSPORT_TYPES,
    HiveMessage,
    HiveMessageType,
    HiveMindBinaryPayloadType,
)

__all__ = ["UNHEARD_PONG_WINDOW", "Callback", "HandlerRegistry", "Waiter", "payload_type_of"]

LOG = logging.getLogger(__name__)

Callback = Callable[..., Any]
Call = tuple[Callback, tuple[Any, ...]]

_HIVE_VALUES = frozenset(m.value for m in HiveMessageType)
_DISCOVERY = frozenset({HiveMessageType.PING, HiveMessageType.PONG})
_RAW_EVENT = "message"
_PONG = HiveMessageType.PONG
#: Seconds an unheard PONG waits for a late PONG handler (see the module docstring).
UNHEARD_PONG_WINDOW = 2.0
_MAX_NESTING = 8
#: Unheard PONGs kept at most; an older one pushed out is counted and logged.
_MAX_UNHEARD = 64


def _same(registered: Callback, fn: Callback) -> bool:
    """``fn`` is ``registered`` (bound methods compare equal, not identical) or what it wraps."""
    return registered == fn or getattr(registered, "__wrapped__", None) == fn


def hive_type(event: Any) -> HiveMessageType | None:
    """The HiveMessageType an ``on()`` event name means, or ``None`` for an OVOS type."""
    if isinstance(event, HiveMessageType):
        return event
    if isinstance(event, str) and event in _HIVE_VALUES:
        return HiveMessageType(event)
    return None


def payload_type_of(msg: HiveMessage) -> str | None:
    """The type of a message's payload: OVOS type, inner msg_type, or a dict's ``type``."""
    if msg.msg_type is HiveMessageType.BINARY:
        return None
    p = msg.payload
    if isinstance(p, Message):
        return p.msg_type
    if isinstance(p, HiveMessage):
        return p.msg_type.value
    if isinstance(p, dict):
        value = p.get("type", p.get("msg_type"))
        return value if isinstance(value, str) else None
    return None


class Waiter:
    """A one-shot wait for a hive message of ``msg_type`` (and payload type).

    ``resolve`` is called once, on the I/O thread, with the matching message.
    """

    __slots__ = ("msg_type", "payload_type", "predicate", "resolve")

    def __init__(
        self,
        msg_type: HiveMessageType,
        resolve: Callable[[HiveMessage], None],
        payload_type: str | None = None,
        predicate: Callable[[HiveMessage], bool] | None = None,
    ) -> None:
        self.msg_type = msg_type
        self.payload_type = payload_type
        self.predicate = predicate
        self.resolve = resolve

    def matches(self, msg: HiveMessage) -> bool:
        """True when ``msg`` is what this waiter waits for."""
        if msg.msg_type is not self.msg_type:
            return False
        if self.payload_type is not None and payload_type_of(msg) != self.payload_type:
            return False
        return self.predicate is None or bool(self.predicate(msg))


class HandlerRegistry:
    """Handlers and waiters of one client (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hive: dict[HiveMessageType, tuple[Callback, ...]] = {}
        self._ovos: dict[str, tuple[Callback, ...]] = {}
        self._bin: dict[int | None, tuple[Callback, ...]] = {}
        self._raw: tuple[Callback, ...] = ()
        self._waiters: tuple[Waiter, ...] = ()
        self._unheard: deque[tuple[float, HiveMessage]] = deque(maxlen=_MAX_UNHEARD)
        #: Unheard PONGs pushed out of the bounded keep by newer ones (see :meth:`collect`).
        self.unheard_evicted = 0

    # -- registration --------------------------------------------------------------

    @staticmethod
    def _add(table: dict[Any, tuple[Callback, ...]], key: Any, fn: Callback) -> None:
        table[key] = (*table.get(key, ()), fn)

    @staticmethod
    def _drop(table: dict[Any, tuple[Callback, ...]], key: Any, fn: Callback) -> bool:
        old = table.get(key, ())
        new = tuple(f for f in old if not _same(f, fn))
        if len(new) == len(old):
            return False
        if new:
            table[key] = new
        else:
            table.pop(key, None)
        return True

    def on(self, event: HiveMessageType | str, fn: Callback) -> list[Call]:
        """A HiveMessageType (or its wire string) -> hive handler; ``"message"`` -> raw
        JSON handler; any other string -> OVOS message handler.

        Returns the calls the client still owes the new handler: the unheard
        PONGs of the last :data:`UNHEARD_PONG_WINDOW` seconds, for a PONG handler.
        """
        if not callable(fn):
            raise TypeError("handler must be callable")
        htype = hive_type(event)
        late: list[Call] = []
        with self._lock:
            if htype is _PONG and self._unheard:
                now = time.monotonic()
                late = [(fn, (m,)) for t, m in self._unheard if now - t <= UNHEARD_PONG_WINDOW]
                self._unheard.clear()
            if htype is not None:
                self._add(self._hive, htype, fn)
            elif event == _RAW_EVENT:
                self._raw = (*self._raw, fn)
            else:
                self._add(self._ovos, str(event), fn)
        return late

    def on_mycroft(self, msg_type: str, fn: Callback) -> None:
        """OVOS handler for BUS payloads of ``msg_type`` (even one named like a hive type)."""
        if not callable(fn):
            raise TypeError("handler must be callable")
        with self._lock:
            self._add(self._ovos, str(msg_type), fn)

    def on_bin(self, event: Any, fn: Callback) -> None:
        """Binary handler ``fn(data, context)``.

        ``event`` is ``HiveMessageType.BINARY`` (every binary message) or a
        :class:`HiveMindBinaryPayloadType` (only that kind).
        """
        if not callable(fn):
            raise TypeError("handler must be callable")
        key = self._bin_key(event)
        with self._lock:
            self._add(self._bin, key, fn)

    @staticmethod
    def _bin_key(event: Any) -> int | None:
        if hive_type(event) is HiveMessageType.BINARY or event is None:
            return None
        if isinstance(event, int) and not isinstance(event, bool):
            return int(event)
        raise ValueError(
            f"on_bin takes HiveMessageType.BINARY or a HiveMindBinaryPayloadType, not {event!r}"
        )

    def remove(self, event: Any, fn: Callback) -> bool:
        """Unregister ``fn`` for ``event`` wherever it was registered; ``True`` if found."""
        with self._lock:
            found = False
            htype = hive_type(event)
            if htype is not None:
                found |= self._drop(self._hive, htype, fn)
                if htype is HiveMessageType.BINARY:
                    found |= self._drop(self._bin, None, fn)
            elif event == _RAW_EVENT:
                old = self._raw
                self._raw = tuple(f for f in old if not _same(f, fn))
                found |= len(old) != len(self._raw)
            if isinstance(event, int) and not isinstance(event, bool):
                found |= self._drop(self._bin, int(event), fn)
            if isinstance(event, str):
                found |= self._drop(self._ovos, str(event), fn)
            return found

    def remove_all_listeners(self, event: Any = None) -> None:
        """Drop every handler of ``event``, or every handler at all when ``None``."""
        with self._lock:
            if event is None:
                self._hive, self._ovos, self._bin, self._raw = {}, {}, {}, ()
                return
            htype = hive_type(event)
            if htype is not None:
                self._hive.pop(htype, None)
                if htype is HiveMessageType.BINARY:
                    self._bin.clear()
            elif event == _RAW_EVENT:
                self._raw = ()
            if isinstance(event, str):
                self._ovos.pop(str(event), None)
            elif isinstance(event, int):
                self._bin.pop(int(event), None)

    def add_waiter(self, waiter: Waiter) -> None:
        """Register a one-shot waiter."""
        with self._lock:
            self._waiters = (*self._waiters, waiter)

    def remove_waiter(self, waiter: Waiter) -> None:
        """Forget a waiter (after a timeout)."""
        with self._lock:
            self._waiters = tuple(w for w in self._waiters if w is not waiter)

    def counts(self) -> dict[str, int]:
        """How many handlers of each kind are registered (for tests and debugging)."""
        return {
            "hive": sum(map(len, self._hive.values())),
            "ovos": sum(map(len, self._ovos.values())),
            "bin": sum(map(len, self._bin.values())),
            "raw": len(self._raw),
            "waiters": len(self._waiters),
        }

    # -- delivery ------------------------------------------------------------------

    def collect(self, msg: HiveMessage, site_id: str | None) -> list[Call]:
        """Resolve matching waiters and return the handler calls for ``msg``."""
        calls: list[Call] = []
        if msg.msg_type is HiveMessageType.BINARY:
            self._hive_deliver(msg, calls)
            context = dict(msg.metadata)
            context["bin_type"] = msg.bin_type
            bins = self._bin
            for fn in (*bins.get(None, ()), *bins.get(int(msg.bin_type), ())):
                calls.append((fn, (msg.payload, context)))
            return calls
        if self._raw:
            text = msg.serialize()
            calls.extend((fn, (text,)) for fn in self._raw)
        self._hive_deliver(msg, calls)
        self._nested(msg, msg, calls, 0)
        for ovos in ovos_deliveries(msg, site_id):
            calls.extend((fn, (ovos,)) for fn in self._ovos.get(ovos.msg_type, ()))
        return calls

    def _hive_deliver(self, msg: HiveMessage, calls: list[Call]) -> None:
        waiters = self._waiters
        heard = False
        if waiters:
            hit = [w for w in waiters if w.matches(msg)]
            if hit:
                with self._lock:
                    self._waiters = tuple(w for w in self._waiters if w not in hit)
                for w in hit:
                    try:
                        w.resolve(msg)
                    except Exception:  # a waiter that already gave up
                        LOG.debug("waiter resolve failed", exc_info=True)
                heard = True
        handlers = self._hive.get(msg.msg_type, ())
        calls.extend((fn, (msg,)) for fn in handlers)
        if msg.msg_type is _PONG and not handlers and not heard:
            with self._lock:
                if len(self._unheard) == _MAX_UNHEARD:
                    self.unheard_evicted += 1
                    LOG.info(
                        "more than %d PONGs unheard: the oldest is dropped (%d so far)",
                        _MAX_UNHEARD,
                        self.unheard_evicted,
                    )
                self._unheard.append((time.monotonic(), msg))

    def _nested(self, outer: HiveMessage, msg: HiveMessage, calls: list[Call], depth: int) -> None:
        if msg.msg_type not in TRANSPORT_TYPES or depth >= _MAX_NESTING:
            return
        inner = msg.payload
        if not isinstance(inner, HiveMessage):
            return
        if inner.msg_type in _DISCOVERY:
            if not inner.route and outer.route:
                inner.route = list(outer.route)
            self._hive_deliver(inner, calls)
        self._nested(outer, inner, calls, depth + 1)


def ovos_deliveries(msg: HiveMessage, site_id: str | None) -> list[Message]:
    """OVOS messages in ``msg`` that local OVOS handlers should see."""
    mtype = msg.msg_type
    if mtype is HiveMessageType.BUS:
        p = msg.payload
        return [p] if isinstance(p, Message) else []
    if mtype is HiveMessageType.BROADCAST:
        inner = msg.payload
        target = msg.target_site_id
        if isinstance(inner, HiveMessage) and inner.msg_type is HiveMessageType.BUS:
            target = target or inner.target_site_id
            if target is None or target == site_id:
                p = inner.payload
                return [p] if isinstance(p, Message) else []
    return []


def bin_type_name(value: int) -> str:
    """Readable name of a binary payload type."""
    try:
        return HiveMindBinaryPayloadType(value).name
    except ValueError:
        return str(value)
