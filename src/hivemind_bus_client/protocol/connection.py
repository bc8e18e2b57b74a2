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

The hub speaks first::

    hub    -> HELLO {pubkey, peer, node_id}                      plaintext
    hub    -> HANDSHAKE {offer: password?, binarize, encodings, ciphers, ...}
    client -> HANDSHAKE {binarize, encodings, ciphers, envelope | pubkey}
    hub    -> HANDSHAKE {envelope, encoding, cipher}             plaintext
    client -> HELLO {pubkey, session, site_id}                   encrypted
    hub    -> HELLO {peer, node_id, pubkey}                      encrypted (final peer)

States: ``HANDSHAKING`` until a key is agreed, then ``READY``; a peer fault
moves to ``CLOSING`` (a :class:`CloseRequested` event carries the close code
the I/O layer must use) and :meth:`Connection.connection_lost` to ``CLOSED``.
Failure is sticky: a closing or closed connection ignores further input.

Rules that differ from the reference and are deliberate:

* each side verifies the other's password envelope, so a wrong password is
  refused at the handshake (close 1008) instead of by a failed decryption later;
* once a key exists, only HELLO and HANDSHAKE may arrive in plaintext, and no
  application message is accepted before the handshake completes;
* a client row with a password must use the password handshake (no RSA
  fallback that would skip the password);
* the hub may prefer its own encoding order (fast encodings first) among those
  the client offers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hivemind_bus_client.exceptions import (
    CLOSE_PROTOCOL_ERROR,
    AuthenticationFailed,
    CryptoError,
    DecodingError,
    HiveMindError,
    InvalidCipher,
    InvalidEncoding,
    InvalidMessage,
    InvalidState,
    NegotiationFailed,
    PayloadTooBig,
    ProtocolError,
)
from hivemind_bus_client.protocol import crypto
from hivemind_bus_client.protocol.encodings import SupportedEncodings, get_encoding
from hivemind_bus_client.protocol.encryption import LinkCipher, SupportedCiphers, get_cipher
from hivemind_bus_client.protocol.message import HiveMessage, HiveMessageType
from hivemind_bus_client.protocol.serialization import JSON_ONLY_TYPES, decode_frame, encode_frame

__all__ = [
    "CLIENT_CIPHERS",
    "CLIENT_ENCODINGS",
    "HUB_CIPHERS",
    "HUB_ENCODINGS",
    "CloseRequested",
    "Connection",
    "Event",
    "HandshakeComplete",
    "HelloReceived",
    "MessageReceived",
    "Role",
    "State",
]

LOG = logging.getLogger(__name__)

#: Close code for a handshake that did not finish in time (retryable).
CLOSE_TRY_AGAIN = 1013

#: What our client offers, fastest first. Z85P last: the reference's own
#: decoder cannot read it on common CPUs.
CLIENT_ENCODINGS: tuple[SupportedEncodings, ...] = (
    SupportedEncodings.JSON_B64,
    SupportedEncodings.JSON_URLSAFE_B64,
    SupportedEncodings.JSON_HEX,
    SupportedEncodings.JSON_B91,
    SupportedEncodings.JSON_Z85B,
    SupportedEncodings.JSON_B32,
    SupportedEncodings.JSON_Z85P,
)
#: What our hub accepts, in its order of preference.
HUB_ENCODINGS = CLIENT_ENCODINGS
CLIENT_CIPHERS: tuple[SupportedCiphers, ...] = (
    SupportedCiphers.AES_GCM,
    SupportedCiphers.CHACHA20_POLY1305,
)
HUB_CIPHERS = CLIENT_CIPHERS

_HELLO = HiveMessageType.HELLO
_SHAKE = HiveMessageType.HANDSHAKE
_BINARY = HiveMessageType.BINARY
_PLAIN_OK = frozenset({_HELLO, _SHAKE})


class Role(Enum):
    """Which end of the link this connection is."""

    CLIENT = "client"
    HUB = "hub"


