"""The key exchange steps of the v1 handshake: password, RSA and pre-shared key.

Pure functions of payloads and keys; the
:class:`~hivemind_bus_client.protocol.connection.Connection` calls them and
owns the state. The whole opening, hub first::

    hub    -> HELLO {pubkey, peer, node_id}                   plaintext
    hub    -> HANDSHAKE offer  (hub_offer)
    client -> HANDSHAKE reply  (client_reply: envelope | pubkey)
    hub    -> HANDSHAKE answer (hub_check, then hub_finish: envelope, encoding, cipher)
    client: key from the answer (client_finish)
    client -> HELLO {pubkey, session, site_id}                encrypted
    hub    -> HELLO {peer, node_id, pubkey}                   encrypted (final peer)

* **password**: each side sends a password envelope (a salt it chose, bound to
  the password); each verifies the other's, and both derive the key from the
  password and the two salts. A wrong password fails at the handshake.
* **rsa**: the client sends its public key; the hub answers with a fresh key
  sealed to it and signed by the hub's own key.
* **preshared**: the legacy mode: a 16-character key is in force from the
  first frame, there is no exchange.

Deliberate differences from the reference: each side verifies the other's
password envelope, so a wrong password is refused at the handshake (close
1008) instead of by a failed decryption later; a client row with a password
must use the password handshake (no RSA fallback that would skip the
password); the hub may prefer its own encoding order (fast encodings first)
among those the client offers.

Every refusal raises :class:`~hivemind_bus_client.exceptions.NegotiationFailed`
(nothing in common, impossible mode), :class:`AuthenticationFailed` (wrong
credentials) or :class:`ProtocolError` (a malformed step); the connection
turns them into a close.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from hivemind_bus_client.exceptions import (
    AuthenticationFailed,
    CryptoError,
    HandshakeReplayed,
    InvalidCipher,
    InvalidEncoding,
    NegotiationFailed,
    ProtocolError,
)
from hivemind_bus_client.protocol import crypto
from hivemind_bus_client.protocol.encodings import SupportedEncodings
from hivemind_bus_client.protocol.encryption import LinkCipher, SupportedCiphers
from hivemind_bus_client.protocol.limits import short_repr

__all__ = [
    "CLIENT_CIPHERS",
    "CLIENT_ENCODINGS",
    "HUB_CIPHERS",
    "HUB_ENCODINGS",
    "ClientReply",
    "HandshakeMode",
    "HubAnswer",
    "KeyJob",
    "Settings",
    "choose",
    "client_finish",
    "client_reply",
    "hub_answer",
    "hub_check",
    "hub_finish",
    "hub_offer",
    "resolve_names",
]

#: What a peer that names no encoding or cipher means (the protocol's defaults).
DEFAULT_ENCODING = SupportedEncodings.JSON_HEX.value
DEFAULT_CIPHER = SupportedCiphers.AES_GCM.value


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


def resolve_names(values: Sequence[Any], resolve: Any) -> list[str]:
    """Wire names of ``values``, skipping the ones this implementation does not know."""
    out = []
    for v in values:
        try:
            out.append(resolve(v).value)
        except (InvalidEncoding, InvalidCipher):
            continue
    return out


class Settings(Protocol):
    """What the handshake steps read from one end of the link (a ``Connection`` has it all)."""

    password: str | None
    crypto_key: str | bytes | None
    private_key: crypto.PrivateKey | None
    peer_public_key: crypto.PublicKey | None
    #: Wire names: client: offered, in order; hub: accepted, in order of preference.
    encodings: list[str]
    ciphers: list[str]
    want_binarize: bool
    #: Hub: choose by its own preference order instead of the client's.
    prefer_own_order: bool


class HandshakeMode(str, Enum):
    """How the link's key was agreed. A ``str`` enum: ``mode == "password"`` holds."""

    PASSWORD = "password"
    RSA = "rsa"
    PRESHARED = "preshared"
    NOISE = "noise"  #: protocol v3 (protocol.v3link)

    def __str__(self) -> str:
        return self.value


