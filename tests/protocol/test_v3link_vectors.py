"""The captured v3 sessions replayed through Connection itself, both roles.

Each side is a real :class:`Connection` given the captured secrets and
ephemeral keys; it is fed the other side's captured frames, and every frame it
emits must be the captured one, byte for byte: HELLO, offer, the Noise
messages, the client's HELLO and the BUS frames after Split().
"""

from __future__ import annotations

import json
from typing import Any, cast

from hivemind_bus_client.protocol.connection import (
    Connection,
    HandshakeComplete,
    HelloReceived,
    MessageReceived,
    Role,
    State,
    V3Settings,
)
from hivemind_bus_client.protocol.events import PSKNeeded
from hivemind_bus_client.protocol.message import HiveMessage, HiveMessageType
from hivemind_bus_client.protocol.noisecipher import CipherState
from hivemind_bus_client.protocol.v3handshake import KK, XX

from .v3data import (
    CLIENT_EPHEMERAL,
    CLIENT_STATIC,
    CLIENT_STATIC_PUB,
    HUB_EPHEMERAL,
    HUB_STATIC,
    HUB_STATIC_PUB,
    LIVE_KK,
    LIVE_PSK,
    LIVE_XX,
    PASSWORD,
    frame_bytes,
    frame_payload,
    frame_text,
    live_kk_hello,
)

CHACHA = "25519_ChaChaPoly_SHA256"
NODE_ID = frame_payload(LIVE_XX, "F1")["node_id"]


class CapturedPem:
    """Stands in for the hub's RSA key: only its public PEM is known (and announced)."""

    def public_bytes(self, *_: Any) -> bytes:
        return str(frame_payload(LIVE_XX, "F1")["pubkey"]).encode("ascii")


def plaintext(run: dict[str, Any], index: int) -> HiveMessage:
    return HiveMessage.deserialize(run["plaintexts"][index]["body"])


def decrypt(run: dict[str, Any], name: str, key: str, n: int) -> HiveMessage:
    """A captured transport frame's HiveMessage (run 2 lists no plaintexts)."""
    state = CipherState("ChaChaPoly", bytes.fromhex(run[key]))
    state.n = n
    plain = state.decrypt(frame_bytes(run, name))
    assert plain[0] == 0x00
    return HiveMessage.deserialize(plain[1:].decode())


def client_hello() -> dict[str, Any]:
    hello: dict[str, Any] = json.loads(LIVE_XX["plaintexts"][0]["body"])["payload"]
    return hello


def hub(run: dict[str, Any], peer: str, pinned: bytes | None) -> Connection:
    settings = V3Settings(
        static_private=HUB_STATIC,
        pinned_key=pinned,
        legacy_offer=False,  # the capture's hub was v3-only: its offer has no v1 keys
        ephemeral_private=HUB_EPHEMERAL,
    )
    return Connection(
        Role.HUB,
        private_key=cast(Any, CapturedPem()),
        peer=peer,
        node_id=NODE_ID,
        password=PASSWORD,
        resend_offer=(),
        v3=settings,
    )


def client(pinned: bytes | None) -> Connection:
    settings = V3Settings(
        static_private=CLIENT_STATIC,
        psk=LIVE_PSK,
        pinned_key=pinned,
        ephemeral_private=CLIENT_EPHEMERAL,
    )
    return Connection(Role.CLIENT, password=PASSWORD, hello=client_hello(), v3=settings)


def only(events: list[Any], kind: type) -> Any:
    found = [e for e in events if isinstance(e, kind)]
    assert len(found) == 1, events
    return found[0]


def test_hub_replays_live_xx_byte_for_byte():
    conn = hub(LIVE_XX, frame_payload(LIVE_XX, "F1")["peer"], None)
    conn.start(0.0)
    assert conn.frames_to_send() == [frame_text(LIVE_XX, "F1"), frame_text(LIVE_XX, "F2")]
    assert conn.events() == [PSKNeeded(NODE_ID)]
    # m1 arrives before the PSK is derived: it waits in the link.
    conn.receive_frame(frame_text(LIVE_XX, "F3"))
    assert conn.frames_to_send() == [] and conn.events() == []
    conn.provide_psk(LIVE_PSK)
    assert conn.frames_to_send() == [frame_text(LIVE_XX, "F4")]
    assert conn.state is State.HANDSHAKING
    conn.receive_frame(frame_text(LIVE_XX, "F5"))
    done = only(conn.events(), HandshakeComplete)
    assert (done.mode, done.protocol, done.pattern, done.suite) == ("noise", 3, XX, CHACHA)
    assert done.cipher == "ChaChaPoly" and done.binarize is False
    assert done.peer_static == CLIENT_STATIC_PUB == conn.v3.peer_static
    assert conn.state is State.READY and conn.frames_to_send() == []
    conn.receive_frame(frame_bytes(LIVE_XX, "F6"))
    assert only(conn.events(), HelloReceived).payload == client_hello()
    conn.receive_frame(frame_bytes(LIVE_XX, "F7"))
    assert only(conn.events(), MessageReceived).message == plaintext(LIVE_XX, 1)
    conn.send(plaintext(LIVE_XX, 2))
    assert conn.frames_to_send() == [frame_bytes(LIVE_XX, "F8")]