class State(Enum):
    """Link states; see the module docstring."""

    HANDSHAKING = "handshaking"
    READY = "ready"
    CLOSING = "closing"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Event:
    """Base of every connection event."""


@dataclass(frozen=True, slots=True)
class HandshakeComplete(Event):
    """A key is agreed; ``mode`` is ``password``, ``rsa`` or ``preshared``."""

    mode: str
    cipher: str
    encoding: str
    binarize: bool


@dataclass(frozen=True, slots=True)
class HelloReceived(Event):
    """The peer's HELLO payload (hub side: pubkey, session, site_id; client: peer, node_id)."""

    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class MessageReceived(Event):
    """An application message; ``binary`` tells whether it came as a binary frame."""

    message: HiveMessage
    binary: bool = False


@dataclass(frozen=True, slots=True)
class CloseRequested(Event):
    """The link must close with ``code``; ``error`` is the cause when it was a fault."""

    code: int
    reason: str
    error: HiveMindError | None = field(default=None)


def _names(values: Sequence[Any], resolve: Any) -> list[str]:
    out = []
    for v in values:
        try:
            out.append(resolve(v).value)
        except (InvalidEncoding, InvalidCipher):
            continue
    return out


class Connection:
    """The protocol state of one link (see the module docstring).

    Args:
        role: ``Role.HUB`` for the listening end, ``Role.CLIENT`` for the satellite.
        password: the shared password (password handshake).
        crypto_key: legacy pre-shared key (16 characters → AES-128-GCM, JSON-HEX).
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
        max_size: largest frame or decompressed payload accepted, in bytes.
        resend_offer: hub only: seconds after :meth:`start` at which HELLO and the
            HANDSHAKE offer are sent again while the client has sent nothing. The
            stock 0.4.4 client registers its handlers only after the socket opens,
            misses a prompt offer and otherwise waits 5 s before it handshakes.
            One re-send: that client blocks for about a second per offer it
            handles, and each offer it handles starts a new key exchange.
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
        handshake_timeout: float = 20.0,
        max_size: int = 16 * 1024 * 1024,
        resend_offer: Sequence[float] = (0.6,),
    ) -> None:
        self.role = role
        self.state = State.HANDSHAKING
        self.password = password
        self.crypto_key = crypto_key
        self.private_key = private_key
        self.peer_public_key = peer_public_key
        default_enc = HUB_ENCODINGS if role is Role.HUB else CLIENT_ENCODINGS
        default_ciph = HUB_CIPHERS if role is Role.HUB else CLIENT_CIPHERS
        self.encodings = _names(encodings or default_enc, get_encoding)
        self.ciphers = _names(ciphers or default_ciph, get_cipher)
        self.want_binarize = binarize
        self.compress = compress
        self.prefer_own_order = prefer_own_order
        self.peer = peer
        self.node_id = node_id
        self.hello = hello or {}
        self.handshake_timeout = handshake_timeout
        self.max_size = max_size
        self.resend_offer = tuple(sorted(resend_offer))

        #: Negotiated values (valid once READY).
        self.binarize = False
        self.cipher: LinkCipher | None = None
        self.mode: str | None = None
        #: What the peer told us in its HELLO / HANDSHAKE.
        self.peer_hello: dict[str, Any] = {}
        self.peer_offer: dict[str, Any] = {}
        self.close_code: int | None = None
        self.close_reason = ""

        self._events: list[Event] = []
        self._out: list[str | bytes] = []
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
            self._queue_plain(_HELLO, {"pubkey": pub, "peer": self.peer, "node_id": self.node_id})
            has_key = self.crypto_key is not None
            self._queue_plain(
                _SHAKE,
                {
                    "handshake": not has_key,
                    "min_protocol_version": 0 if has_key else 1,
                    "max_protocol_version": 1,
                    "binarize": self.want_binarize,
                    "preshared_key": has_key,
                    "password": self.password is not None,
                    "crypto_required": True,
                    "encodings": list(self.encodings),
                    "ciphers": list(self.ciphers),
                },
            )
            if not has_key:
                self._offer = list(self._out)
                self._resends = [now + delay for delay in self.resend_offer]

    def receive_frame(self, data: str | bytes) -> None:
        """Feed one received websocket frame. Peer faults never raise: they close."""
        if self.state in (State.CLOSING, State.CLOSED):
            return
        self.frames_in += 1
        self._resends = []  # the client is talking: no more offers
        try:
            if len(data) > self.max_size:
                raise PayloadTooBig(f"frame of {len(data)} bytes exceeds {self.max_size}")
            msg, binary, sealed = self._decode(data)
            if (
                sealed
                and self.state is State.HANDSHAKING
                and self.role is Role.HUB
                and self.password is None
                and msg.msg_type is not _SHAKE
            ):
                # Legacy pre-shared-key client: a frame that authenticates under
                # the pre-shared key is its proof; no key exchange follows.
                self._keyed(self.cipher, "preshared")
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
        self._out.append(self.encode(message))

    def encode(self, message: HiveMessage) -> str | bytes:
        """The frame for ``message`` under the negotiated settings, without queueing it.

        Hubs use this to encode once per message; the frame is only valid on
        this link (its key).
        """
        mtype = message.msg_type
        if mtype is _BINARY or (
            self.binarize and mtype not in _PLAIN_OK and mtype not in JSON_ONLY_TYPES
        ):
            raw = encode_frame(message, compressed=True if self.compress else None)
            return self.cipher.seal_bytes(raw) if self.cipher else raw
        text = message.serialize()
        return self.cipher.seal_text(text) if self.cipher else text

    def announce(self, peer: str, node_id: str | None = None) -> None:
        """Hub: tell the client its final peer string (encrypted HELLO)."""
        self.peer = peer
        if node_id is not None:
            self.node_id = node_id
        pub = crypto.public_key_pem(self.private_key) if self.private_key else None
        self.send(HiveMessage(_HELLO, {"peer": peer, "node_id": self.node_id, "pubkey": pub}))

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Ask for the link to close; the I/O layer sees a :class:`CloseRequested`."""
        if self.state in (State.CLOSING, State.CLOSED):
            return
        self.state = State.CLOSING
        self.close_code, self.close_reason = code, reason
        self._events.append(CloseRequested(code, reason))

    def connection_lost(self, code: int | None = None, reason: str = "") -> None:
        """The transport is gone. Drops all key material."""
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        self.state = State.CLOSED
        self.cipher = None
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
            self.close(CLOSE_TRY_AGAIN, "handshake timed out")

    # -- receive path ------------------------------------------------------------

    def _decode(self, data: str | bytes) -> tuple[HiveMessage, bool, bool]:
        """Parse a frame into (message, came-as-binary, was-encrypted)."""
        if isinstance(data, (bytes, bytearray, memoryview)):
            data = bytes(data)
            sealed = self.cipher is not None
            if sealed:
                data = self.cipher.open_bytes(data)
            elif self.state is State.READY:
                raise AuthenticationFailed("unencrypted binary frame on an encrypted link")
            return decode_frame(data, self.max_size), True, sealed
        try:
            obj = json.loads(data)
        except (ValueError, TypeError) as exc:
            raise DecodingError(f"text frame is not JSON: {exc}") from None
        if isinstance(obj, dict) and "ciphertext" in obj and "msg_type" not in obj:
            if self.cipher is None:
                raise ProtocolError("encrypted frame before a key was agreed")
            plain = self.cipher.open_text(obj)
            try:
                obj = json.loads(plain)
            except (ValueError, UnicodeDecodeError) as exc:
                raise DecodingError(f"decrypted frame is not JSON: {exc}") from None
            if not isinstance(obj, dict):
                raise InvalidMessage("decrypted frame is not a JSON object")
            if "ciphertext" in obj and "msg_type" not in obj:
                raise ProtocolError("nested encrypted frame")
            return HiveMessage.deserialize(obj), False, True
        msg = HiveMessage.deserialize(obj)
        if msg.msg_type not in _PLAIN_OK and self.state is State.READY and self.cipher:
            raise AuthenticationFailed(f"unencrypted {msg.msg_type.value} on an encrypted link")
        return msg, False, False

    def _dispatch(self, msg: HiveMessage, binary: bool) -> None:
        mtype = msg.msg_type
        if mtype is _SHAKE:
            if self.role is Role.HUB:
                self._hub_handshake(msg.payload)
            else:
                self._client_handshake(msg.payload)
            return
        if mtype is _HELLO:
            self._on_hello(msg.payload)
            return
        if self.state is not State.READY:
            raise ProtocolError(f"{mtype.value} before the handshake completed")
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
        elif self.state is not State.READY:
            raise ProtocolError("HELLO before the handshake completed")
        self._events.append(HelloReceived(payload))

    # -- hub side handshake ------------------------------------------------------

    def _choose(self, offered: Any, allowed: list[str], what: str) -> str:
        if not isinstance(offered, list) or not all(isinstance(o, str) for o in offered):
            raise NegotiationFailed(f"client {what} list is malformed")
        if self.prefer_own_order:
            picks = [a for a in allowed if a in offered]
        else:
            picks = [o for o in offered if o in allowed]
        if not picks:
            raise NegotiationFailed(
                f"no common {what}: client offers {offered}, hub allows {allowed}"
            )
        return picks[0]

    def _hub_handshake(self, payload: dict[str, Any]) -> None:
        if not isinstance(payload, dict):
            raise NegotiationFailed("HANDSHAKE payload must be an object")
        encoding = self._choose(
            payload.get("encodings", [SupportedEncodings.JSON_HEX.value]),
            self.encodings,
            "encoding",
        )
        cipher = self._choose(
            payload.get("ciphers", [SupportedCiphers.AES_GCM.value]), self.ciphers, "cipher"
        )
        envelope = payload.get("envelope")
        pubkey = payload.get("pubkey")
        if self.password is not None:
            if not isinstance(envelope, str):
                raise AuthenticationFailed("this client must use the password handshake")
            if not crypto.verify_password_envelope(envelope, self.password):
                raise AuthenticationFailed("wrong password")
            own = crypto.password_envelope(self.password)
            key = crypto.derive_password_key(
                self.password, crypto.envelope_iv(envelope), bytes.fromhex(own[:16])
            )
            mode = "password"
        elif isinstance(pubkey, str):
            if self.private_key is None:
                raise NegotiationFailed("this hub has no RSA key for the RSA handshake")
            try:
                client_pub = crypto.load_public_key(pubkey)
            except CryptoError as exc:
                raise NegotiationFailed(f"unusable client public key: {exc}") from None
            own, key = crypto.rsa_seal_handshake(client_pub, self.private_key)
            mode = "rsa"
        else:
            raise NegotiationFailed("HANDSHAKE has neither a password envelope nor a public key")
        self.binarize = bool(self.want_binarize and payload.get("binarize"))
        # The reply goes out in plaintext (the client cannot have the new key yet).
        self._queue_plain(_SHAKE, {"envelope": own, "encoding": encoding, "cipher": cipher})
        self._keyed(LinkCipher(key, cipher, encoding), mode)

    # -- client side handshake ------------------------------------------------------

    def _client_handshake(self, payload: dict[str, Any]) -> None:
        if not isinstance(payload, dict):
            raise ProtocolError("HANDSHAKE payload must be an object")
        if "envelope" in payload:
            self._client_finish(payload)
        else:
            self._client_offer(payload)

    def _client_offer(self, offer: dict[str, Any]) -> None:
        if self.peer_offer or self.state is not State.HANDSHAKING:
            # A hub re-sends its offer to clients that seem to have missed it;
            # ours answered the first one already.
            return
        self.peer_offer = offer
        max_version = offer.get("max_protocol_version", 1)
        if isinstance(max_version, int) and max_version < 0:
            raise NegotiationFailed("hub offers no usable protocol version")
        hub_binarize = bool(offer.get("binarize"))
        reply: dict[str, Any] = {
            "binarize": bool(hub_binarize and self.want_binarize),
            "encodings": list(self.encodings),
            "ciphers": list(self.ciphers),
        }
        hub_wants_password = bool(offer.get("password", True))
        if self.password is not None and hub_wants_password:
            envelope = crypto.password_envelope(self.password)
            self._iv = bytes.fromhex(envelope[:16])
            reply["envelope"] = envelope
            self.mode = "password"
        elif self.private_key is not None and not hub_wants_password:
            reply["pubkey"] = crypto.public_key_pem(self.private_key)
            self.mode = "rsa"
        elif self.crypto_key and offer.get("preshared_key"):
            # Pre-shared key only: no key exchange, the key is already in force.
            self.binarize = reply["binarize"]
            self._keyed(self.cipher, "preshared")
            return
        else:
            raise NegotiationFailed(
                "no handshake possible: the hub wants a password we do not have"
                if offer.get("password")
                else "no handshake possible: need a password, an RSA key or a pre-shared key"
            )
        self.binarize = reply["binarize"]
        # Sent in plaintext: the envelope proves, it does not reveal.
        self._queue_plain(_SHAKE, reply)

    def _client_finish(self, reply: dict[str, Any]) -> None:
        envelope = reply.get("envelope")
        if not isinstance(envelope, str):
            raise ProtocolError("HANDSHAKE reply without an envelope")
        encoding = reply.get("encoding") or SupportedEncodings.JSON_HEX.value
        cipher = reply.get("cipher") or SupportedCiphers.AES_GCM.value
        if self.mode == "password" and self._iv is not None:
            if not crypto.verify_password_envelope(envelope, self.password or ""):
                raise AuthenticationFailed("wrong password (the hub's envelope does not match)")
            key = crypto.derive_password_key(
                self.password or "", self._iv, crypto.envelope_iv(envelope)
            )
        elif self.mode == "rsa" and self.private_key is not None:
            key = crypto.rsa_open_handshake(envelope, self.private_key, self.peer_public_key)
        else:
            raise ProtocolError("unexpected HANDSHAKE reply")
        try:
            link = LinkCipher(key, cipher, encoding)
        except (InvalidCipher, InvalidEncoding) as exc:
            raise NegotiationFailed(f"hub chose something we cannot use: {exc}") from None
        self._keyed(link, self.mode)

    # -- common -------------------------------------------------------------------

    def _keyed(self, link: LinkCipher | None, mode: str) -> None:
        first = self.state is State.HANDSHAKING
        self.cipher = link
        self.mode = mode
        self.state = State.READY
        self._deadline = None
        cipher = link.cipher.value if link else ""
        encoding = link.encoding.value if link else ""
        LOG.debug(
            "link keyed: mode=%s cipher=%s encoding=%s binarize=%s",
            mode,
            cipher,
            encoding,
            self.binarize,
        )
        if self.role is Role.CLIENT and (first or not self._hello_sent):
            self._hello_sent = True
            self.send(HiveMessage(_HELLO, dict(self.hello)))
        self._events.append(HandshakeComplete(mode, cipher, encoding, self.binarize))

    def _queue_plain(self, mtype: HiveMessageType, payload: dict[str, Any]) -> None:
        self._out.append(HiveMessage(mtype, payload).serialize())

    def _fail(self, exc: HiveMindError) -> None:
        code = getattr(exc, "close_code", CLOSE_PROTOCOL_ERROR)
        LOG.debug("closing link after peer fault (%s): %s", code, exc)
        self.state = State.CLOSING
        self.close_code, self.close_reason = code, str(exc)
        self.cipher = None
        self._events.append(CloseRequested(code, str(exc)[:120], exc))
