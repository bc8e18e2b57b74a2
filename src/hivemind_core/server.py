"""The hub's websocket listener: sockets in, protocol core and router in the middle, agent out.

Theory of operation
-------------------
One asyncio task per websocket (``websockets`` asyncio API). The task

1. authenticates the ``?authorization=base64(useragent:access_key)`` query
   against the client database (unknown, revoked or malformed: close 1008 with
   a one-line reason; repeated failures from one address: HTTP 429 at the
   upgrade, see :mod:`hivemind_core.throttle`);
2. drives one sans-I/O :class:`~hivemind_bus_client.protocol.connection.Connection`
   (``Role.HUB``): every received frame is fed in, its events handled, its
   frames written; its handshake deadline is a loop timer;
3. registers the link with the :class:`~hivemind_bus_client.protocol.router.Router` once
   the client's HELLO names its session (unique peer, :mod:`hivemind_core.session`)
   and announces the final peer in an encrypted HELLO;
4. hands every application message to :meth:`Router.handle` and carries out the
   returned actions in :meth:`HubServer.execute`, the one place actions are
   dispatched.

Writes never wait: frames go straight into the socket's transport buffer; when
the transport pushes back, frames queue in a bounded per-link backlog drained
by a task, and a link whose backlog overflows is closed (1013, retryable).

Agent replies come in through :meth:`HubServer.agent_reply` and go to the
satellites named in ``context.destination`` only (HUB.md §5.3), through the
router so each link's outbound ``message_blacklist`` applies.

Nothing a peer sends can raise out of a connection task: every exception is
caught, logged and counted in :attr:`HubServer.stats`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import http
import json
import logging
import ssl
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State as WsState

from hivemind_bus_client.exceptions import HandshakeError
from hivemind_bus_client.protocol import crypto
from hivemind_bus_client.protocol import router as _router_mod
from hivemind_bus_client.protocol.connection import (
    CloseRequested,
    Connection,
    HandshakeComplete,
    HelloReceived,
    MessageReceived,
    Role,
    State,
)
from hivemind_bus_client.protocol.message import HiveMessage, HiveMessageType
from hivemind_bus_client.protocol.router import (
    Deliver,
    Deny,
    Drop,
    Link,
    LinkKind,
    Permissions,
    Router,
    Send,
    denial_message,
)
from hivemind_core.agents.base import Agent
from hivemind_core.binary import BinaryHandler, LoggingBinaryHandler
from hivemind_core.config import HubConfig
from hivemind_core.session import LinkSession, PeerRegistry, peer_name
from hivemind_core.throttle import AuthThrottle
from hivemind_core.upstream import UpstreamLink

__all__ = [
    "CLOSE_OVERFLOW",
    "HubServer",
    "LinkChannel",
    "MessageSink",
    "hub_trusted_keys",
    "parse_authorization",
    "send_nowait",
]

LOG = logging.getLogger(__name__)

T = HiveMessageType

#: Close codes used here (see also hivemind_bus_client.exceptions).
CLOSE_POLICY = 1008
CLOSE_PERMISSION = 4003
CLOSE_GOING_AWAY = 1001
CLOSE_INTERNAL = 1011
#: The link's send backlog overflowed (slow consumer); retryable.
CLOSE_OVERFLOW = 1013

#: Router action added for QUERY/CASCADE (absent from older routers).
AskLocal: Any = getattr(_router_mod, "AskLocal", None)

#: Tombstone key of the reference's revoked rows: never a valid credential.
_REVOKED = "revoked"


class MessageSink(Protocol):
    """Anything the hub can write messages to (a satellite link, an upstream link ...)."""

    def send_message(self, message: HiveMessage) -> None:
        """Queue ``message`` for this link (never blocks)."""


def send_nowait(ws: Any, frame: str | bytes) -> bool:
    """Write one websocket frame without awaiting; False when the socket is not open.

    Uses the sans-I/O protocol object of the ``websockets`` asyncio connection
    directly (what ``send()`` does, minus its drain), so callers on the loop
    can write from synchronous code without a task per frame.
    """
    protocol = ws.protocol
    if protocol.state is not WsState.OPEN:
        return False
    if isinstance(frame, str):
        protocol.send_text(frame.encode())
    else:
        protocol.send_binary(frame)
    ws.send_data()
    return True


def hub_trusted_keys(config: HubConfig) -> dict[str, str]:
    """The keys a hub trusts: its identity file's ``trusted_keys``, then ``config.trusted_keys``.

    An unreadable identity file is logged by :class:`NodeIdentity` and trusts nothing.
    """
    keys: dict[str, str] = {}
    if config.identity_trust:
        from hivemind_bus_client.identity import NodeIdentity

        keys.update(NodeIdentity().trusted_keys)
    extra = config.trusted_keys or {}
    if isinstance(extra, (list, tuple)):  # a bare list of PEMs in server.json
        extra = {f"key-{i}": pem for i, pem in enumerate(extra)}
    keys.update(extra)
    if keys:
        LOG.info(
            "trusting %d key(s) for PROPAGATE(BUS) and INTERCOM: %s", len(keys), ", ".join(keys)
        )
    return keys


def parse_authorization(path: str) -> tuple[str, str] | None:
    """``(useragent, access_key)`` from a request path's ``authorization`` query, or None."""
    try:
        query = parse_qs(urlsplit(path).query)
    except ValueError:
        return None
    values = query.get("authorization")
    if not values:
        return None
    token = values[0].strip()
    token += "=" * (-len(token) % 4)
    try:
        raw = base64.b64decode(token.replace("-", "+").replace("_", "/"), validate=True)
        text = raw.decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    useragent, sep, key = text.partition(":")
    if not sep or not key:
        return None
    return useragent, key