def test_hub_replays_live_kk_byte_for_byte():
    conn = hub(LIVE_KK, LIVE_KK["peer"], CLIENT_STATIC_PUB)
    conn.start(0.0)
    hello = HiveMessage(HiveMessageType.HELLO, live_kk_hello()).serialize()
    assert conn.frames_to_send() == [hello, frame_text(LIVE_KK, "F2")]
    conn.provide_psk(LIVE_PSK)  # before m1 this time
    assert conn.frames_to_send() == []
    conn.receive_frame(frame_text(LIVE_KK, "F3"))
    # KK completes on the hub with m2.
    assert conn.frames_to_send() == [frame_text(LIVE_KK, "F4")]
    done = only(conn.events(), HandshakeComplete)
    assert (done.protocol, done.pattern, done.peer_static) == (3, KK, CLIENT_STATIC_PUB)
    conn.receive_frame(frame_bytes(LIVE_KK, "F5"))
    assert only(conn.events(), HelloReceived).payload == client_hello()
    conn.receive_frame(frame_bytes(LIVE_KK, "F6"))
    utterance = only(conn.events(), MessageReceived).message
    assert utterance == decrypt(LIVE_KK, "F6", "k_c2s", 1)
    conn.send(decrypt(LIVE_KK, "F7", "k_s2c", 0))
    assert conn.frames_to_send() == [frame_bytes(LIVE_KK, "F7")]


def test_client_replays_live_xx_byte_for_byte():
    conn = client(None)
    conn.start(0.0)
    assert conn.frames_to_send() == []
    conn.receive_frame(frame_text(LIVE_XX, "F1"))
    conn.receive_frame(frame_text(LIVE_XX, "F2"))
    assert conn.frames_to_send() == [frame_text(LIVE_XX, "F3")]
    conn.receive_frame(frame_text(LIVE_XX, "F4"))
    # m3, then the HELLO as transport message n=0.
    assert conn.frames_to_send() == [frame_text(LIVE_XX, "F5"), frame_bytes(LIVE_XX, "F6")]
    done = only(conn.events(), HandshakeComplete)
    assert (done.protocol, done.pattern, done.peer_static) == (3, XX, HUB_STATIC_PUB)
    conn.send(plaintext(LIVE_XX, 1))
    assert conn.frames_to_send() == [frame_bytes(LIVE_XX, "F7")]
    conn.receive_frame(frame_bytes(LIVE_XX, "F8"))
    assert only(conn.events(), MessageReceived).message == plaintext(LIVE_XX, 2)


def test_client_replays_live_kk_byte_for_byte():
    conn = client(HUB_STATIC_PUB)
    conn.start(0.0)
    conn.receive_frame(HiveMessage(HiveMessageType.HELLO, live_kk_hello()).serialize())
    conn.receive_frame(frame_text(LIVE_KK, "F2"))
    assert conn.frames_to_send() == [frame_text(LIVE_KK, "F3")]
    conn.receive_frame(frame_text(LIVE_KK, "F4"))
    assert conn.frames_to_send() == [frame_bytes(LIVE_KK, "F5")]
    assert only(conn.events(), HandshakeComplete).pattern == KK
    conn.send(decrypt(LIVE_KK, "F6", "k_c2s", 1))
    assert conn.frames_to_send() == [frame_bytes(LIVE_KK, "F6")]
    conn.receive_frame(frame_bytes(LIVE_KK, "F7"))
    speak = only(conn.events(), MessageReceived).message
    assert speak.payload.msg_type == "speak"


def test_client_asks_for_the_psk_with_the_hello_node_id():
    settings = V3Settings(static_private=CLIENT_STATIC, ephemeral_private=CLIENT_EPHEMERAL)
    conn = Connection(Role.CLIENT, password=PASSWORD, hello=client_hello(), v3=settings)
    conn.start(0.0)
    conn.receive_frame(frame_text(LIVE_XX, "F1"))
    conn.receive_frame(frame_text(LIVE_XX, "F2"))
    assert conn.frames_to_send() == []
    assert [e for e in conn.events() if isinstance(e, PSKNeeded)] == [PSKNeeded(NODE_ID)]
    conn.provide_psk(LIVE_PSK)
    assert conn.frames_to_send() == [frame_text(LIVE_XX, "F3")]
