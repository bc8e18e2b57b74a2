"""The hub's link to its master (nested hives): this hub joins another hub as a satellite.

Theory of operation
-------------------
When ``HubConfig.upstream.host`` is set, :class:`UpstreamLink` keeps one
websocket to the master, authenticated like any satellite (``authorization``
query with this hub's access key at the master, then the password or RSA
handshake of a sans-I/O :class:`~hivemind_bus_client.protocol.connection.Connection`
in ``Role.CLIENT``). Its HELLO announces ``is_hub: true`` and this hub's
``node_id``, so the master treats the link as a relay hub (site-targeted
BROADCASTs pass through it; loop checks recognise this hub's route hops).

Once keyed, the link is registered with the hub's router as
``Link(kind=LinkKind.UPSTREAM)`` and with :attr:`HubNode.sinks`, so:

* every message received from the master goes through :meth:`HubNode.route`
  (BROADCAST and PROPAGATE from above reach this hub's satellites, QUERY
  answers travel back down along their bindings);
* whatever the router sends to the master's peer is written here
  (:meth:`UpstreamLink.send_message`): ESCALATE and QUERY going up, floods.

Answers to an ESCALATE
----------------------
The master answers an escalated utterance to this relay hub; the return
tokens of :mod:`hivemind_core.returns` send that answer on to the satellite
that asked (:meth:`UpstreamLink.relay_down`).

Failure handling
----------------
The link is a client end like any other: the websocket comes from
:func:`hivemind_bus_client.transport.websocket.connect`, the one
:class:`~hivemind_bus_client.transport.driver.LinkDriver` runs the
``Role.CLIENT`` connection (so ``handshake_timeout`` is the connection's own
deadline), and failures are classified as the client classifies them
(:func:`hivemind_bus_client.transport.errors.close_error`,
:func:`hivemind_bus_client.protocol.reconnect.is_fatal`).

When the master goes away the link is removed from the router (and the
actions :meth:`Router.remove_link` returns are executed: QUERYs waiting on
the master are answered ``hive.query.timeout``) and the hub reconnects with
:func:`~hivemind_bus_client.protocol.reconnect.backoff` (first retry within a second,
capped). A refusal of this hub's credentials during the handshake (HTTP
401/403, a policy close, a wrong password or no common cipher) is fatal:
logged once as an error, no retry loop; the hub itself keeps serving its
satellites. Pointing the upstream at one of this hub's own listeners raises
:class:`UpstreamConfigError` at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from hivemind_bus_client.exceptions import CloseCode, HiveMindError
from hivemind_bus_client.protocol import crypto
from hivemind_bus_client.protocol.connection import (
    Connection,
    Event,
    HandshakeComplete,
    HelloReceived,
    MessageReceived,
    Role,
    State,
)
from hivemind_bus_client.protocol.message import HiveMessage, HiveMessageType
from hivemind_bus_client.protocol.reconnect import backoff, is_fatal
from hivemind_bus_client.protocol.router import Link, LinkKind, Permissions
from hivemind_bus_client.transport.channel import ChannelClosed
from hivemind_bus_client.transport.driver import LinkDriver
from hivemind_bus_client.transport.errors import close_error
from hivemind_bus_client.transport.tls import client_context
from hivemind_bus_client.transport.websocket import connect
from hivemind_core.admission import authorization_token
from hivemind_core.config import UpstreamConfig, is_own_listener
from hivemind_core.errors import UpstreamConfigError, UpstreamRefused
from hivemind_core.node import HubNode
from hivemind_core.returns import RETURN_KEY, ReturnTokens

__all__ = [
    "RETURN_KEY",
    "UpstreamConfigError",
    "UpstreamLink",
    "UpstreamRefused",
    "is_own_listener",
]

LOG = logging.getLogger(__name__)

T = HiveMessageType

#: Default useragent this hub presents to its master.
DEFAULT_USERAGENT = "HiveMind-relay-hub"


class UpstreamLink:
    """This hub's connection to its master (see the module docstring).

    Args:
        server: the hub node whose router and sinks the link joins.
        config: master address and this hub's credentials there.
        listen_ports: this hub's own ports (the master may not be one of them).
        delays: reconnect delays (default: jittered exponential backoff,
            first retry under a second, capped at ``max_delay``).
        max_delay: cap of the default backoff, seconds.
        connect_timeout: seconds for TCP, TLS and the websocket upgrade of one
            attempt (default: ``config.connect_timeout``).
        handshake_timeout: seconds the HiveMind handshake of one attempt may
            take once the socket is open (default: ``config.handshake_timeout``).
    """

    def __init__(
        self,
        server: HubNode,
        config: UpstreamConfig,
        *,
        listen_ports: Iterable[int] = (),
        delays: Callable[[], Iterator[float]] | None = None,
        max_delay: float = 10.0,
        connect_timeout: float | None = None,
        handshake_timeout: float | None = None,
    ) -> None:
        self.server = server
        self.config = config
        self.listen_ports = set(listen_ports)
        self.peer = f"upstream::{config.host}:{config.port}"
        self.where = f"{config.host}:{config.port}"
        self._delays = delays or (lambda: backoff(initial=0.5, max_delay=max_delay))
        self.connect_timeout = connect_timeout or config.connect_timeout
        self.handshake_timeout = handshake_timeout or config.handshake_timeout
        self.driver: LinkDriver | None = None
        #: Set once the router knows the link (keyed and registered).
        self.linked = asyncio.Event()
        #: Why the link stopped for good, if it did.
        self.fatal_error: BaseException | None = None
        #: Successful connections so far.
        self.connects = 0
        #: Connection attempts so far.
        self.attempts = 0
        #: The master's node id and public key, from its HELLO.
        self.master_node_id: str | None = None
        self.master_pubkey: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        #: The return tokens of escalated messages (answers find their satellite).
        self.returns = ReturnTokens(server)

    # -- life cycle ---------------------------------------------------------------

    def check(self) -> None:
        """Refuse settings that cannot work.

        Raises:
            UpstreamConfigError: the upstream is this hub's own listener, or has no key.
        """
        cfg = self.config
        listen = self.server.config
        ports = self.listen_ports | {listen.port}
        if listen.http_port:
            ports.add(listen.http_port)
        if is_own_listener(cfg.host, cfg.port, listen.host, ports):
            raise UpstreamConfigError(
                f"upstream {cfg.host}:{cfg.port} is this hub's own listener "
                f"({listen.host}, ports {sorted(ports)}); a hub cannot be its own master"
            )
        if not cfg.key:
            raise UpstreamConfigError("upstream.key (this hub's access key at its master) is empty")

    async def start(self) -> None:
        """Check the settings and start connecting in the background (returns at once)."""
        self.check()
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name="hivemind-upstream-link"
        )

    async def stop(self) -> None:
        """Close the link and stop reconnecting."""
        self._stopping = True
        driver = self.driver
        if driver is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(driver.close(CloseCode.GOING_AWAY, "hub stopping"), 2)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._unlink()

    @property
    def share_bus(self) -> bool:
        """Whether this hub shows its bus to the master (``upstream.share_bus``)."""
        return bool(self.config.share_bus)

    @property
    def connected(self) -> bool:
        """Whether the master link is keyed and registered with the router."""
        return self.linked.is_set()

    # -- the sink the router writes to -----------------------------------------------

    def send_message(self, message: HiveMessage) -> None:
        """Encode ``message`` for the master and write it (never blocks)."""
        driver = self.driver
        if driver is None or driver.conn.state is not State.READY:
            self.server.count("upstream_dropped_not_ready")
            return
        if message.msg_type is T.ESCALATE:
            self.returns.mark(message)
        try:
            driver.send(message)
        except ChannelClosed:
            self.server.count("upstream_dropped_not_ready")

    def close(self, code: int, reason: str) -> None:
        """Close the current link (the link reconnects unless it is stopping)."""
        driver = self.driver
        if driver is not None:
            asyncio.get_running_loop().create_task(
                driver.close(code, reason), name="hivemind-upstream-close"
            )

    # -- ESCALATE answers --------------------------------------------------------------

    def relay_down(self, payload: dict[str, Any]) -> bool:
        """Send a BUS answer from the master on to the satellite whose request it answers.

        See :meth:`hivemind_core.returns.ReturnTokens.relay_down`.
        """
        return self.returns.relay_down(payload)

    # -- connecting ----------------------------------------------------------------------

    def _url(self) -> str:
        cfg = self.config
        token = authorization_token(cfg.useragent or DEFAULT_USERAGENT, cfg.key)
        scheme = "wss" if cfg.ssl else "ws"
        host = f"[{cfg.host}]" if ":" in cfg.host and not cfg.host.startswith("[") else cfg.host
        return f"{scheme}://{host}:{cfg.port}/?authorization={token}"

    def _new_connection(self) -> Connection:
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
        )

    async def _run(self) -> None:
        delays = self._delays()
        while not self._stopping:
            try:
                linked = await self._session()
                if linked:
                    delays = self._delays()  # it worked: the next outage starts short
            except UpstreamRefused as exc:
                self.fatal_error = exc
                LOG.error(
                    "upstream %s refused this hub: %s; not retrying (fix upstream key/password "
                    "in server.json and restart)",
                    self.where,
                    exc,
                )
                return
            except HiveMindError as exc:
                LOG.info("upstream %s unavailable: %s", self.where, exc)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.server.count("errors")
                LOG.exception("upstream link to %s failed", self.where)
            finally:
                self._unlink()
            if self._stopping:
                return
            delay = next(delays, None)
            if delay is None:
                LOG.error("upstream %s: giving up reconnecting", self.where)
                return
            LOG.info("reconnecting to upstream %s in %.2f s", self.where, delay)
            await asyncio.sleep(delay)

    async def _session(self) -> bool:
        """One connection: open, handshake, register, relay until it drops.

        Returns whether the link was keyed; raises what ended it otherwise.

        Raises:
            UpstreamRefused: the master refused this hub (retrying cannot help).
            HiveMindError: the attempt failed in a way worth retrying.
        """
        cfg = self.server.config
        self.attempts += 1
        try:
            channel = await connect(
                self._url(),
                ssl_context=client_context(self.config.ssl, self.config.self_signed),
                open_timeout=self.connect_timeout,
                max_size=cfg.max_frame_size,
                ping_interval=cfg.ping_interval or None,
                ping_timeout=cfg.ping_timeout or None,
                user_agent=DEFAULT_USERAGENT,
                where=self.where,
                max_frames=max(1, cfg.send_queue),
            )
        except HiveMindError as exc:
            if is_fatal(exc):
                raise UpstreamRefused(str(exc)) from exc
            raise
        conn = self._new_connection()
        driver = LinkDriver(
            conn, channel, self._on_event, clock=self.server.now, name="hub-upstream"
        )
        self.driver = driver
        try:
            driver.start()
            ended = await driver.run()
        finally:
            self.driver = None
        linked = self.connected
        error = close_error(ended, self.where, handshaking=not linked, mode=conn.mode)
        if not linked and is_fatal(error):
            raise UpstreamRefused(str(error)) from error
        LOG.info("upstream %s: link ended: %s", self.where, error)
        return linked

    def _on_event(self, event: Event) -> None:
        if isinstance(event, MessageReceived):
            if self.connected:
                self.server.route(self.peer, event.message)
        elif isinstance(event, HandshakeComplete):
            if self.driver is not None:
                self._link(self.driver.conn)
        elif isinstance(event, HelloReceived):
            self._on_hello(event.payload)

    def _on_hello(self, payload: dict[str, Any]) -> None:
        node_id = payload.get("node_id")
        if isinstance(node_id, str) and node_id:
            self.master_node_id = node_id
            link = self.server.router.links.get(self.peer)
            if link is not None:
                link.node_id = node_id
        pub = payload.get("pubkey")
        if isinstance(pub, str) and pub:
            self.master_pubkey = pub

    # -- router registration ---------------------------------------------------------------

    def _link(self, conn: Connection) -> None:
        server = self.server
        if self.master_node_id is None and conn.node_id:
            self.master_node_id = conn.node_id
        pub = conn.peer_hello.get("pubkey")
        if isinstance(pub, str) and pub:
            self.master_pubkey = pub
        server.add_link(
            Link(
                self.peer,
                LinkKind.UPSTREAM,
                Permissions(),
                node_id=self.master_node_id,
                pubkey=self.master_pubkey,
            ),
            self,
        )
        self.connects += 1
        self.linked.set()
        LOG.info(
            "linked to master %s at %s:%d (%s handshake)",
            self.master_node_id or "?",
            self.config.host,
            self.config.port,
            conn.mode,
        )

    def _unlink(self) -> None:
        """Forget the master link; answer what was waiting on it."""
        if not self.linked.is_set():
            return
        self.linked.clear()
        self.server.remove_link(self.peer, self)
        LOG.warning("link to master %s:%d lost", self.config.host, self.config.port)
