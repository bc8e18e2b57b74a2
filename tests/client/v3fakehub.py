"""The in-process fake hub (``fakehub.FakeHub``) speaking protocol v3 only, like a 5.x hub.

Our sans-I/O ``Connection(Role.HUB, v3=...)`` with the v3-only offer: a v1
client HANDSHAKE is refused 1008. It derives the PSK of the account's password
off its loop, pins each access key's client static key after the first
handshake (so the next offer includes KK), and records the pattern of every
keyed link. ``hub_static`` may be replaced between connections (a reinstalled hub).
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import websockets
from websockets.asyncio.server import ServerConnection

from hivemind_bus_client.connection import (
    CloseRequested,
    Connection,
    HandshakeComplete,
    HelloReceived,
    MessageReceived,
    PSKNeeded,
    Role,
)
from hivemind_bus_client.protocol.v3offer import derive_psk
from hivemind_bus_client.protocol.v3settings import V3Settings

from .fakehub import FakeHub, Link

HUB_NODE_ID = "fake-v3-hub-node-id"


class V3FakeHub(FakeHub):
    """See the module docstring."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.hub_static = bytes(range(32, 64))
        #: access key -> pinned client static public key (the hub's TOFU).
        self.client_pins: dict[str, bytes] = {}
        self.pin_clients = True
        #: Pattern of every keyed link, in order.
        self.patterns: list[str] = []
        #: Close reasons the hub sent.
        self.closes: list[str] = []
        self.psk_derivations = 0

    async def _handle_inner(self, ws: ServerConnection) -> None:
        path = ws.request.path if ws.request else ""
        _, _, auth = path.partition("/?authorization=")
        useragent, key = base64.b64decode(auth).decode().split(":", 1)
        account = self.accounts.get(key)
        if account is None or not account.password:
            await ws.close(1008, "invalid api key")
            return
        self.connections += 1
        peer = f"{useragent}::1::test::default"
        conn = Connection(
            Role.HUB,
            private_key=self.private_key,
            peer=peer,
            node_id=HUB_NODE_ID,
            binarize=self.binarize,
            v3=V3Settings(
                static_private=self.hub_static,
                pinned_key=self.client_pins.get(key),
                min_protocol_version=3,
                legacy_offer=False,
            ),
        )
        link = Link(peer, conn, ws)
        self.links[f"{peer}#{id(link)}"] = link
        password = account.password

        async def provide(node_id: str) -> None:
            psk = await asyncio.to_thread(derive_psk, password, node_id)
            self.psk_derivations += 1
            conn.provide_psk(psk)
            await handle_events()
            await self._flush(link)

        async def handle_events() -> None:
            for event in conn.events():
                if isinstance(event, PSKNeeded):
                    asyncio.get_running_loop().create_task(provide(event.node_id))
                elif isinstance(event, HandshakeComplete):
                    self.patterns.append(event.pattern)
                    if self.pin_clients and event.peer_static:
                        self.client_pins.setdefault(key, event.peer_static)
                elif isinstance(event, HelloReceived):
                    self._on_hello(link, event.payload)
                elif isinstance(event, MessageReceived):
                    with self._lock:
                        self.received.append(event.message)
                        self.frame_kinds.append((event.message.msg_type, event.binary))
                    self._respond(link, event.message)
                elif isinstance(event, CloseRequested):
                    self.closes.append(event.reason)
                    await self._flush(link)
                    await ws.close(event.code, event.reason)

        conn.start(0.0)
        await handle_events()
        await self._flush(link)
        try:
            async for frame in ws:
                conn.receive_frame(frame)
                await handle_events()
                await self._flush(link)
        except websockets.ConnectionClosed:
            pass
        finally:
            for name, value in list(self.links.items()):
                if value is link:
                    self.links.pop(name, None)
