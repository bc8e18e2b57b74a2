"""The hub as one object: :class:`HubServer` is a :class:`~hivemind_core.node.HubNode` with its
websocket listener, admission step, upkeep and (nested hives) upstream link.

This is the public path programs, tests and the CLI have always used::

    server = HubServer(config, database, agent)
    await server.start()
    ...
    await server.stop()

The pieces live in their own modules: :mod:`hivemind_core.node` (router,
sessions, agent, the action executor), :mod:`hivemind_core.links` (one
satellite link over any channel), :mod:`hivemind_core.admission`,
:mod:`hivemind_core.upkeep`, :mod:`hivemind_core.listeners` and
:mod:`hivemind_core.upstream`. Names that used to be defined here are
re-exported.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from typing import Any

from hivemind_bus_client.exceptions import CloseCode
from hivemind_bus_client.protocol import crypto
from hivemind_bus_client.transport.websocket import send_nowait
from hivemind_core.admission import Admission, parse_authorization
from hivemind_core.agents.base import Agent
from hivemind_core.binary import BinaryHandler
from hivemind_core.config import HubConfig
from hivemind_core.links import SatelliteLink
from hivemind_core.listeners.websocket import WebSocketListener
from hivemind_core.node import HubNode, Sink, hub_trusted_keys
from hivemind_core.throttle import AuthThrottle
from hivemind_core.upkeep import Upkeep
from hivemind_core.upstream import UpstreamLink

__all__ = [
    "CLOSE_OVERFLOW",
    "HubServer",
    "MessageSink",
    "SatelliteLink",
    "hub_trusted_keys",
    "parse_authorization",
    "send_nowait",
]

LOG = logging.getLogger(__name__)

#: The link's send backlog overflowed (slow consumer); retryable.
CLOSE_OVERFLOW = CloseCode.TRY_AGAIN

#: Old name of :class:`~hivemind_core.node.Sink`.
MessageSink = Sink


class HubServer(HubNode):
    """A HiveMind hub: node, websocket listener, admission, upkeep, upstream link.

    Args:
        config: listener, limits and crypto settings.
        database: the client database (``get_client_by_api_key``, ``list_clients``,
            ``revision``).
        agent: what answers satellites; started and stopped with the server.
        binary_handler: where BINARY messages go (default: log and drop).
        private_key: the hub's RSA key (HELLO pubkey, RSA handshake); a fresh one
            when omitted.
        node_id: this hub's id in HELLO and route hops (default: derived from the key).
        site_id: this hub's own site (BROADCAST targeting).
        ssl_context: serve ``wss://`` with this context.
        noise_key: the hub's raw X25519 static key for protocol v3 (a fresh one
            when omitted; :func:`hivemind_core.noise_keys.hub_noise_key` reads the file).
        permission_poll: seconds between checks of the database revision.
    """

    def __init__(
        self,
        config: HubConfig,
        database: Any,
        agent: Agent,
        binary_handler: BinaryHandler | None = None,
        *,
        private_key: crypto.PrivateKey | None = None,
        node_id: str | None = None,
        site_id: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        permission_poll: float = 1.0,
        noise_key: bytes | None = None,
    ) -> None:
        super().__init__(
            config,
            database,
            agent,
            binary_handler,
            private_key=private_key,
            node_id=node_id,
            site_id=site_id,
            noise_key=noise_key,
        )
        self.ssl_context = ssl_context
        self.permission_poll = permission_poll
        self.throttle = AuthThrottle(config.failed_auth_budget, config.auth_window)
        self._admission = Admission(self, self.throttle)
        self._upkeep = Upkeep(self, permission_poll)
        self.listener = WebSocketListener(self, config.host, config.port, ssl_context=ssl_context)
        #: The link to this hub's master (nested hives), when ``config.upstream.host`` is set.
        self.upstream: UpstreamLink | None = None

    # -- what listeners see (hivemind_core.listeners.Hub) -------------------------------

    @property
    def node(self) -> HubNode:
        """This hub's node (the server is one)."""
        return self

    @property
    def admission(self) -> Admission:
        """The one admission step of every listener."""
        return self._admission

    @property
    def upkeep(self) -> Upkeep:
        """Permission reload and the idle sweep."""
        return self._upkeep

    # -- life cycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Start the agent, then listen. Returns once the socket is bound."""
        self.bind()
        await self.agent.start(self.agent_reply)
        cfg = self.config
        self.listener.ssl_context = self.ssl_context  # may have been set after construction
        await self.listener.start()
        self._upkeep.start()
        if cfg.upstream.host:
            upstream = UpstreamLink(self, cfg.upstream, listen_ports=self.listen_ports())
            self.upstream = upstream
            try:
                await upstream.start()
            except BaseException:
                self.upstream = None
                await self.stop()
                raise
        LOG.debug(
            "HiveMind hub %s listening on %s://%s:%d (agent: %s)",
            self.node_id,
            "wss" if self.ssl_context else "ws",
            cfg.host,
            self.port,
            self.agent.name,
        )

    def listen_ports(self) -> set[int]:
        """The TCP ports this hub serves on (an upstream may not point at them)."""
        cfg = self.config
        ports = {cfg.port, self.port}
        if cfg.http_port:
            ports.add(cfg.http_port)
        return ports

    @property
    def port(self) -> int:
        """The bound TCP port (useful with ``port=0``)."""
        return self.listener.port

    async def serve_forever(self) -> None:
        """Run until cancelled."""
        if self._loop is None:
            await self.start()
        await self.listener.serve_forever()

    async def stop(self) -> None:
        """Close every connection (1001), stop the agent and the binary handler."""
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            with contextlib.suppress(Exception):
                await upstream.stop()
        self.halt()
        await self._upkeep.stop()
        await self.listener.close()
        with contextlib.suppress(Exception):  # the last leaves' last_seen
            await self.node.last_seen.aclose()
        with contextlib.suppress(Exception):
            await self.agent.stop()
        with contextlib.suppress(Exception):
            self.binary_handler.close()

    def reload_permissions(self) -> None:
        """Re-read every connected client's record; close links whose record is gone."""
        self._upkeep.reload_permissions()
