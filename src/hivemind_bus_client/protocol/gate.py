"""What a received frame must pass before a connection acts on it.

A :class:`FrameGate` holds one link's limits and its replay memory. Peer
input is refused as early and as cheaply as possible (deliberate differences
from the reference, which reads whatever arrives):

* before the handshake completes only JSON text frames of at most
  ``max_handshake_frame`` characters are read; a binary frame is refused
  unopened (close 1002), a bigger one too (1009). Nothing is decrypted,
  inflated or parsed beyond the opening's own small frames;
* later, a frame over ``max_size`` is refused unread (1009), and a compressed
  binary frame may inflate to ``max_inflated`` at most (1009, nothing inflated
  past it);
* once a key exists only a HANDSHAKE may arrive in plaintext (a re-key, or the
  stock client's repeat of its own); a plaintext HELLO, or any other plaintext
  frame, is refused (1008);
* a sealed frame whose nonce was received before (a replay) or was sealed by
  this end (a reflection: one key serves both directions) is dropped, counted,
  logged and reported as a :class:`~hivemind_bus_client.protocol.events.FrameDropped`;
  the link stays open (:mod:`~hivemind_bus_client.protocol.replay`).

JSON nested too deep to parse, and transport messages wrapped more than
:data:`~hivemind_bus_client.protocol.limits.MAX_WRAP_DEPTH` deep, are
decoding errors (1002) like any undecodable frame.
"""

from __future__ import annotations

import logging

from hivemind_bus_client.exceptions import (
    AuthenticationFailed,
    DecodingError,
    PayloadTooBig,
    ProtocolError,
)
from hivemind_bus_client.protocol.encryption import LinkCipher
from hivemind_bus_client.protocol.events import FrameDropped
from hivemind_bus_client.protocol.framing import (
    KEYED_PLAINTEXT_TYPES,
    Opened,
    open_frame_with_nonce,
)
from hivemind_bus_client.protocol.limits import (
    DEFAULT_MAX_HANDSHAKE_FRAME,
    DEFAULT_MAX_INFLATED,
    DEFAULT_MAX_SIZE,
)
from hivemind_bus_client.protocol.replay import DEFAULT_REPLAY_WINDOW, NonceGuard, Verdict

__all__ = ["FrameGate"]

LOG = logging.getLogger(__name__)


class FrameGate:
    """The limits and replay memory of one link (the arguments are the connection's).

    Defaults: 16 MiB per frame, 1 MiB inflated from a compressed binary frame,
    16 KiB per frame before the handshake completes, 1024 nonces remembered
    per direction (:mod:`~hivemind_bus_client.protocol.limits`,
    :mod:`~hivemind_bus_client.protocol.replay`).
    ``replays_dropped`` and ``reflections_dropped`` count the dropped frames.
    """

    __slots__ = (
        "max_handshake_frame",
        "max_inflated",
        "max_size",
        "nonces",
        "reflections_dropped",
        "replays_dropped",
    )

    def __init__(
        self,
        max_size: int = DEFAULT_MAX_SIZE,
        max_inflated: int = DEFAULT_MAX_INFLATED,
        max_handshake_frame: int = DEFAULT_MAX_HANDSHAKE_FRAME,
        replay_window: int = DEFAULT_REPLAY_WINDOW,
    ) -> None:
        self.max_size = max_size
        self.max_inflated = max_inflated
        self.max_handshake_frame = max_handshake_frame
        self.nonces = NonceGuard(replay_window)
        self.replays_dropped = 0
        self.reflections_dropped = 0

    def seal_nonce(self, cipher: LinkCipher) -> bytes:
        """A fresh nonce to seal an outgoing frame with, remembered against reflection."""
        nonce = cipher.fresh_nonce()
        self.nonces.sent(nonce)
        return nonce

    def open(
        self, data: str | bytes, cipher: LinkCipher | None, *, keyed: bool, who: str
    ) -> Opened | FrameDropped:
        """Check and open one received frame.

        Args:
            data: the frame.
            cipher: the link's key, if any.
            keyed: whether the handshake is complete (the link is READY).
            who: how to name the peer in a log line.

        Returns:
            The opened frame, or the :class:`FrameDropped` to report instead.

        Raises:
            HiveMindError: the frame is refused (its ``close_code`` says how).
        """
        self._check_size(data, keyed)
        try:
            opened = open_frame_with_nonce(data, cipher, min(self.max_inflated, self.max_size))
        except RecursionError:
            # Whatever nests too deep for Python is the peer's malformed input.
            raise DecodingError("frame nested too deeply") from None
        if opened.nonce is not None:
            verdict = self.nonces.check(opened.nonce)
            if verdict is not Verdict.FRESH:
                return self._dropped(verdict, who)
        elif keyed:
            if opened.binary:
                raise AuthenticationFailed("unencrypted binary frame on an encrypted link")
            mtype = opened.message.msg_type
            if cipher is not None and mtype not in KEYED_PLAINTEXT_TYPES:
                raise AuthenticationFailed(f"unencrypted {mtype.value} on an encrypted link")
        return opened

    def _check_size(self, data: str | bytes, keyed: bool) -> None:
        if not keyed:
            if not isinstance(data, str):
                # The opening is JSON text only: nothing to decrypt or inflate yet.
                raise ProtocolError("binary frame before the handshake completed")
            if len(data) > self.max_handshake_frame:
                raise PayloadTooBig(
                    f"frame of {len(data)} characters before the handshake completed"
                    f" (limit {self.max_handshake_frame})"
                )
        elif len(data) > self.max_size:
            raise PayloadTooBig(f"frame of {len(data)} bytes exceeds {self.max_size}")

    def _dropped(self, verdict: Verdict, who: str) -> FrameDropped:
        if verdict is Verdict.REPLAY:
            self.replays_dropped += 1
            count = self.replays_dropped
        else:
            self.reflections_dropped += 1
            count = self.reflections_dropped
        # Warn on the 1st, 10th, 100th... so a flood of them cannot flood the log.
        level = logging.WARNING if str(count).rstrip("0") == "1" else logging.DEBUG
        LOG.log(level, "dropped a %s frame from %s (%d so far)", verdict, who, count)
        return FrameDropped(verdict.value, count)