class LinkChannel:
    """Stands in for the websocket on ``link.ws`` for transports without one (HTTP, MQTT).

    The server only closes it and reads the close code and reason; closing
    asks the transport's listener to ``finish`` the link. ``key`` is the
    access key whose link it carries (MQTT topics are named after it).
    """

    paused = False

    def __init__(self, listener: Any, key: str = "") -> None:
        self.listener = listener
        self.key = key
        self.link: SatelliteLink | None = None
        self.close_code: int | None = None
        self.close_reason = ""

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Called by the server (close requested by the core): end the link."""
        if self.link is not None:
            self.listener.finish(self.link, code, reason)


class SatelliteLink:
    """Per-connection state of one satellite (socket, protocol core, session, peer)."""

    __slots__ = (
        "address",
        "backlog",
        "client",
        "closing",
        "conn",
        "last_rx",
        "peer",
        "server",
        "session",
        "timer",
        "useragent",
        "ws",
    )

    def __init__(
        self,
        server: HubServer,
        ws: ServerConnection,
        conn: Connection,
        client: Any,
        useragent: str,
        address: str,
    ) -> None:
        self.server = server
        self.ws = ws
        self.conn = conn
        self.client = client
        self.useragent = useragent
        self.address = address
        self.peer: str | None = None
        self.session: LinkSession | None = None
        self.backlog: deque[str | bytes] | None = None
        self.closing = False
        self.last_rx = 0.0
        self.timer: asyncio.TimerHandle | None = None

    @property
    def base_name(self) -> str:
        """``useragent::client_id::name``."""
        return peer_name(self.useragent, self.client.client_id, self.client.name or "")

    def send_message(self, message: HiveMessage) -> None:
        """Encode ``message`` for this link and write it."""
        if self.closing or self.conn.state is not State.READY:
            self.server._count("dropped_not_ready")
            return
        self.write(self.conn.encode(message))

    def write(self, frame: str | bytes) -> None:
        """Write a frame now, or queue it behind a backlog (bounded)."""
        if self.closing:
            return
        backlog = self.backlog
        if backlog is not None:
            if len(backlog) >= self.server.config.send_queue:
                self.server._count("send_overflow")
                self.close(CLOSE_OVERFLOW, "send queue overflow (slow consumer)")
                return
            backlog.append(frame)
            return
        ws = self.ws
        if getattr(ws, "paused", False):
            self.backlog = deque((frame,))
            asyncio.get_running_loop().create_task(self._drain(), name="hivemind-link-drain")
            return
        send_nowait(ws, frame)

    async def _drain(self) -> None:
        backlog = self.backlog
        try:
            while backlog:
                await self.ws.send(backlog.popleft())
        except ConnectionClosed:
            pass
        except Exception:
            LOG.exception("error while draining the send queue of %s", self.peer)
        finally:
            self.backlog = None

    def close(self, code: int, reason: str) -> None:
        """Close the link with ``code`` and a one-line ``reason`` (once; later calls do nothing)."""
        if self.closing:
            return
        self.closing = True
        if self.conn.state not in (State.CLOSING, State.CLOSED):
            self.conn.close(code, reason)
        self._shut(code, reason)

    def _shut(self, code: int, reason: str) -> None:
        """End the transport; transports other than websocket override this."""
        text = reason.encode("utf-8")[:120].decode("utf-8", "ignore")
        asyncio.get_running_loop().create_task(
            self.ws.close(code, text), name="hivemind-link-close"
        )


class HubServer:
    """A HiveMind hub listener.

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
    ) -> None:
        self.config = config
        self.db = database
        self.agent = agent
        self.binary_handler = binary_handler or LoggingBinaryHandler()
        self.private_key = private_key or crypto.create_private_key()
        pub = crypto.public_key_pem(self.private_key)
        self.node_id = node_id or "hivemind-core::" + hashlib.sha256(pub.encode()).hexdigest()[:16]
        self.ssl_context = ssl_context
        self.permission_poll = permission_poll
        self.router = Router(
            self.node_id,
            site_id,
            hop_limit=config.hop_limit,
            flood_cache_size=config.flood_cache_size,
            max_violations=config.max_violations,
            private_key=self.private_key,
            trusted_keys=hub_trusted_keys(config),
            query_timeout=config.query_timeout,
            ping_rate=config.ping_rate,
            ping_burst=config.ping_burst,
        )
        self.throttle = AuthThrottle(config.failed_auth_budget, config.auth_window)
        self.peers = PeerRegistry()
        #: Every link the router can name, by peer (satellites, and e.g. an upstream link).
        self.sinks: dict[str, MessageSink] = {}
        #: Satellite connections, registered or not yet.
        self.connections: set[SatelliteLink] = set()
        #: Counters (connections, auth failures, denials, drops, errors ...).
        self.stats: dict[str, int] = {}
        #: Handlers for delivered message types other than BUS/SHARED_BUS/BINARY
        #: (mesh features plug in here): ``fn(message, origin_peer)``.
        self.local_handlers: dict[HiveMessageType, Callable[[HiveMessage, str | None], None]] = {}
        #: Extra action types (router extensions): ``{ActionClass: fn(action)}``.
        self.action_handlers: dict[type, Callable[[Any], None]] = {}
        #: Called with ``(ovos_dict, peer)`` for each SHARED_BUS message.
        self.shared_bus_observers: list[Callable[[dict[str, Any], str | None], None]] = []
        self._router_timer: asyncio.TimerHandle | None = None
        self._server: Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._revision: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: The link to this hub's master (nested hives), when ``config.upstream.host`` is set.
        self.upstream: UpstreamLink | None = None

    # -- life cycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Start the agent, then listen. Returns once the socket is bound."""
        self._loop = asyncio.get_running_loop()
        await self.agent.start(self.agent_reply)
        cfg = self.config
        self._server = await serve(
            self._handler,
            cfg.host,
            cfg.port,
            process_request=self._process_request,
            compression=None,
            max_size=cfg.max_frame_size,
            ping_interval=cfg.ping_interval or None,
            ping_timeout=cfg.ping_timeout or None,
            open_timeout=min(cfg.handshake_timeout, 10.0) or None,
            ssl=self.ssl_context,
            server_header="HiveMind",
        )
        with contextlib.suppress(Exception):
            self._revision = self.db.revision()
        loop = self._loop
        self._tasks.append(
            loop.create_task(self._watch_permissions(), name="hivemind-permission-watch")
        )
        if cfg.idle_timeout and cfg.idle_timeout > 0:
            self._tasks.append(loop.create_task(self._sweep_idle(), name="hivemind-idle-sweep"))
        if cfg.upstream.host:
            self.upstream = UpstreamLink(self, cfg.upstream)
            try:
                await self.upstream.start()
            except BaseException:
                self.upstream = None
                await self.stop()
                raise
        LOG.info(
            "HiveMind hub %s listening on %s://%s:%d (agent: %s)",
            self.node_id,
            "wss" if self.ssl_context else "ws",
            cfg.host,
            self.port,
            self.agent.name,
        )

    @property
    def port(self) -> int:
        """The bound TCP port (useful with ``port=0``)."""
        if self._server is None:
            return self.config.port
        for sock in self._server.sockets:
            return int(sock.getsockname()[1])
        return self.config.port

    async def serve_forever(self) -> None:
        """Run until cancelled."""
        if self._server is None:
            await self.start()
        assert self._server is not None
        await self._server.serve_forever()

    async def stop(self) -> None:
        """Close every connection (1001), stop the agent and the binary handler."""
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            with contextlib.suppress(Exception):
                await upstream.stop()
        if self._router_timer is not None:
            self._router_timer.cancel()
            self._router_timer = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None
        with contextlib.suppress(Exception):
            await self.agent.stop()
        with contextlib.suppress(Exception):
            self.binary_handler.close()

    def _count(self, what: str, n: int = 1) -> None:
        stats = self.stats
        stats[what] = stats.get(what, 0) + n

    # -- connection handling ------------------------------------------------------

    def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        """Refuse addresses over their failed-auth budget before the upgrade."""
        address = _address(ws)
        now = asyncio.get_running_loop().time()
        if self.throttle.blocked(address, now):
            self._count("auth_throttled")
            retry = int(self.throttle.retry_after(address, now)) + 1
            response = ws.respond(
                http.HTTPStatus.TOO_MANY_REQUESTS, "too many failed authentications\n"
            )
            response.headers["Retry-After"] = str(retry)
            return response
        return None

    def _auth_failed(self, ws: ServerConnection, address: str, reason: str) -> None:
        self._count("auth_failures")
        loop = asyncio.get_running_loop()
        self.throttle.failure(address, loop.time())
        LOG.info("refused connection from %s: %s", address, reason)

    def _lookup(self, key: str) -> Any:
        if key == _REVOKED:
            return None
        client = self.db.get_client_by_api_key(key)
        if client is None or getattr(client, "api_key", None) != key:
            return None
        return client

    async def _handler(self, ws: ServerConnection) -> None:
        address = _address(ws)
        self._count("connections")
        link: SatelliteLink | None = None
        try:
            creds = parse_authorization(ws.request.path if ws.request else "")
            if creds is None:
                self._auth_failed(ws, address, "missing or malformed authorization")
                await ws.close(CLOSE_POLICY, "missing or malformed authorization")
                return
            useragent, key = creds
            try:
                client = self._lookup(key)
            except Exception:
                LOG.exception("client database lookup failed")
                self._count("errors")
                await ws.close(CLOSE_INTERNAL, "client database unavailable")
                return
            if client is None:
                self._auth_failed(ws, address, "invalid access key")
                await ws.close(CLOSE_POLICY, "invalid access key")
                return
            link = self._open_link(ws, client, useragent, address)
            await self._serve(link)
        except ConnectionClosed:
            pass
        except Exception:
            self._count("errors")
            LOG.exception("connection from %s failed", address)
            with contextlib.suppress(Exception):
                await ws.close(CLOSE_INTERNAL, "internal error")
        finally:
            if link is not None:
                self._close_link(link)

    def new_connection(self, client: Any) -> Connection:
        """The hub end of a link for ``client``'s record, whatever the transport."""
        cfg = self.config
        return Connection(
            Role.HUB,
            password=getattr(client, "password", None) or None,
            crypto_key=getattr(client, "crypto_key", None) or None,
            private_key=self.private_key,
            encodings=cfg.allowed_encodings,
            ciphers=cfg.allowed_ciphers,
            binarize=cfg.binarize,
            prefer_own_order=cfg.prefer_hub_order,
            node_id=self.node_id,
            handshake_timeout=cfg.handshake_timeout,
            max_size=cfg.max_frame_size,
        )

    def _open_link(
        self,
        ws: ServerConnection,
        client: Any,
        useragent: str,
        address: str,
        link_class: type[SatelliteLink] = SatelliteLink,
    ) -> SatelliteLink:
        conn = self.new_connection(client)
        link = link_class(self, ws, conn, client, useragent, address)
        conn.peer = link.base_name
        self.connections.add(link)
        loop = asyncio.get_running_loop()
        now = link.last_rx = loop.time()
        conn.start(now)
        self._pump(link)
        return link

    async def _serve(self, link: SatelliteLink) -> None:
        conn = link.conn
        loop = asyncio.get_running_loop()
        async for frame in link.ws:
            if link.closing:
                break
            link.last_rx = loop.time()
            try:
                conn.receive_frame(frame)
                self._pump(link)
            except Exception:
                # A bug on our side, not the peer's: drop this frame, keep the link.
                self._count("errors")
                LOG.exception("error handling a frame from %s", link.peer or link.address)

    def _pump(self, link: SatelliteLink) -> None:
        """Handle the connection's events and write its frames."""
        conn = link.conn
        for event in conn.events():
            kind = type(event)
            if kind is MessageReceived:
                if link.closing:
                    break
                if link.peer is None:
                    # No HELLO yet: register with a private session.
                    self._register(link, {})
                self.route(link.peer, event.message)  # type: ignore[arg-type]
            elif kind is HelloReceived:
                self._register(link, event.payload)
            elif kind is HandshakeComplete:
                LOG.info(
                    "%s from %s keyed: %s, cipher %s, encoding %s, binarize %s",
                    link.base_name,
                    link.address,
                    event.mode,
                    event.cipher or "-",
                    event.encoding or "-",
                    event.binarize,
                )
            elif kind is CloseRequested:
                self._on_close_requested(link, event)
        for frame in conn.frames_to_send():
            link.write(frame)
        self._arm_timer(link)

    def _on_close_requested(self, link: SatelliteLink, event: CloseRequested) -> None:
        if isinstance(event.error, HandshakeError) and event.code == CLOSE_POLICY:
            self._auth_failed(link.ws, link.address, event.reason)
        elif event.error is not None:
            self._count("protocol_errors")
            LOG.info("closing %s: %s (%d)", link.peer or link.address, event.reason, event.code)
        if not link.closing:
            link.closing = True
            text = event.reason.encode("utf-8")[:120].decode("utf-8", "ignore")
            asyncio.get_running_loop().create_task(
                link.ws.close(event.code, text), name="hivemind-link-close"
            )

    def _arm_timer(self, link: SatelliteLink) -> None:
        deadline = link.conn.get_timer()
        if link.timer is not None:
            if deadline is not None and link.timer.when() == deadline:
                return
            link.timer.cancel()
            link.timer = None
        if deadline is not None and not link.closing:
            link.timer = asyncio.get_running_loop().call_at(deadline, self._on_timer, link)

    def _on_timer(self, link: SatelliteLink) -> None:
        link.timer = None
        try:
            link.conn.handle_timer(asyncio.get_running_loop().time())
            self._pump(link)
        except Exception:
            self._count("errors")
            LOG.exception("timer of %s failed", link.peer or link.address)

    def _register(self, link: SatelliteLink, hello: dict[str, Any]) -> None:
        """Name the link after its session and add it to the router (or update it)."""
        client = link.client
        session = hello.get("session")
        if isinstance(session, str):
            try:
                session = json.loads(session)
            except ValueError:
                session = None
        sess = LinkSession(session, hello.get("site_id"), is_admin=bool(client.is_admin))
        pubkey = hello.get("pubkey")
        # Relay hubs name the id they stamp into routes (loop checks compare it).
        node_id = hello.get("node_id")
        if link.peer is not None and link.session is not None:
            if sess.session_id == link.session.session_id:
                link.session = sess
                rlink = self.router.links.get(link.peer)
                if rlink is not None:
                    rlink.site_id = sess.site_id
                link.conn.announce(link.peer, self.node_id)
                return
            self._unregister(link)
        peer = self.peers.claim(
            peer_name(link.useragent, client.client_id, client.name or "", sess.session_id)
        )
        link.peer = peer
        link.session = sess
        self.router.add_link(
            Link(
                peer,
                LinkKind.SATELLITE,
                Permissions.from_record(client),
                site_id=sess.site_id,
                session_id=sess.session_id,
                pubkey=pubkey if isinstance(pubkey, str) else None,
                is_hub=bool(hello.get("is_hub")),
                node_id=node_id if isinstance(node_id, str) and node_id else None,
            )
        )
        self.sinks[peer] = link
        link.conn.announce(peer, self.node_id)
        self._touch(link)
        if LOG.isEnabledFor(logging.DEBUG):
            LOG.debug("registered %s (site %s)", peer, sess.site_id)
        try:
            self.agent.client_connected(peer, sess.session_id)
        except Exception:
            self._count("errors")
            LOG.exception("agent.client_connected failed")

    def _touch(self, link: SatelliteLink) -> None:
        """Record ``last_seen`` (once per connect and disconnect, never per message)."""
        touch = getattr(self.db, "touch", None)
        if touch is None:
            return
        try:
            touch(link.client.client_id, time.time())
        except Exception:
            self._count("errors")
            LOG.debug("could not update last_seen", exc_info=True)

    def _unregister(self, link: SatelliteLink) -> None:
        peer = link.peer
        if peer is None:
            return
        link.peer = None
        self._touch(link)
        owed = self.router.remove_link(peer)
        if owed:
            self.execute(owed)
        if self.sinks.get(peer) is link:
            del self.sinks[peer]
        self.peers.release(peer)
        try:
            self.agent.client_disconnected(peer)
        except Exception:
            self._count("errors")
            LOG.exception("agent.client_disconnected failed")

    def _close_link(self, link: SatelliteLink) -> None:
        link.closing = True
        if link.timer is not None:
            link.timer.cancel()
            link.timer = None
        self._unregister(link)
        self.connections.discard(link)
        ws = link.ws
        link.conn.connection_lost(ws.close_code, ws.close_reason or "")

    # -- actions -------------------------------------------------------------------

    def route(self, peer: str, message: HiveMessage) -> None:
        """Hand a message received on link ``peer`` to the router and carry out its decision."""
        self.execute(self.router.handle(peer, message, asyncio.get_running_loop().time()))

    def execute(self, actions: Iterable[Any]) -> None:
        """Carry out router actions. The ONE place every action type is dispatched.

        ``Send`` writes to a link, ``Deliver`` hands a message to this node,
        ``Deny`` answers ``hive.policy.denied`` (closing with 4003 when the
        router says so), ``Drop`` is counted, ``AskLocal`` asks the agent.
        Other action types are looked up in :attr:`action_handlers`, so router
        extensions plug in without touching this method.
        """
        for action in actions:
            kind = type(action)
            try:
                if kind is Send:
                    sink = self.sinks.get(action.peer)
                    if sink is None:
                        self._count("dropped_no_link")
                    else:
                        sink.send_message(action.message)
                elif kind is Deliver:
                    self._deliver(action.message, action.origin)
                elif kind is Deny:
                    self._deny(action)
                elif kind is Drop:
                    self._count("dropped")
                    if LOG.isEnabledFor(logging.DEBUG):
                        LOG.debug("dropped message from %s: %s", action.peer, action.reason)
                elif kind is AskLocal:
                    self._ask_local(action)
                else:
                    handler = self.action_handlers.get(kind)
                    if handler is None:
                        self._count("unknown_actions")
                        LOG.warning("no handler for router action %s", kind.__name__)
                    else:
                        handler(action)
            except Exception:
                self._count("errors")
                LOG.exception("executing %s failed", kind.__name__)
        self._arm_router_timer()

    def _arm_router_timer(self) -> None:
        if self._loop is None:
            return
        deadline = self.router.get_timer()
        current = self._router_timer
        if current is not None:
            if deadline is not None and current.when() == deadline:
                return
            current.cancel()
            self._router_timer = None
        if deadline is not None:
            self._router_timer = self._loop.call_at(deadline, self._on_router_timer)

    def _on_router_timer(self) -> None:
        self._router_timer = None
        assert self._loop is not None
        try:
            self.execute(self.router.handle_timer(self._loop.time()))
        except Exception:
            self._count("errors")
            LOG.exception("router timer failed")

    def _ask_local(self, action: Any) -> None:
        """Ask the agent to answer a QUERY/CASCADE request; feed its answer to the router."""
        loop = self._loop
        assert loop is not None
        qid = action.query_id
        inner = action.message
        payload = inner.payload_dict() if inner.msg_type in (T.BUS, T.SHARED_BUS) else None
        done = False

        def answered(reply: dict[str, Any] | None) -> None:
            nonlocal done
            if done:
                return
            done = True
            now = loop.time()
            if reply is None:
                self.execute(self.router.local_decline(qid, now))
            else:
                self.execute(self.router.local_answer(qid, reply, now))

        if payload is None:
            answered(None)
            return
        self.agent.ask(dict(payload), answered)

    def _deny(self, deny: Deny) -> None:
        self._count("denied")
        sink = self.sinks.get(deny.peer)
        if LOG.isEnabledFor(logging.DEBUG):
            LOG.debug("denied %s from %s: %s", deny.denied_type, deny.peer, deny.reason)
        if sink is None:
            return
        sink.send_message(denial_message(deny))
        if deny.close:
            self._count("kicked")
            LOG.info("closing %s after repeated violations: %s", deny.peer, deny.reason)
            close = getattr(sink, "close", None)
            if close is not None:
                close(CLOSE_PERMISSION, f"permission violations: {deny.reason}")

    def _deliver(self, message: HiveMessage, origin: str | None) -> None:
        mtype = message.msg_type
        if mtype is T.BUS:
            payload = message.payload_dict()
            sink = self.sinks.get(origin) if origin is not None else None
            if isinstance(sink, SatelliteLink) and sink.session is not None:
                perms = self.router.links[origin].permissions  # type: ignore[index]
                out = sink.session.stamp(
                    payload,
                    origin,
                    perms.skill_blacklist,
                    perms.intent_blacklist,  # type: ignore[arg-type]
                )
                if not perms.is_admin:
                    self._guard_destination(out["context"], origin)  # type: ignore[arg-type]
            elif isinstance(sink, UpstreamLink) and sink.relay_down(payload):
                return  # an answer from the master for one of our satellites
            else:
                out = dict(payload)
            if isinstance(sink, SatelliteLink):
                self._share_up(out)  # first: the agent may answer before inject returns
            self.agent.inject(out)
        elif mtype is T.SHARED_BUS:
            self._count("shared_bus")
            payload = message.payload_dict()
            self.agent.observe(payload, origin or "")
            for observer in self.shared_bus_observers:
                observer(payload, origin)
        elif mtype is T.BINARY:
            peer = origin or ""
            self.binary_handler.handle(message, peer, lambda m: self._send_to(peer, m))
        else:
            handler = self.local_handlers.get(mtype)
            if handler is None:
                self._count("unhandled")
                if LOG.isEnabledFor(logging.DEBUG):
                    LOG.debug("no local handler for %s from %s", mtype.value, origin)
            else:
                handler(message, origin)

    def _share_up(self, payload: dict[str, Any]) -> None:
        """With ``upstream.share_bus``, show the master a message of this hub's bus."""
        up = self.upstream
        if up is None or not up.config.share_bus or not up.connected:
            return
        self._count("shared_up")
        up.send_message(HiveMessage(T.SHARED_BUS, payload))

    def _guard_destination(self, context: dict[str, Any], origin: str) -> None:
        """A non-admin may not address another live satellite through the agent."""
        dest = context.get("destination")
        sinks = self.sinks
        if isinstance(dest, str):
            if dest != origin and dest in sinks:
                context["destination"] = "skills"
                self._count("destination_rewritten")
        elif isinstance(dest, list) and any(
            isinstance(d, str) and d != origin and d in sinks for d in dest
        ):
            context["destination"] = [
                d for d in dest if not (d in sinks and d != origin)
            ] or "skills"
            self._count("destination_rewritten")

    def _send_to(self, peer: str, message: HiveMessage) -> None:  # reply path of handlers
        self.execute(self.router.send_to([peer], message))

    # -- agent side ------------------------------------------------------------------

    def agent_reply(self, message: dict[str, Any]) -> None:
        """Route an agent message to the satellites named in ``context.destination``."""
        try:
            context = message.get("context")
            if not isinstance(context, dict):
                return
            dest = context.get("destination")
            sinks = self.sinks
            if isinstance(dest, str):
                if dest not in sinks:
                    return
                targets = [dest]
            elif isinstance(dest, list):
                targets = [d for d in dest if isinstance(d, str) and d in sinks]
                if not targets:
                    return
            else:
                return
            context = dict(context)
            context["source"] = "hive"
            payload = {"type": message.get("type"), "data": message.get("data"), "context": context}
            self.execute(self.router.send_to(targets, HiveMessage(T.BUS, payload)))
            self._share_up(payload)
        except Exception:
            self._count("errors")
            LOG.exception("routing an agent reply failed")

    # -- background duties -----------------------------------------------------------

    def reload_permissions(self) -> None:
        """Re-read every connected client's record; close links whose record is gone."""
        records = {c.client_id: c for c in self.db.list_clients()}
        for link in list(self.connections):
            old = link.client
            record = records.get(old.client_id)
            if record is None or record.api_key != old.api_key or record.api_key == _REVOKED:
                LOG.info("credentials of %s were revoked; closing", link.peer or link.base_name)
                link.close(CLOSE_POLICY, "credentials revoked")
                continue
            link.client = record
            if link.peer is not None:
                rlink = self.router.links.get(link.peer)
                if rlink is not None:
                    rlink.permissions = Permissions.from_record(record)
        self._count("permission_reloads")

    async def _watch_permissions(self) -> None:
        while True:
            await asyncio.sleep(self.permission_poll)
            try:
                rev = self.db.revision()
                if rev != self._revision:
                    self._revision = rev
                    self.reload_permissions()
            except Exception:
                self._count("errors")
                LOG.exception("permission reload failed")

    async def _sweep_idle(self) -> None:
        idle = self.config.idle_timeout
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(max(idle / 4, 0.05), 5.0))
            horizon = loop.time() - idle
            for link in list(self.connections):
                if link.last_rx < horizon and not link.closing:
                    self._count("idle_closed")
                    link.close(CLOSE_GOING_AWAY, "idle timeout")


def _address(ws: ServerConnection) -> str:
    remote = ws.remote_address
    if isinstance(remote, tuple) and remote:
        return str(remote[0])
    return "unknown"
