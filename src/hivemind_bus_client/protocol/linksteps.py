"""The version-dependent steps of a :class:`~hivemind_bus_client.protocol.connection.Connection`.

:class:`LinkSteps` is a base class of ``Connection`` and nothing else: it
holds what the connection does differently for protocol v1 and v3, so the
state machine in ``connection.py`` stays one readable page.

* the hub's offer and every HANDSHAKE payload, both roles: v1 through
  :mod:`~hivemind_bus_client.protocol.handshake`, v3 through the connection's
  :class:`~hivemind_bus_client.protocol.v3link.V3Link` (``conn.v3``);
* the v3 PSK hand-off, :meth:`LinkSteps.provide_psk`, and the hub's v1 key
  hand-off, :meth:`LinkSteps.provide_key` (with ``defer_keys``: the PBKDF2 or
  RSA seal runs where the caller likes, off its event loop; frames that come
  meanwhile are held in order, at most ``HOLD_FRAMES`` and ``hold_bytes``);
* the frames of a keyed v3 session (Noise transport, any bad frame fatal).

A hub with v3 settings still serves v1 clients: a client HANDSHAKE without
``noise`` goes the v1 way, unless the settings require v3.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hivemind_bus_client.exceptions import (
    HiveMindError,
    InvalidState,
    PayloadTooBig,
    ProtocolError,
)
from hivemind_bus_client.protocol import crypto, handshake
from hivemind_bus_client.protocol.encryption import LinkCipher
from hivemind_bus_client.protocol.events import Event, KeyNeeded
from hivemind_bus_client.protocol.gate import FrameGate
from hivemind_bus_client.protocol.handshake import HandshakeMode, HubAnswer, KeyJob
from hivemind_bus_client.protocol.message import HiveMessage, HiveMessageType
from hivemind_bus_client.protocol.states import Role, State
from hivemind_bus_client.protocol.v3link import V3Link, V3Step

__all__ = ["HOLD_FRAMES", "LinkSteps"]

_SHAKE = HiveMessageType.HANDSHAKE
#: Frames a hub link holds while its key is derived (a client waiting for our
#: answer sends little: a repeat of its HANDSHAKE, frames already in flight).
HOLD_FRAMES = 32


class LinkSteps:
    """The handshake steps of both versions and the v3 session (see the module docstring)."""

    # What the steps read and write; ``Connection`` defines all of it.
    role: Role
    state: State
    v3: V3Link | None
    password: str | None
    crypto_key: str | bytes | None
    private_key: crypto.PrivateKey | None
    peer_public_key: crypto.PublicKey | None
    encodings: list[str]
    ciphers: list[str]
    want_binarize: bool
    prefer_own_order: bool
    binarize: bool
    #: Hub: ``fresh_iv(iv)`` is False for a password IV already used with this
    #: key (a replayed HANDSHAKE, refused before any key derivation).
    fresh_iv: Callable[[bytes], bool] | None = None
    #: Hub, v1: ask for each HANDSHAKE's key with a :class:`KeyNeeded` event
    #: (answered by :meth:`provide_key`) instead of deriving it on the spot.
    defer_keys: bool = False
    #: The checked HANDSHAKE waiting for its key, and the frames held meanwhile.
    _key_job: KeyJob | None = None
    _held: list[str | bytes]
    _held_bytes: int = 0
    gate: FrameGate
    cipher: LinkCipher | None
    mode: HandshakeMode | None
    peer_hello: dict[str, Any]
    peer_offer: dict[str, Any]
    _events: list[Event]
    _iv: bytes | None

    if TYPE_CHECKING:

        def encode(self, message: HiveMessage) -> str | bytes: ...
        def _dispatch(self, msg: HiveMessage, binary: bool) -> None: ...
        def _keyed(self, link: LinkCipher | None, mode: HandshakeMode) -> None: ...
        def _queue_plain(self, mtype: HiveMessageType, payload: dict[str, Any]) -> None: ...
        def _fail(self, exc: HiveMindError) -> None: ...
        def _receive(self, data: str | bytes) -> None: ...

    # -- public ----------------------------------------------------------------------

    def provide_psk(self, psk: bytes) -> None:
        """v3: hand in the 32-byte PSK a :class:`~hivemind_bus_client.protocol.events.PSKNeeded` asked for.

        The handshake then goes on: drain :meth:`events` and
        :meth:`frames_to_send` afterwards, as after a received frame. Ignored
        once the link is closing or closed (a derivation that finished late).

        Raises:
            InvalidState: not a v3 link, not 32 bytes, or a PSK is already set.
        """
        if self.v3 is None:
            raise InvalidState("provide_psk on a link without v3 settings")
        if self.state in (State.CLOSING, State.CLOSED):
            return
        self.v3.provide_psk(psk)
        try:
            self._v3_apply(self.v3.resume())
        except HiveMindError as exc:
            self._fail(exc)

    def provide_key(self, answer: HubAnswer) -> None:
        """Hub: hand in ``handshake.hub_finish(event.job)`` for a :class:`KeyNeeded`.

        The reply goes out, the link is keyed, then the frames held meanwhile
        are read in order. Drain :meth:`events` and :meth:`frames_to_send`
        afterwards. Ignored once the link is closing or closed (a derivation
        that finished late).

        Raises:
            InvalidState: no key was asked for.
        """
        if self.state in (State.CLOSING, State.CLOSED):
            return
        if self._key_job is None:
            raise InvalidState("provide_key without a KeyNeeded")
        self._key_job = None
        self._hub_answered(answer)
        while self._held and self._key_job is None:
            if self.state in (State.CLOSING, State.CLOSED):
                break
            frame = self._held.pop(0)
            self._held_bytes -= len(frame)
            self._receive(frame)
        if self._key_job is None:
            self._held, self._held_bytes = [], 0

    def refuse_key(self, error: HiveMindError) -> None:
        """Hub: do not answer the pending :class:`KeyNeeded`; close with ``error``'s code.

        For a refusal made by the caller (too many handshakes, no worker free);
        ignored once closing or closed.
        """
        if self.state in (State.CLOSING, State.CLOSED):
            return
        self._key_job, self._held, self._held_bytes = None, [], 0
        self._fail(error)

    def hold_bytes(self) -> int:
        """Bytes of frames a link holds while its key is derived: four handshake
        frames, or one inflated message once keyed (a re-key of a busy link)."""
        gate = self.gate
        if self.state is State.READY:
            return max(4 * gate.max_handshake_frame, gate.max_inflated)
        return 4 * gate.max_handshake_frame

    def _hold(self, data: str | bytes) -> None:
        """Keep a frame that came while the key is derived; too many close the link."""
        self._held.append(data)
        self._held_bytes += len(data)
        if len(self._held) > HOLD_FRAMES or self._held_bytes > self.hold_bytes():
            self.refuse_key(PayloadTooBig("too much sent while the handshake key is derived"))

    def encode_frames(self, message: HiveMessage) -> list[str | bytes]:
        """All the frames carrying ``message`` on this link, to write in order.

        v1: one frame (:meth:`encode`). v3: one binary frame, or several when
        the message is chunked; each consumes a counter, so every one must be
        written, in this order, before any other frame of this link.
        """
        if self.v3 is not None and self.v3.in_session:
            return list(self.v3.encode(message))
        return [self.encode(message)]

    # -- the hub's offer, the HANDSHAKE payloads ----------------------------------------

    def _hub_offer(self, hello: dict[str, Any]) -> None:
        """Queue the offer that follows ``hello`` (v3 settings: the v3 offer)."""
        offer = handshake.hub_offer(self)
        if self.v3 is None:
            self._queue_plain(_SHAKE, offer)
        else:
            self._v3_apply(self.v3.hub_open(hello, offer, self.want_binarize))

    def _on_handshake(self, payload: Any) -> None:
        if self.role is Role.HUB:
            if self.v3 is not None and self.v3.hub_takes(payload):
                self._v3_apply(self.v3.hub_receive(payload))
            else:
                self._hub_handshake(payload)  # refuses a non-object payload itself
        elif not isinstance(payload, dict):
            raise ProtocolError("HANDSHAKE payload must be an object")
        elif "envelope" in payload:
            self._client_finish(payload)
        elif self.v3 is not None and self.v3.running:
            self._v3_apply(self.v3.client_receive(payload))
        else:
            self._client_offer(payload)

    def _hub_handshake(self, payload: Any) -> None:
        job = handshake.hub_check(payload, self)
        if self.defer_keys:
            self._key_job = job
            self._events.append(KeyNeeded(job.mode.value, self.state is State.READY, job))
            return
        self._hub_answered(handshake.hub_finish(job))

    def _hub_answered(self, answer: HubAnswer) -> None:
        self.binarize = answer.binarize
        # The reply goes out in plaintext (the client cannot have the new key yet).
        self._queue_plain(_SHAKE, answer.reply)
        self._keyed(answer.cipher, answer.mode)

    def _client_offer(self, offer: dict[str, Any]) -> None:
        if self.peer_offer or self.state is not State.HANDSHAKING:
            # A hub re-sends its offer to clients that seem to have missed it;
            # ours answered the first one already.
            return
        self.peer_offer = offer
        if self.v3 is not None and self.v3.client_wants(
            self.peer_hello, offer, self.password is not None
        ):
            self._v3_apply(self.v3.client_start())
            return
        step = handshake.client_reply(offer, self)
        self.mode, self._iv, self.binarize = step.mode, step.iv, step.binarize
        if step.reply is None:
            # Pre-shared key only: no key exchange, the key is already in force.
            self._keyed(self.cipher, HandshakeMode.PRESHARED)
        else:
            self._queue_plain(_SHAKE, step.reply)

    def _client_finish(self, answer: dict[str, Any]) -> None:
        link = handshake.client_finish(answer, self, self.mode, self._iv)
        self._keyed(link, self.mode or HandshakeMode.PASSWORD)

    # -- v3 ---------------------------------------------------------------------------

    def _v3_apply(self, step: V3Step) -> None:
        """Report, send and key as a v3 step says (see ``V3Step``)."""
        self._events.extend(step.events)
        if step.reply is not None:
            self._queue_plain(_SHAKE, step.reply)
        if step.done and self.v3 is not None:
            self.binarize = self.v3.binarize
            self._keyed(None, HandshakeMode.NOISE)

    def _v3_frame(self, data: str | bytes) -> None:
        """A frame on a v3 session: Noise transport only; a HANDSHAKE inside is ignored."""
        assert self.v3 is not None
        try:
            opened = self.v3.decode(data)
            if opened is not None and opened[0].msg_type is not _SHAKE:
                self._dispatch(*opened)
        except HiveMindError as exc:
            self._fail(exc)
