"""Replay and reflection memory of one protocol v1 link.

A v1 link has no sequence numbers: every sealed frame carries a random nonce
and one key serves both directions. So a captured frame authenticates every
time it is resent, and a frame this end sent authenticates when the peer (or
anyone on the path) sends it back. :class:`NonceGuard` remembers the nonces
of the last ``window`` frames received and of the last ``window`` frames this
end sealed; the connection drops a received frame whose nonce is in either.

The memory is bounded: a frame older than the window (``window`` frames
later) is no longer recognised. Protocol v3 numbers its frames and needs no
such memory. Each remembered nonce costs about 120 bytes, so the default of
1024 per direction is at most about 250 KiB per link, reached only by a link
that has carried that many frames under one key.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["DEFAULT_REPLAY_WINDOW", "NonceGuard", "Verdict"]

#: Nonces remembered per direction on each link (see the module docstring).
DEFAULT_REPLAY_WINDOW = 1024


class Verdict(str, Enum):
    """What :meth:`NonceGuard.check` makes of a received nonce."""

    FRESH = "fresh"  #: never seen: act on the frame
    REPLAY = "replay"  #: the peer's own frame, received before
    REFLECTION = "reflection"  #: a frame this end sealed, sent back

    def __str__(self) -> str:
        return self.value


class _Window:
    """A set of at most ``size`` items that forgets the oldest first."""

    __slots__ = ("items", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        # A dict keeps insertion order: its first key is the oldest.
        self.items: dict[bytes, None] = {}

    def add(self, item: bytes) -> None:
        items = self.items
        items[item] = None
        if len(items) > self.size:
            del items[next(iter(items))]


class NonceGuard:
    """Per-link memory of received and sent nonces (``window`` of each; 0 turns it off)."""

    __slots__ = ("_received", "_sent", "window")

    def __init__(self, window: int = DEFAULT_REPLAY_WINDOW) -> None:
        if window < 0:
            raise ValueError("the replay window cannot be negative")
        self.window = window
        self._received = _Window(window)
        self._sent = _Window(window)

    def sent(self, nonce: bytes) -> None:
        """Remember the nonce of a frame this end sealed."""
        if self.window:
            self._sent.add(nonce)

    def check(self, nonce: bytes) -> Verdict:
        """Classify the nonce of an authenticated received frame and remember it."""
        if not self.window:
            return Verdict.FRESH
        if nonce in self._sent.items:
            return Verdict.REFLECTION
        if nonce in self._received.items:
            return Verdict.REPLAY
        self._received.add(nonce)
        return Verdict.FRESH

    def reset(self) -> None:
        """Forget everything (a new key: frames of the old one no longer authenticate)."""
        self._received = _Window(self.window)
        self._sent = _Window(self.window)

    def __len__(self) -> int:
        return len(self._received.items) + len(self._sent.items)
