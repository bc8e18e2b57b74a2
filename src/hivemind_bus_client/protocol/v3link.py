"""The v3 (Noise) half of one link: the opening's handshake object, then the transport.

See ``docs/protocol-v3.md``. A
:class:`~hivemind_bus_client.protocol.connection.Connection` created with
``v3=V3Settings(...)`` owns one :class:`V3Link`. The link knows nothing of
the connection's state: each step returns a :class:`V3Step` (a cleartext
HANDSHAKE payload to send, events to report, whether the link is now keyed)
and the connection applies it.

Hub::

    hub_open(hello, v1_offer)   the offer to send (V3Step.reply); PSKNeeded if no PSK yet
    hub_takes(payload)          is this client HANDSHAKE v3? (a v1 one under
                                min_protocol_version 3 is refused here)
    hub_receive(payload)        m1 (buffered while the PSK is missing), then m3

Client::

    client_wants(hello, offer)  does the offer qualify (client_choice)?
    client_start()              m1, or PSKNeeded when the PSK is missing
    client_receive(payload)     m2 -> m3 (XX) or nothing (KK); keyed

Both: :meth:`V3Link.provide_psk` then :meth:`V3Link.resume` (the PSK
hand-off), then :meth:`V3Link.encode` / :meth:`V3Link.decode` on the session.

The PSK hand-off. The PSK (``v3offer.derive_psk``) costs 64 MiB and tens to
hundreds of milliseconds, so the link never derives it. The caller either
puts it in :attr:`V3Settings.psk` (a cache hit), or answers the
:class:`~hivemind_bus_client.protocol.events.PSKNeeded` event by deriving it
off the event loop and calling ``Connection.provide_psk``. A hub asks at
``start`` (it knows the row's password and its own node_id), so the
derivation overlaps the network round trip; the client's m1, if it comes
first, waits in the link. A client asks when the offer qualifies (the salt is
the node_id of the hub's HELLO). The handshake timeout keeps running.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from hivemind_bus_client.exceptions import (
    HandshakeError,
    HiveMindError,
    InvalidState,
    VersionRejected,
)
from hivemind_bus_client.protocol.events import Event, HandshakeComplete, PSKNeeded
from hivemind_bus_client.protocol.message import HiveMessage
from hivemind_bus_client.protocol.noise import MAX_MESSAGE
from hivemind_bus_client.protocol.noisecipher import SUITES as SUITE_CIPHERS
from hivemind_bus_client.protocol.serialization import decode_frame, encode_frame
from hivemind_bus_client.protocol.states import Role
from hivemind_bus_client.protocol.v3handshake import (
    REASON_FAILURE,
    V3ClientHandshake,
    V3HubHandshake,
    V3Result,
    client_choice,
    hub_offer,
)
from hivemind_bus_client.protocol.v3settings import (
    REASON_INVALID_MESSAGE,
    REASON_REQUIRES_V3,
    V3FrameRejected,
    V3Settings,
    V3Step,
)
from hivemind_bus_client.protocol.v3transport import CHUNK_SIZE, V3Transport

__all__ = [
    "REASON_INVALID_MESSAGE",
    "REASON_REQUIRES_V3",
    "V3FrameRejected",
    "V3Link",
    "V3Settings",
    "V3Step",
]

LOG = logging.getLogger(__name__)


class V3Link:
    """The v3 half of one link (see the module docstring)."""

    def __init__(self, role: Role, settings: V3Settings) -> None:
        self.role = role
        self.settings = settings
        self._psk = settings.psk
        #: The salt string of the PSK: the node_id of the hub's HELLO.
        self.node_id = ""
        #: Client: the pattern and suite chosen; hub: the client's, once m1 is read.
        self.pattern: str | None = None
        self.suite: str | None = None
        #: The v3 opening is under way (client: the offer qualified; hub: a noise m1).
        self.running = False
        #: Hub: the client answered with a v1 HANDSHAKE.
        self.declined = False
        #: Set once keyed; stays set after :meth:`drop`.
        self.in_session = False
        #: The peer's 32-byte static public key once keyed (pin it after XX).
        self.peer_static: bytes | None = None
        #: The session's bitstring flag (the offer's, echoed in m1).
        self.binarize = False
        self.result: V3Result | None = None
        self.transport: V3Transport | None = None
        self._hello: dict[str, Any] = {}
        self._offer: dict[str, Any] = {}
        self._hub: V3HubHandshake | None = None
        self._client: V3ClientHandshake | None = None
        self._pending: Mapping[str, Any] | None = None

    # -- hub -------------------------------------------------------------------------

    def hub_open(self, hello: dict[str, Any], v1_offer: dict[str, Any], binarize: bool) -> V3Step:
        """The offer to send after ``hello``; asks for the PSK when there is none.

        With :attr:`V3Settings.legacy_offer`, the v1 offer (``v1_offer``) with
        ``max_protocol_version`` 3 and the ``noise`` entry appended (and
        ``min_protocol_version`` 3 when v3 is required); else the v3-only offer.
        The prologue is computed from exactly what is returned.
        """
        s = self.settings
        pure = hub_offer(pinned=s.pinned_key is not None, binarize=binarize)
        if s.legacy_offer:
            offer = dict(v1_offer)
            offer["max_protocol_version"] = pure["max_protocol_version"]
            if s.min_protocol_version >= 3:
                offer["min_protocol_version"] = s.min_protocol_version
            offer["noise"] = pure["noise"]
        else:
            offer = pure
        self._hello, self._offer = dict(hello), offer
        node_id = hello.get("node_id")
        self.node_id = node_id if isinstance(node_id, str) else ""
        events: tuple[Event, ...] = () if self._psk else (PSKNeeded(self.node_id),)
        return V3Step(events, offer)

    def hub_takes(self, payload: Any) -> bool:
        """Whether a client HANDSHAKE goes to the v3 opening.

        A payload with ``noise`` starts it; one without is a v1 client, which
        the hub then serves over v1 for the rest of the link.

        Raises:
            VersionRejected: a v1 client while v3 is required.
        """
        if self.running:
            return True
        if self.declined:
            return False
        if isinstance(payload, Mapping) and "noise" in payload:
            self.running = True
            return True
        if self.settings.min_protocol_version >= 3:
            raise VersionRejected(REASON_REQUIRES_V3)
        self.declined = True
        return False

    def hub_receive(self, payload: Mapping[str, Any]) -> V3Step:
        """A client v3 HANDSHAKE (m1, then m3 in XX); m1 waits while the PSK is missing.

        Raises:
            HandshakeError: see :meth:`V3HubHandshake.receive`, or a second
                message while m1 still waits for the PSK.
        """
        if self._psk is None:
            if self._pending is not None:
                raise HandshakeError(REASON_FAILURE + "a second message before the hub's answer")
            self._pending = payload
            return V3Step()
        return self._hub_step(payload)

    def _hub_step(self, payload: Mapping[str, Any]) -> V3Step:
        if self._hub is None:
            assert self._psk is not None
            s = self.settings
            self._hub = V3HubHandshake(
                self._hello,
                self._offer,
                psk=self._psk,
                static_private=s.static_private,
                pinned_client_key=s.pinned_key,
                ephemeral_private=s.ephemeral_private,
            )
        reply = self._hub.receive(payload)
        self.pattern, self.suite = self._hub.pattern, self._hub.suite
        if self._hub.result is not None:
            self._keyed(self._hub.result)
        return V3Step(reply=reply, done=self.in_session)

    # -- client ----------------------------------------------------------------------

    def client_wants(
        self, hello: Mapping[str, Any], offer: Mapping[str, Any], has_password: bool
    ) -> bool:
        """Whether the hub's offer qualifies for v3 (``v3offer.client_choice``).

        ``hello`` and ``offer`` are the hub's payloads as received (the prologue).
        """
        s = self.settings
        choice = client_choice(
            offer,
            has_password=has_password,
            has_pin=s.pinned_key is not None,
            kk_failed=s.kk_failed,
            max_protocol_version=s.max_protocol_version,
        )
        if choice is None:
            return False
        self.pattern, self.suite = choice
        self._hello, self._offer = dict(hello), dict(offer)
        node_id = hello.get("node_id")
        self.node_id = node_id if isinstance(node_id, str) else ""
        self.running = True
        return True

    def client_start(self) -> V3Step:
        """m1, or the request for the PSK (m1 then comes from :meth:`resume`)."""
        if self._psk is None:
            return V3Step(events=(PSKNeeded(self.node_id),))
        return V3Step(reply=self._m1())

    def _m1(self) -> dict[str, Any]:
        assert self._psk is not None and self.pattern is not None and self.suite is not None
        s = self.settings
        self._client = V3ClientHandshake(
            self._hello,
            self._offer,
            pattern=self.pattern,
            suite=self.suite,
            psk=self._psk,
            static_private=s.static_private,
            pinned_hub_key=s.pinned_key,
            encodings=s.encodings,
            ephemeral_private=s.ephemeral_private,
        )
        return self._client.start()

    def client_receive(self, payload: Mapping[str, Any]) -> V3Step:
        """The hub's m2: m3 to send (XX) or nothing (KK); the link is keyed.

        A re-sent offer is ignored.

        Raises:
            AuthenticationFailed: m2 did not verify (wrong password), or the
                hub's key contradicts the pin.
            HandshakeError: a malformed answer, or one before our m1.
        """
        if "max_protocol_version" in payload:
            return V3Step()  # the hub sent its offer again; we answered the first
        if self._client is None:
            raise HandshakeError(REASON_FAILURE + "answer before our first message")
        reply = self._client.receive(payload)
        assert self._client.result is not None
        self._keyed(self._client.result)
        return V3Step(reply=reply, done=True)

    # -- the PSK hand-off ------------------------------------------------------------

    @property
    def waiting_for_psk(self) -> bool:
        """Whether the link still has no PSK."""
        return self._psk is None

    def provide_psk(self, psk: bytes) -> None:
        """Take the PSK a ``PSKNeeded`` asked for; :meth:`resume` then goes on.

        Raises:
            InvalidState: not 32 bytes, or a PSK is already set.
        """
        if not isinstance(psk, bytes) or len(psk) != 32:
            raise InvalidState("a v3 PSK is 32 raw bytes")
        if self._psk is not None:
            raise InvalidState("this v3 link already has its PSK")
        self._psk = psk

    def resume(self) -> V3Step:
        """What the PSK unblocks: the client's m1, or the hub's answer to a waiting m1."""
        if self._psk is None or self.in_session:
            return V3Step()
        if self.role is Role.CLIENT:
            if self.running and self._client is None:
                return V3Step(reply=self._m1())
            return V3Step()
        pending, self._pending = self._pending, None
        return self._hub_step(pending) if pending is not None else V3Step()

    # -- the session -----------------------------------------------------------------

    def _keyed(self, result: V3Result) -> None:
        self.result = result
        self.transport = V3Transport.for_result(result, max_size=self.settings.max_size)
        self.peer_static, self.binarize = result.remote_static, result.binarize
        self.in_session = True
        self._pending = None
        LOG.debug("v3 keyed: %s %s binarize=%s", result.pattern, result.suite, result.binarize)

    def completed(self, event: HandshakeComplete) -> HandshakeComplete:
        """``event`` (the connection's) with the v3 facts filled in."""
        result = self.result
        if result is None:
            return event
        return dataclasses.replace(
            event,
            cipher=SUITE_CIPHERS.get(result.suite, result.suite),
            encoding="",
            protocol=3,
            pattern=result.pattern,
            suite=result.suite,
            peer_static=result.remote_static,
        )

    def encode(self, message: HiveMessage, *, single: bool = False) -> list[bytes]:
        """The binary frames carrying ``message``; write all of them, in this order.

        ``single``: refuse (before encrypting anything) a message that needs
        chunks, for callers that can write only one frame.

        Raises:
            InvalidState: the link is not (or no longer) keyed, or ``single``
                and the message is over one chunk.
            InvalidMessage: the message has no wire form.
        """
        transport = self.transport
        if transport is None:
            raise InvalidState("the v3 link is not keyed")
        bitstring = transport.is_bitstring(message)
        if bitstring:
            body = encode_frame(message, compressed=True)
        else:
            body = message.serialize().encode("utf-8")
        if single and len(body) > CHUNK_SIZE:
            raise InvalidState(f"a v3 message of {len(body)} bytes needs chunks: use encode_frames")
        return transport.seal_body(body, bitstring=bitstring)

    def decode(self, frame: str | bytes) -> tuple[HiveMessage, bool] | None:
        """The message a session frame completes and whether it was a bitstring.

        ``None`` mid-chunking, and for a text frame on the client (dropped;
        the hub refuses one).

        Raises:
            V3FrameRejected: any bad frame (fatal: the link must close).
        """
        transport = self.transport
        if transport is None:
            raise InvalidState("the v3 link is not keyed")
        if isinstance(frame, str) and self.role is Role.CLIENT:
            LOG.debug("text frame on a v3 session dropped")
            return None
        try:
            if len(frame) > MAX_MESSAGE:
                raise V3FrameRejected(f"v3 frame of {len(frame)} bytes over the Noise maximum")
            opened = transport.open_frame(frame)
            if opened is None:
                return None
            bitstring, body = opened
            if bitstring:
                return decode_frame(body, self.settings.max_size), True
            return HiveMessage.deserialize(body.decode("utf-8")), False
        except (HiveMindError, UnicodeDecodeError) as exc:
            transport.failed = True
            LOG.debug("v3 frame refused: %s", exc)
            raise V3FrameRejected(REASON_INVALID_MESSAGE) from exc

    def drop(self) -> None:
        """Forget every key (the transport is gone); :attr:`peer_static` stays."""
        self.transport = None
        self.result = None
        self._hub = None
        self._client = None
        self._psk = None
        self._pending = None
