"""Protocol v0 at the hub: the pre-shared ``crypto_key`` of HiveMind-js and other old clients.

A v0 client has no handshake. It shares a 16-character ``crypto_key`` with
the client row (AES-128-GCM, the key being the 16 UTF-8 characters) and
sends its first application frame sealed under it, right after connecting;
the hub's plaintext HELLO and offer are read and ignored. HiveMind-js seals
``{"nonce": hex(16 random bytes), "ciphertext": hex(ciphertext || tag)}``
(no ``tag`` field: the WebCrypto layout), which the JSON-HEX opener reads.

When is a frame v0 (:func:`is_v0`)? At the hub, a sealed frame other than a
HANDSHAKE that arrives while the link is still HANDSHAKING, on a link whose
row has a ``crypto_key``, while v0 is allowed (``allow_v0``, on by default)
and the hub does not require v3 for the row. That frame authenticates under
the pre-shared key, which is its proof; the link is keyed in PRESHARED mode
and no exchange follows. A row with a password too keeps its v1 handshake for
the clients that use it: only their HANDSHAKE frames start one.

v0's key never changes, so a frame captured on one link would authenticate
on the next. The per-link replay memory (:mod:`.replay`) cannot see that;
so the hub also checks every nonce of a v0 link, received or sent, against
the client's memory across links (``fresh_iv``, the one that refuses
replayed password handshakes): a frame seen on any earlier link of the
client, within that bounded memory, is dropped as a replay (or reflection).
"""

from __future__ import annotations

from typing import Any

from hivemind_bus_client.protocol.events import FrameDropped
from hivemind_bus_client.protocol.handshake import HandshakeMode
from hivemind_bus_client.protocol.message import HiveMessage, HiveMessageType
from hivemind_bus_client.protocol.states import Role, State

__all__ = ["accepts_v0", "fresh", "is_v0", "remember_sent"]


def accepts_v0(conn: Any) -> bool:
    """Whether the hub end ``conn`` may key a link by its pre-shared key alone."""
    if conn.role is not Role.HUB or not conn.crypto_key or not conn.allow_v0:
        return False
    v3 = conn.v3
    return v3 is None or v3.settings.min_protocol_version < 3


def is_v0(conn: Any, msg: HiveMessage) -> bool:
    """Whether a sealed frame carrying ``msg`` is (or keys) a v0 link's frame."""
    if conn.mode is HandshakeMode.PRESHARED:
        return True
    return (
        conn.state is State.HANDSHAKING
        and msg.msg_type is not HiveMessageType.HANDSHAKE
        and accepts_v0(conn)
    )


def fresh(conn: Any, nonce: bytes | None) -> FrameDropped | None:
    """None when ``nonce`` is new to the client's memory across links, else the drop to report."""
    check = conn.fresh_iv
    if check is None or nonce is None or check(b"v0:" + nonce):
        return None
    conn.gate.replays_dropped += 1
    return FrameDropped("replay", conn.gate.replays_dropped)


def remember_sent(conn: Any, nonce: bytes | None) -> None:
    """Remember a nonce the hub sealed a v0 frame with: sent back on any link, it is dropped."""
    check = conn.fresh_iv
    if conn.mode is HandshakeMode.PRESHARED and check is not None and nonce is not None:
        check(b"v0:" + nonce)
