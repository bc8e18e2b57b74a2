"""The one interface every transport offers a link: a :class:`Channel` of whole frames.

A channel moves frames (``str`` = text frame, ``bytes`` = binary frame) between
this process and one peer. It knows nothing of the protocol: what the frames
mean is the business of the sans-I/O
:class:`~hivemind_bus_client.protocol.connection.Connection` that
:class:`~hivemind_bus_client.transport.driver.LinkDriver` feeds from it.

The contract, for every implementation (websocket, HTTP polling, MQTT, in memory):

* :meth:`Channel.recv` returns the next whole frame, and raises
  :class:`ChannelClosed` once the link has ended, however it ended (peer close,
  our own :meth:`Channel.close`, a dropped socket). A pending ``recv`` is woken
  by ``close``.
* :meth:`Channel.write_nowait` queues one frame and never blocks; frames leave
  in the order they were written. Writing to a closed channel raises
  :class:`ChannelClosed`. A writer that outpaces the peer fills the channel's
  :class:`BoundedBacklog`; when it is full the channel closes itself with
  :attr:`~hivemind_bus_client.exceptions.CloseCode.TRY_AGAIN`.
* :meth:`Channel.close` is idempotent; ``close_code`` / ``close_reason`` then
  say how the link ended (``None`` while open).

:class:`QueueChannel` is a ready-made base for transports whose frames arrive
by other means than a stream (HTTP requests, broker messages, tests): the
producer calls :meth:`QueueChannel.feed` and :meth:`QueueChannel.feed_close`; :func:`channel_pair` joins two of them in memory.
:class:`PumpedChannel` adds the outgoing side of the client's HTTP and MQTT
channels: a backlog that background tasks pump to the peer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

from hivemind_bus_client.exceptions import CloseCode, HiveMindConnectionError

__all__ = [
    "BoundedBacklog",
    "Channel",
    "ChannelClosed",
    "Frame",
    "PumpedChannel",
    "QueueChannel",
    "channel_pair",
    "truncate_reason",
]

#: One websocket-style frame: text (``str``) or binary (``bytes``).
Frame = str | bytes

#: Longest close reason a websocket close frame carries (125 bytes minus the code).
MAX_REASON_BYTES = 120


def truncate_reason(reason: str) -> str:
    """``reason`` cut to what fits in a close frame (on a UTF-8 character boundary)."""
    return reason.encode("utf-8")[:MAX_REASON_BYTES].decode("utf-8", "ignore")


class ChannelClosed(HiveMindConnectionError):
    """The channel has ended: ``code`` and ``reason`` say how.

    Attributes:
        code: the close code (:class:`~hivemind_bus_client.exceptions.CloseCode`;
            ``ABNORMAL`` when the transport dropped without a close).
        reason: the close reason, possibly empty.
        by_peer: True when the other end closed (or the transport dropped),
            False when this end asked for the close.
        error: the local cause, when this end closed because of a fault it
            detected (a :class:`~hivemind_bus_client.exceptions.HiveMindError`).
        greeted: whether the peer had sent at least one frame before the end.
    """

    def __init__(
        self,
        code: int = CloseCode.ABNORMAL,
        reason: str = "",
        *,
        by_peer: bool = True,
        error: BaseException | None = None,
        greeted: bool = True,
    ) -> None:
        self.code = int(code)
        self.reason = reason
        self.by_peer = by_peer
        self.error = error
        self.greeted = greeted
        text = f"channel closed (code {self.code})"
        super().__init__(f"{text}: {reason}" if reason else text)


@runtime_checkable
class Channel(Protocol):
    """A bidirectional link of whole frames (see the module docstring for the contract)."""

    #: Where the peer is, for logs and throttles ("" when unknown).
    peer_address: str

    async def recv(self) -> Frame:
        """The next frame; raises :class:`ChannelClosed` once the link has ended."""
        ...

    def write_nowait(self, frame: Frame) -> None:
        """Queue one frame without blocking; raises :class:`ChannelClosed` if closed."""
        ...

    async def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """End the link (idempotent)."""
        ...

    @property
    def close_code(self) -> int | None:
        """How the link ended, ``None`` while it is open."""
        ...

    @property
    def close_reason(self) -> str:
        """The close reason ("" while open or when none was given)."""
        ...


class BoundedBacklog:
    """A FIFO of outgoing frames bounded in count and in bytes.

    Used by channels whose peer reads slower than the node writes: when
    :meth:`push` refuses a frame the channel must close (``TRY_AGAIN``), so one
    slow consumer can never hold unbounded memory.

    Args:
        max_frames: most frames held at once.
        max_bytes: most bytes (UTF-8 length of text frames) held at once.
    """

    __slots__ = ("_frames", "max_bytes", "max_frames", "nbytes")

    def __init__(self, max_frames: int, max_bytes: int) -> None:
        if max_frames <= 0 or max_bytes <= 0:
            raise ValueError("backlog bounds must be positive")
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._frames: deque[Frame] = deque()

    @staticmethod
    def size_of(frame: Frame) -> int:
        """Bytes ``frame`` occupies on the wire (text frames are UTF-8)."""
        return len(frame.encode("utf-8")) if isinstance(frame, str) else len(frame)

    def push(self, frame: Frame) -> bool:
        """Append ``frame``; False (nothing appended) when either bound would be exceeded."""
        size = self.size_of(frame)
        if len(self._frames) >= self.max_frames or self.nbytes + size > self.max_bytes:
            return False
        self._frames.append(frame)
        self.nbytes += size
        return True

    def pop(self) -> Frame:
        """Remove and return the oldest frame (IndexError when empty)."""
        frame = self._frames.popleft()
        self.nbytes -= self.size_of(frame)
        return frame

    def clear(self) -> None:
        """Drop every queued frame."""
        self._frames.clear()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._frames)

    def __bool__(self) -> bool:
        return bool(self._frames)


class QueueChannel:
    """A channel whose incoming frames are fed by a producer (see the module docstring).

    Subclasses (or the ``sender`` callable) decide what writing means;
    :meth:`write_nowait` hands every frame to ``sender`` in order. The default
    sender keeps frames in :attr:`outbox` (a :class:`BoundedBacklog`) for a
    consumer that drains them, as the hub's HTTP polling listener does.

    Args:
        peer_address: where the peer is, for logs.
        sender: called with each written frame; ``None`` keeps them in ``outbox``.
        max_frames, max_bytes: bounds of ``outbox`` when it is used.
        on_close: called once with (code, reason) when the channel closes by
            :meth:`close` (not when the producer ends it with :meth:`feed_close`).
    """

    def __init__(
        self,
        peer_address: str = "",
        *,
        sender: Callable[[Frame], None] | None = None,
        max_frames: int = 1024,
        max_bytes: int = 64 * 1024 * 1024,
        on_close: Callable[[int, str], None] | None = None,
    ) -> None:
        self.peer_address = peer_address
        self.outbox = BoundedBacklog(max_frames, max_bytes)
        self._sender = sender
        self._on_close = on_close
        self._inbox: asyncio.Queue[Frame | None] = asyncio.Queue()
        self._code: int | None = None
        self._reason = ""
        self._by_peer = True
        self._error: BaseException | None = None

    # -- producer side ---------------------------------------------------------------

    def feed(self, frame: Frame) -> None:
        """A frame arrived from the peer."""
        if self._code is None:
            self._inbox.put_nowait(frame)

    def feed_close(
        self, code: int = CloseCode.NORMAL, reason: str = "", error: BaseException | None = None
    ) -> None:
        """The peer (or the transport) ended the link; ``error`` is the cause, when known."""
        if self._code is None:
            self._code, self._reason, self._by_peer = int(code), reason, True
            self._error = error
            self._inbox.put_nowait(None)

    # -- Channel ---------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once the channel has ended."""
        return self._code is not None

    @property
    def close_code(self) -> int | None:
        return self._code

    @property
    def close_reason(self) -> str:
        return self._reason

    def _ended(self) -> ChannelClosed:
        assert self._code is not None
        return ChannelClosed(self._code, self._reason, by_peer=self._by_peer, error=self._error)

    async def recv(self) -> Frame:
        if self._code is not None and self._inbox.empty():
            raise self._ended()
        frame = await self._inbox.get()
        if frame is None:
            self._inbox.put_nowait(None)  # every later recv ends too
            raise self._ended()
        return frame

    def write_nowait(self, frame: Frame) -> None:
        if self._code is not None:
            raise self._ended()
        if self._sender is not None:
            self._sender(frame)
        elif not self.outbox.push(frame):
            self.close_nowait(CloseCode.TRY_AGAIN, "send queue overflow (slow consumer)")
            raise self._ended()

    def close_nowait(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """:meth:`close` for synchronous callers (the work is synchronous anyway)."""
        if self._code is not None:
            return
        self._code, self._reason, self._by_peer = int(code), reason, False
        self._inbox.put_nowait(None)
        if self._on_close is not None:
            self._on_close(self._code, reason)

    async def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        self.close_nowait(code, reason)


class PumpedChannel(QueueChannel):
    """A :class:`QueueChannel` whose written frames wait in :attr:`backlog` for a
    background task of the subclass to send them (HTTP posts, broker publishes).

    :meth:`write_nowait` queues the frame and wakes the subclass's send task,
    which runs :meth:`_pump` to drain :attr:`backlog`. The subclass keeps
    its background tasks in ``_tasks``; :meth:`_stop_tasks` ends them on close.

    Args:
        peer_address: where the peer is, for logs.
        max_frames, max_bytes: bounds of the outgoing backlog.
        overflow_reason: the close reason when the backlog overflows.
    """

    def __init__(
        self, peer_address: str, *, max_frames: int, max_bytes: int, overflow_reason: str
    ) -> None:
        super().__init__(peer_address)
        self.backlog = BoundedBacklog(max_frames, max_bytes)
        self._more = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._overflow_reason = overflow_reason

    def write_nowait(self, frame: Frame) -> None:
        if self.closed:
            raise self._ended()
        if not self.backlog.push(frame):
            self.close_nowait(CloseCode.TRY_AGAIN, self._overflow_reason)
            raise self._ended()
        self._more.set()

    async def _pump(self, send: Callable[[Frame], Awaitable[object]]) -> None:
        """Hand every written frame to ``send``, in order, until the channel closes."""
        while not self.closed:
            await self._more.wait()
            self._more.clear()
            while self.backlog and not self.closed:
                await send(self.backlog.pop())

    async def _stop_tasks(self) -> None:
        """Cancel the background tasks (except the one calling) and wait for them to end."""
        tasks, self._tasks = self._tasks, []
        others = [task for task in tasks if task is not asyncio.current_task()]
        for task in others:
            task.cancel()
        for task in others:
            with contextlib.suppress(BaseException):
                await task


def channel_pair(address_a: str = "b", address_b: str = "a") -> tuple[QueueChannel, QueueChannel]:
    """Two in-memory channels joined to each other (tests, in-process links).

    A frame written on one is received on the other; closing one ends the other
    with the same code and reason. ``address_a`` is the peer address the first
    channel reports (that of the second end), and the other way round.
    """
    a = QueueChannel(address_a)
    b = QueueChannel(address_b)
    a._sender, b._sender = b.feed, a.feed
    a._on_close, b._on_close = b.feed_close, a.feed_close
    return a, b
