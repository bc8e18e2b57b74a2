"""The hub's websocket listener: accepted sockets become satellite links.

One asyncio task per socket (``websockets`` asyncio server). Sockets past the
connection caps (``max_connections`` in total, ``max_connections_per_address``)
are closed at once with 1013 and a reason. Before the
upgrade, an address over its failed-authentication budget gets HTTP 429 with
``Retry-After``. After it, the ``?authorization=base64(useragent:access_key)``
query goes through the hub's admission step (unknown, revoked or malformed:
close 1008 with a one-line reason); an admitted socket is wrapped in a
:class:`~hivemind_bus_client.transport.websocket.ServerWebSocketChannel`
(non-blocking writes, bounded backlog, 1013 on overflow) and handed to a
:class:`~hivemind_core.links.SatelliteLink`, which does the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import ssl

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from hivemind_bus_client.exceptions import CloseCode
from hivemind_bus_client.transport.websocket import ServerWebSocketChannel
from hivemind_core.admission import Refusal, parse_authorization
from hivemind_core.links import SatelliteLink
from hivemind_core.listeners import Hub
from hivemind_core.logs import install_redaction

__all__ = ["WebSocketListener", "remote_host"]

LOG = logging.getLogger(__name__)


def remote_host(ws: ServerConnection) -> str:
    """The peer's IP address (the throttle's key), or ``unknown``."""
    remote = ws.remote_address
    if isinstance(remote, tuple) and remote:
        return str(remote[0])
    return "unknown"


class WebSocketListener:
    """Serves satellites over websockets for ``hub``.

    Args:
        hub: the node, admission and upkeep.
        host: address to bind.
        port: TCP port (0: any free port, see :attr:`port`).
        ssl_context: serve ``wss://`` with this context.
    """

    def __init__(
        self, hub: Hub, host: str, port: int, *, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.hub = hub
        self.node = hub.node
        self.host = host
        self.requested_port = port
        self.ssl_context = ssl_context
        self._server: Server | None = None
        #: Open sockets by address (the connection caps).
        self._open: dict[str, int] = {}
        self._capped = False

    async def start(self) -> None:
        """Bind and serve; returns once the socket is bound."""
        cfg = self.node.config
        self.hub.upkeep.watch_idle(cfg.idle_timeout)
        install_redaction()  # websockets' DEBUG request lines carry the authorization query
        self._server = await serve(
            self._handler,
            self.host,
            self.requested_port,
            process_request=self._process_request,
            compression=None,
            max_size=cfg.max_frame_size,
            ping_interval=cfg.ping_interval or None,
            ping_timeout=cfg.ping_timeout or None,
            open_timeout=min(cfg.handshake_timeout, 10.0) or None,
            ssl=self.ssl_context,
            server_header="HiveMind",
        )

    @property
    def port(self) -> int:
        """The bound TCP port (useful with ``port=0``)."""
        if self._server is not None:
            for sock in self._server.sockets:
                return int(sock.getsockname()[1])
        return self.requested_port

    async def serve_forever(self) -> None:
        """Serve until cancelled."""
        assert self._server is not None
        await self._server.serve_forever()

    async def close(self) -> None:
        """Stop listening and close every socket (1001)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)

    def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        """Refuse addresses (and keys) over their failed-auth budget before the upgrade."""
        admission = self.hub.admission
        address = admission.address(remote_host(ws), request.headers.get("X-Forwarded-For"))
        creds = parse_authorization(request.path)
        refusal = admission.throttled(creds, address, self.node.now())
        if refusal is None:
            return None
        response = ws.respond(http.HTTPStatus.TOO_MANY_REQUESTS, refusal.reason + "\n")
        response.headers["Retry-After"] = str(refusal.retry_after)
        return response

    def _over_cap(self, address: str) -> str | None:
        """Why one more socket from ``address`` is refused (``None``: it is not)."""
        cfg = self.node.config
        total = sum(self._open.values())
        if cfg.max_connections > 0 and total >= cfg.max_connections:
            return f"too many connections ({cfg.max_connections})"
        per = cfg.max_connections_per_address
        if per > 0 and self._open.get(address, 0) >= per:
            return f"too many connections from this address ({per})"
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        node = self.node
        forwarded = ws.request.headers.get("X-Forwarded-For") if ws.request else None
        address = self.hub.admission.address(remote_host(ws), forwarded)
        node.count("connections")
        reason = self._over_cap(address)
        if reason is not None:
            node.count("refused_connection_cap")
            if not self._capped:  # once per episode, not per socket
                LOG.warning("refusing connections: %s (from %s)", reason, address)
            self._capped = True
            with contextlib.suppress(Exception):
                await ws.close(CloseCode.TRY_AGAIN, reason)
            return
        self._capped = False
        self._open[address] = self._open.get(address, 0) + 1
        try:
            await self._serve(ws, address)
        finally:
            left = self._open.pop(address, 1) - 1
            if left > 0:
                self._open[address] = left

    async def _serve(self, ws: ServerConnection, address: str) -> None:
        node = self.node
        try:
            creds = parse_authorization(ws.request.path if ws.request else "")
            verdict = await self.hub.admission.check_off_loop(creds, address, node.now())
            if isinstance(verdict, Refusal):
                await ws.close(verdict.code, verdict.reason)
                return
            channel = ServerWebSocketChannel(
                ws,
                max_frames=max(1, node.config.send_queue),
                max_bytes=max(1, node.config.send_queue_bytes),
            )
            link = SatelliteLink(
                node,
                self.hub.admission,
                channel,
                verdict,
                address,
                idle_timeout=node.config.idle_timeout,
            )
            link.open()
            await link.run()
        except Exception:
            node.count("errors")
            LOG.exception("connection from %s failed", address)
            with contextlib.suppress(Exception):
                await ws.close(CloseCode.INTERNAL, "internal error")