def hub_offer(me: Settings) -> dict[str, Any]:
    """The hub's HANDSHAKE offer: what it accepts and which handshake it wants."""
    # Protocol v0 (protocol.legacy): the row's pre-shared key alone, when allowed.
    preshared = me.crypto_key is not None and getattr(me, "allow_v0", True)
    return {
        "handshake": not preshared,
        "min_protocol_version": 0 if preshared else 1,
        "max_protocol_version": 1,
        "binarize": me.want_binarize,
        "preshared_key": preshared,
        "password": me.password is not None,
        "crypto_required": True,
        "encodings": list(me.encodings),
        "ciphers": list(me.ciphers),
    }


def choose(offered: Any, allowed: Sequence[str], what: str, prefer_own_order: bool) -> str:
    """The hub's pick among the client's ``offered`` names (``what``: "encoding", "cipher").

    Raises:
        NegotiationFailed: the list is malformed or shares nothing with ``allowed``.
    """
    if not isinstance(offered, list) or not all(isinstance(o, str) for o in offered):
        raise NegotiationFailed(f"client {what} list is malformed")
    if prefer_own_order:
        picks = [a for a in allowed if a in offered]
    else:
        picks = [o for o in offered if o in allowed]
    if not picks:
        raise NegotiationFailed(
            f"no common {what}: client offers {short_repr(offered, 200)},"
            f" hub allows {list(allowed)}"
        )
    return picks[0]


@dataclass(frozen=True, slots=True)
class HubAnswer:
    """The hub's answer to a client HANDSHAKE: the plaintext reply and the new key."""

    reply: dict[str, Any]
    cipher: LinkCipher
    mode: HandshakeMode
    binarize: bool


@dataclass(frozen=True, slots=True)
class KeyJob:
    """A checked client HANDSHAKE, waiting for its key (hub side; see :func:`hub_check`).

    Everything the costly step needs and nothing that calls back: the
    password and the two salts (``password``, a PBKDF2 of about 25 ms), or the
    client's public key and the hub's private key (``rsa``, an RSA signature).
    Secrets stay out of ``repr``. :func:`hub_finish` runs it, in any thread.
    """

    mode: HandshakeMode
    encoding: str
    cipher: str
    binarize: bool
    #: password mode: the client's salt, and ours with the envelope we answer with.
    client_iv: bytes = b""
    own_envelope: str = ""
    password: str | None = field(default=None, repr=False)
    #: rsa mode.
    client_public: crypto.PublicKey | None = field(default=None, repr=False)
    hub_private: crypto.PrivateKey | None = field(default=None, repr=False)


def hub_check(payload: Any, me: Settings) -> KeyJob:
    """Check a client's HANDSHAKE without deriving anything (hub side).

    A hub with a password accepts only the password handshake; without one it
    needs its RSA key for a client that sent a public key. What is refused
    here (malformed, wrong password, a replayed envelope, nothing in common)
    costs at most a hash.
    """
    if not isinstance(payload, dict):
        raise NegotiationFailed("HANDSHAKE payload must be an object")
    own_order, password, private_key = me.prefer_own_order, me.password, me.private_key
    encoding = choose(
        payload.get("encodings", [DEFAULT_ENCODING]), me.encodings, "encoding", own_order
    )
    cipher = choose(payload.get("ciphers", [DEFAULT_CIPHER]), me.ciphers, "cipher", own_order)
    binarize = bool(me.want_binarize and payload.get("binarize"))
    envelope = payload.get("envelope")
    pubkey = payload.get("pubkey")
    if password is not None:
        if not isinstance(envelope, str):
            raise AuthenticationFailed("this client must use the password handshake")
        if not crypto.verify_password_envelope(envelope, password):
            raise AuthenticationFailed("wrong password")
        iv = crypto.envelope_iv(envelope)
        fresh: Callable[[bytes], bool] | None = getattr(me, "fresh_iv", None)  # hub: LinkSteps
        if fresh is not None and not fresh(iv):
            # Before the PBKDF2: a replayed first frame costs a hash, not a derivation.
            raise HandshakeReplayed("password envelope already used (a replayed HANDSHAKE)")
        return KeyJob(
            HandshakeMode.PASSWORD,
            encoding,
            cipher,
            binarize,
            client_iv=iv,
            own_envelope=crypto.password_envelope(password),
            password=password,
        )
    if isinstance(pubkey, str):
        if private_key is None:
            raise NegotiationFailed("this hub has no RSA key for the RSA handshake")
        try:
            client_pub = crypto.load_public_key(pubkey)
        except CryptoError as exc:
            raise NegotiationFailed(f"unusable client public key: {exc}") from None
        return KeyJob(
            HandshakeMode.RSA,
            encoding,
            cipher,
            binarize,
            client_public=client_pub,
            hub_private=private_key,
        )
    raise NegotiationFailed("HANDSHAKE has neither a password envelope nor a public key")


