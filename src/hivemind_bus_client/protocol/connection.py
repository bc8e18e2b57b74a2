"""One HiveMind link as a sans-I/O state machine, used by both ends.

Theory of operation
-------------------
A :class:`Connection` never touches a socket, a thread or a clock. The I/O
layer feeds it every received websocket frame with :meth:`Connection.receive_frame`
(``str`` for text frames, ``bytes`` for binary ones), then drains
:meth:`Connection.events` (what happened) and :meth:`Connection.frames_to_send`
(what to write, again ``str`` or ``bytes``). Messages to send go in through
:meth:`Connection.send`. Time comes in as ``now`` arguments; the connection
publishes its next deadline with :meth:`Connection.get_timer`.

Protocol v3 (Noise, ``docs/protocol-v3.md``) is the ``v3`` keyword: the hub
offers it beside v1, the client runs it when the offer qualifies. The steps
that differ by version are :class:`~hivemind_bus_client.protocol.linksteps.LinkSteps`
(a base class); the v3 state is ``conn.v3``, a
:class:`~hivemind_bus_client.protocol.v3link.V3Link`. Once keyed by v3 every
frame is a Noise transport message, and any bad one closes 1008.

The hub speaks first: plaintext HELLO and HANDSHAKE offer; the key exchange
(:mod:`~hivemind_bus_client.protocol.handshake`); then each side's HELLO,
encrypted. The state only changes through the table
:data:`~hivemind_bus_client.protocol.states.TRANSITIONS`, and what may arrive
in each state is :data:`~hivemind_bus_client.protocol.states.ACCEPTS`:
``HANDSHAKING`` until a key is agreed, then ``READY``; a peer fault or
:meth:`Connection.close` moves to ``CLOSING`` (a :class:`CloseRequested` event
carries the close code the I/O layer must use), :meth:`Connection.connection_lost`
to ``CLOSED``. Failure is sticky: a closing or closed connection ignores input.

What a received frame must pass first (size limits, the plaintext rules of a keyed
link, replay and reflection checks) is :class:`~hivemind_bus_client.protocol.gate.FrameGate`'s.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from hivemind_bus_client.exceptions import (
    CloseCode,
    CryptoError,
    HiveMindError,
    InvalidState,
    ProtocolError,
)
from hivemind_bus_client.protocol import crypto, handshake, legacy, limits, replay
from hivemind_bus_client.protocol.encodings import SupportedEncodings, get_encoding
from hivemind_bus_client.protocol.encryption import LinkCipher, SupportedCiphers, get_cipher
from hivemind_bus_client.protocol.events import (
    CloseRequested,
    Event,
    FrameDropped,
    HandshakeComplete,
    HelloReceived,
    MessageReceived,
    PSKNeeded,
)
from hivemind_bus_client.protocol.framing import encode_message
from hivemind_bus_client.protocol.gate import FrameGate
from hivemind_bus_client.protocol.handshake import (
    CLIENT_CIPHERS,
    CLIENT_ENCODINGS,
    HUB_CIPHERS,
    HUB_ENCODINGS,
    HandshakeMode,
)
from hivemind_bus_client.protocol.linksteps import LinkSteps
from hivemind_bus_client.protocol.message import HiveMessage, HiveMessageType
from hivemind_bus_client.protocol.states import ACCEPTS, TRANSITIONS, Inbound, Role, State, Trigger
from hivemind_bus_client.protocol.v3link import V3Link, V3Settings

__all__ = [
    "CLIENT_CIPHERS",
    "CLIENT_ENCODINGS",
    "HUB_CIPHERS",
    "HUB_ENCODINGS",
    "CloseRequested",
    "Connection",
    "Event",
    "FrameDropped",
    "HandshakeComplete",
    "HelloReceived",
    "MessageReceived",
    "PSKNeeded",
    "Role",
    "State",
    "V3Settings",
]

LOG = logging.getLogger(__name__)

_HELLO = HiveMessageType.HELLO
_SHAKE = HiveMessageType.HANDSHAKE
_KIND_OF = {_SHAKE: Inbound.HANDSHAKE, _HELLO: Inbound.HELLO}


class Connection(LinkSteps):
    """The protocol state of one link (see the module docstring).

    Args:
        role: ``Role.HUB`` for the listening end, ``Role.CLIENT`` for the satellite.
        password: the shared password (password handshake).
        crypto_key: legacy pre-shared key (16 characters → AES-128-GCM, JSON-HEX).
        allow_v0: hub: a row with ``crypto_key`` may skip the handshake (protocol v0).
        private_key: this node's RSA key: the hub signs RSA handshakes with it and
            announces its public half; a client without password uses it for the
            RSA handshake.
        peer_public_key: the other end's RSA public key, when known beforehand
            (a client then verifies the hub's RSA handshake signature).
        encodings: client: offered, in order; hub: accepted, in order of preference.
        ciphers: likewise for ciphers.
        binarize: whether this end wants binary frames (both ends must).
        compress: zlib-compress binary frames (reference peers can only read
            compressed ones, so keep the default).
        prefer_own_order: hub only: choose by its own preference order instead of
            the client's (the reference uses the client's order).
        peer: hub only: peer string announced in the first HELLO.
        node_id: hub only: this node's id announced in HELLO.
        hello: client only: the HELLO payload sent once keyed (``session``,
            ``site_id``, ``pubkey``).
        handshake_timeout: seconds from :meth:`start` until the link must be READY.
        max_size, max_inflated, max_handshake_frame, replay_window: the limits of
            :attr:`gate` (:class:`~hivemind_bus_client.protocol.gate.FrameGate`, which
            also counts ``replays_dropped`` and ``reflections_dropped``).
        resend_offer: hub only: seconds after :meth:`start` at which HELLO and the
            offer are sent again while the client is silent (the stock 0.4.4 client
            misses a prompt offer and would wait 5 s; one re-send, since each offer
            it handles costs it a second and starts a new key exchange).
        v3: protocol v3 settings (keys, PSK, pin, version bounds:
            :class:`~hivemind_bus_client.protocol.v3link.V3Settings`); ``None``: v1 only.
            A v3 hub never re-sends its offer (a client still deriving its PSK is silent).
            Without a PSK in them, answer :class:`PSKNeeded` with :meth:`provide_psk`.
    """

    def __init__(
        self,
        role: Role,
        *,
        password: str | None = None,
        crypto_key: str | bytes | None = None,
        private_key: crypto.PrivateKey | None = None,
        peer_public_key: crypto.PublicKey | None = None,
        encodings: Sequence[str | SupportedEncodings] | None = None,
        ciphers: Sequence[str | SupportedCiphers] | None = None,
        binarize: bool = False,
        compress: bool = True,
        prefer_own_order: bool = True,
        peer: str | None = None,
        node_id: str | None = None,
        hello: dict[str, Any] | None = None,
        v3: V3Settings | None = None,
        handshake_timeout: float = 20.0,
        max_size: int = limits.DEFAULT_MAX_SIZE,
        resend_offer: Sequence[float] = (0.6,),
        max_inflated: int = limits.DEFAULT_MAX_INFLATED,
        max_handshake_frame: int = limits.DEFAULT_MAX_HANDSHAKE_FRAME,
        replay_window: int = replay.DEFAULT_REPLAY_WINDOW,
        allow_v0: bool = True,
    ) -> None:
        self.role = role
        self.allow_v0 = allow_v0
        self.state = State.HANDSHAKING
        self.password = password
        self.crypto_key = crypto_key
        self.private_key = private_key
        self.peer_public_key = peer_public_key
        default_enc = HUB_ENCODINGS if role is Role.HUB else CLIENT_ENCODINGS
        default_ciph = HUB_CIPHERS if role is Role.HUB else CLIENT_CIPHERS
        self.encodings = handshake.resolve_names(encodings or default_enc, get_encoding)
        self.ciphers = handshake.resolve_names(ciphers or default_ciph, get_cipher)
        self.want_binarize = binarize
        self.compress = compress
        self.prefer_own_order = prefer_own_order
        self.peer = peer
        self.node_id = node_id
        self.hello = hello or {}
        self.handshake_timeout = handshake_timeout
        self.gate = FrameGate(max_size, max_inflated, max_handshake_frame, replay_window)
        self.resend_offer = tuple(sorted(resend_offer))
        self.v3 = V3Link(role, v3) if v3 is not None else None

        #: Negotiated values (valid once READY).
        self.binarize = False
        self.cipher: LinkCipher | None = None
        self.mode: HandshakeMode | None = None
        #: What the peer told us in its HELLO / HANDSHAKE.
        self.peer_hello: dict[str, Any] = {}
        self.peer_offer: dict[str, Any] = {}
        self.close_code: int | None = None
        self.close_reason = ""

        self._events: list[Event] = []
        self._out: list[str | bytes] = []
        self._held: list[str | bytes] = []
        self._deadline: float | None = None
        self._iv: bytes | None = None
        self._hello_sent = False
        self._offer: list[str | bytes] = []
        self._resends: list[float] = []
        self.frames_in = 0
        self.frames_out = 0

    # -- public API ------------------------------------------------------------

    def start(self, now: float = 0.0) -> None:
        """Begin the link: the hub queues its HELLO and HANDSHAKE offer."""
        self._deadline = now + self.handshake_timeout
        if self.crypto_key:
            # Legacy mode: the pre-shared key is in force from the first frame.
            self.cipher = LinkCipher(self.crypto_key, SupportedCiphers.AES_GCM, "JSON-HEX")
        if self.role is Role.HUB:
            pub = crypto.public_key_pem(self.private_key) if self.private_key else None
            hello = {"pubkey": pub, "peer": self.peer, "node_id": self.node_id}
            self._queue_plain(_HELLO, hello)
            self._hub_offer(hello)
            if self.crypto_key is None and self.v3 is None:  # v3: the offer is in the prologue
                self._offer = list(self._out)
                self._resends = [now + delay for delay in self.resend_offer]

    def receive_frame(self, data: str | bytes) -> None:
        """Feed one received websocket frame. Peer faults never raise: they close."""
        if self.state in (State.CLOSING, State.CLOSED):
            return
        self.frames_in += 1
        self._resends = []  # the client is talking: no more offers
        if self._key_job is not None:
            return self._hold(data)  # a KeyNeeded is not answered yet (protocol.linksteps)
        self._receive(data)

    def _receive(self, data: str | bytes) -> None:
        if self.v3 is not None and self.v3.in_session:
            return self._v3_frame(data)
        try:
            who = (self.peer if self.role is Role.HUB else self.node_id) or self.role.value
            opened = self.gate.open(data, self.cipher, keyed=self.state is State.READY, who=who)
            if isinstance(opened, FrameDropped):
                self._events.append(opened)  # a replay or a reflection: never acted on
                return
            msg, binary, sealed = opened.message, opened.binary, opened.sealed
            if sealed and legacy.is_v0(self, msg):  # protocol v0 (protocol.legacy)
                dropped = legacy.fresh(self, opened.nonce)
                if dropped is not None:
                    return self._events.append(dropped)
                if self.state is State.HANDSHAKING:  # the pre-shared key is the proof
                    self._keyed(self.cipher, HandshakeMode.PRESHARED)
            self._dispatch(msg, binary)
        except HiveMindError as exc:
            self._fail(exc)

    def events(self) -> list[Event]:
        """Events since the last call, oldest first."""
        out, self._events = self._events, []
        return out

    def frames_to_send(self) -> list[str | bytes]:
        """Frames to write since the last call (``str`` = text frame, ``bytes`` = binary)."""
        out, self._out = self._out, []
        self.frames_out += len(out)
        return out

    def send(self, message: HiveMessage) -> None:
        """Queue an application message.

        Raises:
            InvalidState: before the handshake completes or after closing.
        """
        if self.state is not State.READY:
            raise InvalidState(f"cannot send in state {self.state.value}")
        self._out.extend(self.encode_frames(message))

    def encode(self, message: HiveMessage) -> str | bytes:
        """The frame for ``message`` under the negotiated settings, without queueing it.

        Hubs use this to encode once per message; the frame is only valid on
        this link (its key); a v3 message over one chunk needs :meth:`encode_frames`.
        A v1 frame's nonce is remembered: the frame is refused if it ever comes back.
        """
        if self.v3 is not None and self.v3.in_session:
            return self.v3.encode(message, single=True)[0]
        nonce = self.gate.seal_nonce(self.cipher) if self.cipher else None
        legacy.remember_sent(self, nonce)
        return encode_message(message, self.cipher, self.binarize, self.compress, nonce)

    def announce(self, peer: str, node_id: str | None = None) -> None:
        """Hub: tell the client its final peer string (encrypted HELLO)."""
        self.peer = peer
        if node_id is not None:
            self.node_id = node_id
        pub = crypto.public_key_pem(self.private_key) if self.private_key else None
        self.send(HiveMessage(_HELLO, {"peer": peer, "node_id": self.node_id, "pubkey": pub}))

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Ask for the link to close; the I/O layer sees a :class:`CloseRequested`."""
        pre_handshake = self.state is State.HANDSHAKING
        if not self._move(Trigger.CLOSE):
            return
        self.close_code, self.close_reason = code, reason
        self._events.append(CloseRequested(code, reason, pre_handshake=pre_handshake))

    def connection_lost(self, code: int | None = None, reason: str = "") -> None:
        """The transport is gone. Drops all key material."""
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        self._move(Trigger.LOST)
        self.cipher = None
        if self.v3 is not None:
            self.v3.drop()
        self._deadline = None

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must next be called, or ``None``."""
        if self.state is not State.HANDSHAKING:
            return None
        if self._resends and (self._deadline is None or self._resends[0] < self._deadline):
            return self._resends[0]
        return self._deadline

    def handle_timer(self, now: float) -> None:
        """Apply timeouts and offer re-sends that are due at ``now``."""
        if self.state is State.HANDSHAKING and self._resends and now >= self._resends[0]:
            while self._resends and now >= self._resends[0]:
                self._resends.pop(0)
            self._out.extend(self._offer)
        if self.state is State.HANDSHAKING and self._deadline is not None and now >= self._deadline:
            self._deadline = None
            self.close(CloseCode.TRY_AGAIN, "handshake timed out")  # retryable

    # -- the state machine -------------------------------------------------------

    def _move(self, trigger: Trigger) -> bool:
        """Apply ``trigger`` through :data:`TRANSITIONS`; False when it changes nothing."""
        target = TRANSITIONS.get((self.state, trigger))
        if target is None:
            return False
        self.state = target
        return True

    # -- receive path ------------------------------------------------------------

    def _dispatch(self, msg: HiveMessage, binary: bool) -> None:
        mtype = msg.msg_type
        kind = _KIND_OF.get(mtype, Inbound.APPLICATION)
        if kind not in ACCEPTS.get((self.role, self.state), frozenset()):
            raise ProtocolError(f"{mtype.value} before the handshake completed")
        if kind is Inbound.HANDSHAKE:
            self._on_handshake(msg.payload)  # protocol.linksteps
        elif kind is Inbound.HELLO:
            self._on_hello(msg.payload)
        else:
            self._events.append(MessageReceived(msg, binary))

    def _on_hello(self, payload: dict[str, Any]) -> None:
        self.peer_hello.update(payload)
        if self.role is Role.CLIENT:
            if payload.get("peer"):
                self.peer = payload["peer"]
            if payload.get("node_id"):
                self.node_id = payload["node_id"]
            pub = payload.get("pubkey")
            if pub and self.peer_public_key is None and self.state is State.HANDSHAKING:
                try:
                    self.peer_public_key = crypto.load_public_key(pub)
                except CryptoError:
                    LOG.warning("hub announced an unreadable public key; ignoring it")
        self._events.append(HelloReceived(payload))

    # -- common -------------------------------------------------------------------

    def _keyed(self, link: LinkCipher | None, mode: HandshakeMode) -> None:
        first = self.state is State.HANDSHAKING
        if link is not self.cipher:
            self.gate.nonces.reset()  # frames of the old key no longer authenticate
        self.cipher = link
        self.mode = mode
        self._move(Trigger.KEYED)
        self._deadline = None
        cipher, encoding = (link.cipher.value, link.encoding.value) if link else ("", "")
        LOG.debug("keyed: %s %s %s binarize=%s", mode, cipher, encoding, self.binarize)
        if self.role is Role.CLIENT and (first or not self._hello_sent):
            self._hello_sent = True
            self.send(HiveMessage(_HELLO, dict(self.hello)))
        done = HandshakeComplete(mode, cipher, encoding, self.binarize)
        self._events.append(
            self.v3.completed(done) if mode is HandshakeMode.NOISE and self.v3 else done
        )

    def _queue_plain(self, mtype: HiveMessageType, payload: dict[str, Any]) -> None:
        self._out.append(HiveMessage(mtype, payload).serialize())

    def _fail(self, exc: HiveMindError) -> None:
        # Peer faults carry their close code; an error without one here is our bug.
        code = exc.close_code if exc.close_code is not None else CloseCode.INTERNAL
        LOG.debug("closing link after peer fault (%s): %s", code, exc)
        pre_handshake = self.state is State.HANDSHAKING
        self._move(Trigger.FAULT)
        self.close_code, self.close_reason = code, str(exc)
        self.cipher = None
        self._events.append(CloseRequested(code, str(exc)[:120], exc, pre_handshake))
