"""A v3 hub and client Connection joined in memory, for the v3 link tests."""

from __future__ import annotations

import os
from typing import Any

from hivemind_bus_client.protocol import crypto
from hivemind_bus_client.protocol.connection import (
    Connection,
    HandshakeComplete,
    MessageReceived,
    Role,
    V3Settings,
)
from hivemind_bus_client.protocol.message import HiveMessage, HiveMessageType
from hivemind_bus_client.protocol.noise import public_key

from .linkpair import LinkPair

HUB_KEY = crypto.create_private_key()
HUB_STATIC, CLIENT_STATIC = os.urandom(32), os.urandom(32)
HUB_PUB, CLIENT_PUB = public_key(HUB_STATIC), public_key(CLIENT_STATIC)
PSK = os.urandom(32)
HELLO = {"pubkey": None, "session": {"session_id": "s1"}, "site_id": "kitchen"}


def bus(text: str = "olá Büro") -> HiveMessage:
    return HiveMessage(
        HiveMessageType.BUS, {"type": "speak", "data": {"utterance": text}, "context": {}}
    )


def pair(
    hub_v3: dict[str, Any] | None = None,
    client_v3: dict[str, Any] | None = None,
    *,
    hub_kw: dict[str, Any] | None = None,
    client_kw: dict[str, Any] | None = None,
    client_has_v3: bool = True,
) -> LinkPair:
    hub = Connection(
        Role.HUB,
        password="pw",
        private_key=HUB_KEY,
        peer="ua::1::sat::x",
        node_id="hub-node",
        v3=V3Settings(**{"static_private": HUB_STATIC, "psk": PSK, **(hub_v3 or {})}),
        **(hub_kw or {}),
    )
    v3 = V3Settings(**{"static_private": CLIENT_STATIC, "psk": PSK, **(client_v3 or {})})
    client = Connection(
        Role.CLIENT,
        password="pw",
        hello=dict(HELLO),
        v3=v3 if client_has_v3 else None,
        **(client_kw or {}),
    )
    return LinkPair(client, hub).start()


def completed(events: list[Any]) -> HandshakeComplete:
    done = [e for e in events if isinstance(e, HandshakeComplete)]
    assert len(done) == 1, events
    return done[0]


def received(events: list[Any]) -> list[HiveMessage]:
    return [e.message for e in events if isinstance(e, MessageReceived)]


def close_of(lp: LinkPair, side: str) -> tuple[int, str]:
    closes = lp.closes(side)
    assert len(closes) == 1, closes
    return closes[0].code, closes[0].reason


def offer_of(lp: LinkPair) -> dict[str, Any]:
    payload: dict[str, Any] = HiveMessage.deserialize(lp.tap[1][1]).payload
    return payload
