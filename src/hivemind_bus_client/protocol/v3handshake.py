"""The HiveMind v3 opening as HANDSHAKE payloads, sans-I/O, for both roles.

See ``docs/protocol-v3.md`` ("Handshake", "PSK", "Close codes"). The hub
speaks first with two cleartext frames, HELLO and the HANDSHAKE offer
(:func:`hub_offer`, from :mod:`~hivemind_bus_client.protocol.v3offer`, re-exported
here with the other negotiation helpers); the client picks a pattern and suite (:func:`client_choice`)
and runs Noise as initiator, the hub as responder, each Noise message as
lowercase hex in ``payload["noise"]["msg"]`` of a cleartext HANDSHAKE::

    hub    -> HELLO {pubkey, peer, node_id}
    hub    -> HANDSHAKE offer                          (hub_offer)
    client -> HANDSHAKE {"noise": {pattern, suite, msg: m1}}  (V3ClientHandshake.start)
    hub    -> HANDSHAKE {"noise": {msg: m2}}           (V3HubHandshake.receive; KK done)
    client -> HANDSHAKE {"noise": {msg: m3}}           (V3ClientHandshake.receive; XX only)

Both sides then hold a :class:`V3Result` (two CipherStates for
:class:`~hivemind_bus_client.protocol.v3transport.V3Transport`). The PSK is
the caller's: :func:`derive_psk` is expensive (Argon2id, 64 MiB), so run it
off the event loop and cache it. Pins are data: a side given the peer's
pinned key refuses a different one; recording a new key (TOFU) is the
caller's decision, from :attr:`V3Result.remote_static`.

Every refusal raises a :class:`~hivemind_bus_client.exceptions.HandshakeError`
subclass (close 1008) whose text is the close reason.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hivemind_bus_client.exceptions import (
    AuthenticationFailed,
    DecryptionKeyError,
    HandshakeError,
    InvalidState,
    NegotiationFailed,
)
from hivemind_bus_client.protocol.noise import CipherState, HandshakeState
from hivemind_bus_client.protocol.v3offer import (
    CLIENT_ENCODINGS,
    HUB_CIPHERS,
    HUB_ENCODINGS,
    KK,
    REASON_FAILURE,
    REASON_HUB_PIN_MISMATCH,
    REASON_NEEDS_NOISE,
    REASON_NEEDS_PASSWORD,
    REASON_PIN_MISMATCH,
    SUITES,
    XX,
    build_prologue,
    canonical_json,
    client_choice,
    derive_psk,
    hub_offer,
)

__all__ = [
    "CLIENT_ENCODINGS",
    "HUB_CIPHERS",
    "HUB_ENCODINGS",
    "KK",
    "REASON_FAILURE",
    "REASON_HUB_PIN_MISMATCH",
    "REASON_NEEDS_NOISE",
    "REASON_NEEDS_PASSWORD",
    "REASON_PIN_MISMATCH",
    "SUITES",
    "XX",
    "V3ClientHandshake",
    "V3HubHandshake",
    "V3Result",
    "build_prologue",
    "canonical_json",
    "client_choice",
    "derive_psk",
    "hub_offer",
]


@dataclass(frozen=True)
class V3Result:
    """What a completed v3 handshake gives its side.

    ``send``/``recv`` are this side's transport CipherStates; ``remote_static``
    the peer's 32-byte static key (pin it, or compare it with the pin);
    ``binarize`` the link's bitstring flag (the offer's, echoed in m1);
    ``encoding`` the first encoding of the client's m1 list (informational).
    """

    pattern: str
    suite: str
    send: CipherState
    recv: CipherState
    remote_static: bytes
    handshake_hash: bytes
    binarize: bool
    encoding: str | None


def _noise_msg(payload: Any) -> bytes:
    noise = payload.get("noise") if isinstance(payload, Mapping) else None
    if not isinstance(noise, Mapping):
        raise HandshakeError(REASON_NEEDS_NOISE)
    msg = noise.get("msg")
    if not isinstance(msg, str):
        raise HandshakeError(REASON_FAILURE + "missing noise message")
    try:
        return bytes.fromhex(msg)
    except ValueError:
        raise HandshakeError(REASON_FAILURE + "noise message is not hex") from None


def _read(state: HandshakeState, message: bytes) -> bytes:
    try:
        return state.read_message(message)
    except DecryptionKeyError:
        # Wrong PSK, prologue or key: the reference's reason has no detail.
        raise AuthenticationFailed(REASON_FAILURE) from None


class V3ClientHandshake:
    """The client (initiator) side of one v3 opening.

    Args:
        hello: the hub's HELLO payload, as received.
        offer: the hub's HANDSHAKE offer payload, as received.
        pattern, suite: from :func:`client_choice`.
        psk: :func:`derive_psk` of the password and the HELLO's ``node_id``.
        static_private: the client's raw X25519 static private key.
        pinned_hub_key: the hub's pinned static key for this host:port, if
            any; KK requires it, and an XX hub key that differs is refused.
        encodings: the m1 encodings list.
        ephemeral_private: fixed ephemeral, for test vectors only.

    Use: ``start()`` gives the first HANDSHAKE payload; ``receive(payload)``
    takes the hub's answer and returns the last HANDSHAKE payload to send
    (XX) or ``None`` (KK). Then :attr:`result` is set.
    """

    def __init__(
        self,
        hello: Mapping[str, Any],
        offer: Mapping[str, Any],
        *,
        pattern: str,
        suite: str,
        psk: bytes,
        static_private: bytes,
        pinned_hub_key: bytes | None = None,
        encodings: Sequence[str] = CLIENT_ENCODINGS,
        ephemeral_private: bytes | None = None,
    ) -> None:
        if pattern == KK and pinned_hub_key is None:
            raise InvalidState("KKpsk0 needs the hub's pinned key")
        self.pattern, self.suite = pattern, suite
        self.binarize = bool(offer.get("binarize", False))
        self._encodings = list(encodings)
        self._pin = pinned_hub_key
        self._state = HandshakeState(
            pattern,
            suite,
            initiator=True,
            prologue=build_prologue(hello, offer, pattern, suite),
            static_private=static_private,
            psk=psk,
            remote_static=pinned_hub_key if pattern == KK else None,
            ephemeral_private=ephemeral_private,
        )
        self.result: V3Result | None = None

    @property
    def done(self) -> bool:
        """Whether the handshake completed (then :attr:`result` is set)."""
        return self.result is not None

    def start(self) -> dict[str, Any]:
        """The client's HANDSHAKE payload carrying m1."""
        m1_payload = canonical_json({"binarize": self.binarize, "encodings": self._encodings})
        msg = self._state.write_message(m1_payload)
        return {"noise": {"pattern": self.pattern, "suite": self.suite, "msg": msg.hex()}}

    def receive(self, payload: Mapping[str, Any]) -> dict[str, Any] | None:
        """Take the hub's m2; return the m3 HANDSHAKE payload (XX) or ``None`` (KK).

        Raises:
            AuthenticationFailed: m2 did not verify (wrong password, or a hub
                that is not the pinned one in KK), or an XX hub key contradicts
                the pin.
            HandshakeError: a malformed answer.
            InvalidState: called before :meth:`start` or after completion.
        """
        if self.done:
            raise InvalidState("the v3 handshake is already complete")
        _read(self._state, _noise_msg(payload))  # the m2 payload is ignored
        remote = self._state.remote_static
        if remote is None:
            raise HandshakeError(REASON_FAILURE + "no hub static key")
        if self._pin is not None and remote != self._pin:
            raise AuthenticationFailed(REASON_HUB_PIN_MISMATCH)
        reply: dict[str, Any] | None = None
        if not self._state.complete:
            reply = {"noise": {"msg": self._state.write_message(b"").hex()}}
        send, recv = self._state.split()
        self.result = V3Result(
            self.pattern,
            self.suite,
            send,
            recv,
            remote,
            self._state.handshake_hash,
            self.binarize,
            self._encodings[0] if self._encodings else None,
        )
        return reply