def hub_finish(job: KeyJob) -> HubAnswer:
    """Derive the link key of a checked HANDSHAKE: the costly step (pure, thread-safe)."""
    if job.mode is HandshakeMode.PASSWORD:
        own = job.own_envelope
        key = crypto.derive_password_key(job.password or "", job.client_iv, bytes.fromhex(own[:16]))
    elif job.client_public is not None and job.hub_private is not None:
        own, key = crypto.rsa_seal_handshake(job.client_public, job.hub_private)
    else:
        raise ProtocolError(f"a {job.mode} key job without its keys")
    reply = {"envelope": own, "encoding": job.encoding, "cipher": job.cipher}
    return HubAnswer(reply, LinkCipher(key, job.cipher, job.encoding), job.mode, job.binarize)


def hub_answer(payload: Any, me: Settings) -> HubAnswer:
    """:func:`hub_check` then :func:`hub_finish`: the whole hub step, inline."""
    return hub_finish(hub_check(payload, me))


@dataclass(frozen=True, slots=True)
class ClientReply:
    """The client's answer to an offer.

    ``reply`` is the HANDSHAKE payload to send (None in pre-shared mode: the
    key is already in force); ``iv`` the salt of our password envelope.
    """

    mode: HandshakeMode
    binarize: bool
    reply: dict[str, Any] | None
    iv: bytes | None = None


def client_reply(offer: dict[str, Any], me: Settings) -> ClientReply:
    """Choose the handshake the hub's ``offer`` allows with what we have (client side)."""
    max_version = offer.get("max_protocol_version", 1)
    if isinstance(max_version, int) and max_version < 0:
        raise NegotiationFailed("hub offers no usable protocol version")
    password, private_key = me.password, me.private_key
    binarize = bool(offer.get("binarize")) and me.want_binarize
    reply: dict[str, Any] = {
        "binarize": binarize,
        "encodings": list(me.encodings),
        "ciphers": list(me.ciphers),
    }
    hub_wants_password = bool(offer.get("password", True))
    if password is not None and hub_wants_password:
        # Sent in plaintext: the envelope proves, it does not reveal.
        envelope = crypto.password_envelope(password)
        reply["envelope"] = envelope
        return ClientReply(HandshakeMode.PASSWORD, binarize, reply, bytes.fromhex(envelope[:16]))
    if private_key is not None and not hub_wants_password:
        reply["pubkey"] = crypto.public_key_pem(private_key)
        return ClientReply(HandshakeMode.RSA, binarize, reply)
    if me.crypto_key and offer.get("preshared_key"):
        return ClientReply(HandshakeMode.PRESHARED, binarize, None)
    raise NegotiationFailed(
        "no handshake possible: the hub wants a password we do not have"
        if offer.get("password")
        else "no handshake possible: need a password, an RSA key or a pre-shared key"
    )


def client_finish(
    answer: dict[str, Any], me: Settings, mode: str | None, iv: bytes | None
) -> LinkCipher:
    """The link key from the hub's answer to our reply (``mode``, ``iv``: what we sent)."""
    password, private_key = me.password, me.private_key
    envelope = answer.get("envelope")
    if not isinstance(envelope, str):
        raise ProtocolError("HANDSHAKE reply without an envelope")
    encoding = answer.get("encoding") or DEFAULT_ENCODING
    cipher = answer.get("cipher") or DEFAULT_CIPHER
    if mode == HandshakeMode.PASSWORD and iv is not None:
        if not crypto.verify_password_envelope(envelope, password or ""):
            raise AuthenticationFailed("wrong password (the hub's envelope does not match)")
        key = crypto.derive_password_key(password or "", iv, crypto.envelope_iv(envelope))
    elif mode == HandshakeMode.RSA and private_key is not None:
        key = crypto.rsa_open_handshake(envelope, private_key, me.peer_public_key)
    else:
        raise ProtocolError("unexpected HANDSHAKE reply")
    try:
        return LinkCipher(key, cipher, encoding)
    except (InvalidCipher, InvalidEncoding) as exc:
        raise NegotiationFailed(f"hub chose something we cannot use: {exc}") from None
