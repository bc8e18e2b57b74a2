"""How the hub's link to its master is built: settings, channel, Connection, v3 state.

A base class of :class:`hivemind_core.upstream.UpstreamLink` and nothing else
(the life cycle and the router registration are in ``upstream.py``).

Protocol v3 to a 5.x master: the link uses this hub's own Noise static key
(``noise_key_path``; by default the identity rules of the client,
``<identity dir>/<identity name>_noise.key``, which is also where a 5.x hub
keeps its key) and pins the master's key in the identity file
(``pinned_noise_keys``, TOFU), as a satellite does (docs/client.md). The PSK
is derived on the hub's bounded key-derivation executor, once per process,
and kept in memory.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from hivemind_bus_client.client.config import ClientConfig
from hivemind_bus_client.client.v3client import V3Client
from hivemind_bus_client.identity import NodeIdentity
from hivemind_bus_client.protocol import crypto
from hivemind_bus_client.protocol.connection import Connection, Role
from hivemind_bus_client.protocol.v3offer import derive_psk
from hivemind_bus_client.protocol.v3settings import V3Settings
from hivemind_bus_client.transport.channel import Channel
from hivemind_bus_client.transport.tls import client_context
from hivemind_bus_client.transport.websocket import connect
from hivemind_core.config import UpstreamConfig

if TYPE_CHECKING:
    from hivemind_core.node import HubNode

__all__ = ["DEFAULT_USERAGENT", "UpstreamParts"]

#: Default useragent this hub presents to its master.
DEFAULT_USERAGENT = "HiveMind-relay-hub"


class UpstreamParts:
    """Settings, channel, Connection and v3 state of the master link (see the module docstring)."""

    server: HubNode
    config: UpstreamConfig
    where: str
    connect_timeout: float
    handshake_timeout: float
    _delays: Callable[[], Iterator[float]]
    _gave_up: bool
    #: This hub's Noise static key file for the master link (``None``: the identity rules).
    noise_key_path: str | os.PathLike[str] | None = None
    #: Where the master's pin is kept (``None``: the default identity file, read when needed).
    identity: NodeIdentity | None = None
    _v3: V3Client | None = None

    def _v3_state(self) -> V3Client:
        """The v3 state of the master link, made on first use and kept across attempts."""
        if self._v3 is None:
            if self.identity is None:
                self.identity = NodeIdentity()
            self._v3 = V3Client(
                self._client_config(),
                self.identity,
                key_path=self.noise_key_path,
                derive=self._derive_psk,
            )
        return self._v3

    async def _derive_psk(self, password: str, node_id: str) -> bytes:
        """Argon2id on the hub's bounded key-derivation executor (``HubNode.keywork``)."""
        return await self.server.keywork.run(derive_psk, password, node_id)

    def _client_config(self) -> ClientConfig:
        """The master link's settings, as the client's engine takes them."""
        cfg, hub = self.config, self.server.config
        return ClientConfig(
            host=cfg.host,
            port=cfg.port,
            key=cfg.key,
            password=cfg.password or None,
            useragent=cfg.useragent or DEFAULT_USERAGENT,
            site_id=cfg.site_id or self.server.router.site_id or "unknown",
            session_id=self.server.node_id,
            secure=cfg.ssl,
            self_signed=cfg.self_signed,
            connect_timeout=self.connect_timeout,
            handshake_timeout=self.handshake_timeout,
            reconnect_delays=self._engine_delays,
            ping_interval=hub.ping_interval or None,
            ping_timeout=hub.ping_timeout or None,
            max_size=hub.max_frame_size,
        )

    def _engine_delays(self) -> Iterator[float]:
        """The engine's reconnect delays; notes when they run out (the link gives up)."""
        yield from self._delays()
        self._gave_up = True

    async def _open_channel(self) -> Channel:
        """A websocket to the master with the hub's limits (the engine's channel factory)."""
        cfg = self.server.config
        client = self._client_config()
        return await connect(
            client.url,
            ssl_context=client_context(self.config.ssl, self.config.self_signed),
            open_timeout=self.connect_timeout,
            max_size=cfg.max_frame_size,
            ping_interval=client.ping_interval,
            ping_timeout=client.ping_timeout,
            user_agent=DEFAULT_USERAGENT,
            where=self.where,
            max_frames=max(1, cfg.send_queue),
            max_bytes=max(1, cfg.send_queue_bytes),
        )

    def _new_connection(self, v3: V3Settings | None = None) -> Connection:
        """The Connection of one attempt (``v3``: this hub's v3 settings, see ``_v3_state``)."""
        server = self.server
        site_id = self.config.site_id or server.router.site_id
        hello = {
            "pubkey": crypto.public_key_pem(server.private_key),
            "session": {"session_id": server.node_id, "site_id": site_id},
            "site_id": site_id,
            "node_id": server.node_id,
            "is_hub": True,
        }
        return Connection(
            Role.CLIENT,
            password=self.config.password or None,
            private_key=server.private_key,
            hello=hello,
            handshake_timeout=self.handshake_timeout,
            max_size=server.config.max_frame_size,
            v3=v3,
        )