class V3HubHandshake:
    """The hub (responder) side of one v3 opening.

    Args:
        hello: the HELLO payload the hub sent.
        offer: the offer payload the hub sent (from :func:`hub_offer`).
        psk: :func:`derive_psk` of the row's password and the hub's node_id.
        static_private: the hub's raw X25519 static private key.
        pinned_client_key: the row's pinned client static key, if any; KK
            requires it, and an XX client key that differs is refused.
        ephemeral_private: fixed ephemeral, for test vectors only.

    Use: ``receive(payload)`` for each client HANDSHAKE; it returns the m2
    payload to send, or ``None`` when the handshake is done (after m3 in XX,
    or at once after m2 in KK: check :attr:`done`).
    """

    def __init__(
        self,
        hello: Mapping[str, Any],
        offer: Mapping[str, Any],
        *,
        psk: bytes,
        static_private: bytes,
        pinned_client_key: bytes | None = None,
        ephemeral_private: bytes | None = None,
    ) -> None:
        self._hello, self._offer = hello, offer
        self._psk, self._static = psk, static_private
        self._pin = pinned_client_key
        self._ephemeral = ephemeral_private
        self._state: HandshakeState | None = None
        self.pattern: str | None = None
        self.suite: str | None = None
        self._binarize = False
        self._encoding: str | None = None
        self.result: V3Result | None = None

    @property
    def done(self) -> bool:
        """Whether the handshake completed (then :attr:`result` is set)."""
        return self.result is not None

    def receive(self, payload: Mapping[str, Any]) -> dict[str, Any] | None:
        """Take a client HANDSHAKE payload; return the reply payload, if any.

        Raises:
            HandshakeError: no ``noise`` (a v1 client), or a malformed message.
            NegotiationFailed: a pattern or suite not in the offer.
            AuthenticationFailed: a message did not verify (wrong password; in
                KK, a client that is not the pinned one), or an XX client key
                contradicts the pin.
            InvalidState: called after completion.
        """
        if self.done:
            raise InvalidState("the v3 handshake is already complete")
        if self._state is None:
            return self._first(payload)
        _read(self._state, _noise_msg(payload))  # m3: empty payload
        self._finish()
        return None

    def _first(self, payload: Mapping[str, Any]) -> dict[str, Any] | None:
        message = _noise_msg(payload)
        noise = payload["noise"]
        pattern, suite = noise.get("pattern"), noise.get("suite")
        offered = self._offer.get("noise") or {}
        if pattern not in offered.get("patterns", ()) or suite not in offered.get("suites", ()):
            raise NegotiationFailed(f"pattern/suite not offered: {pattern}/{suite}")
        if pattern == KK and self._pin is None:
            raise NegotiationFailed(f"pattern/suite not offered: {pattern}/{suite}")
        self.pattern, self.suite = str(pattern), str(suite)
        self._state = HandshakeState(
            self.pattern,
            self.suite,
            initiator=False,
            prologue=build_prologue(self._hello, self._offer, self.pattern, self.suite),
            static_private=self._static,
            psk=self._psk,
            remote_static=self._pin if pattern == KK else None,
            ephemeral_private=self._ephemeral,
        )
        self._parse_m1(_read(self._state, message))
        m2_payload = json.dumps({"encoding": self._encoding}).encode("utf-8")
        reply = {"noise": {"msg": self._state.write_message(m2_payload).hex()}}
        if self._state.complete:
            self._finish()
        return reply

    def _parse_m1(self, raw: bytes) -> None:
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise HandshakeError(REASON_FAILURE + "m1 payload is not JSON") from None
        encodings = body.get("encodings") if isinstance(body, dict) else None
        if not isinstance(encodings, list) or not encodings or not isinstance(encodings[0], str):
            raise HandshakeError(REASON_FAILURE + "m1 payload has no encodings")
        self._binarize = body.get("binarize") is True
        self._encoding = encodings[0]

    def _finish(self) -> None:
        state = self._state
        if state is None or self.pattern is None or self.suite is None:
            raise InvalidState("the v3 handshake has not started")
        remote = state.remote_static
        if remote is None:
            raise HandshakeError(REASON_FAILURE + "no client static key")
        if self._pin is not None and remote != self._pin:
            raise AuthenticationFailed(REASON_PIN_MISMATCH)
        to_hub, to_client = state.split()
        self.result = V3Result(
            self.pattern,
            self.suite,
            to_client,
            to_hub,
            remote,
            state.handshake_hash,
            self._binarize,
            self._encoding,
        )
