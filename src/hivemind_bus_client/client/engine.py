"""The client's link engine: one link to a hub over any channel, with reconnects.

:class:`LinkEngine` opens a :class:`~hivemind_bus_client.transport.channel.Channel`
through its ``channel_factory`` (websocket by default; HTTP polling and MQTT
clients pass their own), puts a fresh sans-I/O
:class:`~hivemind_bus_client.protocol.connection.Connection` on it for every
attempt (no crypto state survives a reconnect), and lets the one
:class:`~hivemind_bus_client.transport.driver.LinkDriver` move frames, so the
connection's ``handshake_timeout`` holds on every transport.

The engine makes no node decision: it has no PING, PONG, INTERCOM, QUERY or
CASCADE code. It reports through callbacks, all called on its loop:

* ``on_message(message)``: every application message of a keyed link, in order;
* ``on_state(up, reason)``: True once a link is keyed; False with the reason
  when it is lost or the engine stops for good;
* ``on_hello(payload)``: each HELLO of the hub (its peer string for us, its node id);
* ``on_open(up)``: True when a socket (channel) opened, before its handshake;
  False when that channel is gone (handshake failed, link lost, closed).

So a client node runs its router over it, and a hub's upstream link can reuse it
with the hub's own router.

Failures while opening are the hierarchy (docs/client.md, "Connect and handshake errors";
the table is in :mod:`hivemind_bus_client.transport.errors`). A dropped link is
reopened after jittered exponential backoff
(:mod:`hivemind_bus_client.protocol.reconnect`); refusals stop the loop and are
kept in :attr:`LinkEngine.fatal_error`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

from hivemind_bus_client.client.config import ClientConfig
from hivemind_bus_client.client.keys import (
    ChannelFactory,
    LinkKeys,
    build_session,
    websocket_factory,
)
from hivemind_bus_client.client.sending import EngineSending
from hivemind_bus_client.client.v3client import V3Client
from hivemind_bus_client.exceptions import (
    CloseCode,
    ConnectionClosedError,
    ConnectTimeout,
    HiveMindError,
)
from hivemind_bus_client.identity import NodeIdentity
from hivemind_bus_client.protocol.connection import (
    CloseRequested,
    Connection,
    Event,
    HandshakeComplete,
    HelloReceived,
    MessageReceived,
    PSKNeeded,
)
from hivemind_bus_client.protocol.message import HiveMessage
from hivemind_bus_client.protocol.reconnect import is_fatal
from hivemind_bus_client.protocol.v3settings import V3Settings
from hivemind_bus_client.transport.channel import Channel, ChannelClosed
from hivemind_bus_client.transport.driver import LinkDriver
from hivemind_bus_client.transport.errors import close_error

__all__ = ["ChannelFactory", "LinkEngine", "build_session", "websocket_factory"]

LOG = logging.getLogger(__name__)


class LinkEngine(EngineSending):
    """One client's link to its hub, with reconnects (see the module docstring).

    Args:
        config: merged client settings.
        identity: the node identity (public key for HELLO, RSA key).
        channel_factory: opens a channel to the hub (default: websocket).
        on_message: called with each application message of a keyed link.
        on_state: called with (keyed?, reason) on every change.
        on_hello: called with the payload of each HELLO of the hub.
        on_open: called with True when a channel opened, False when it is gone.
        connection_factory: builds the sans-I/O Connection of each attempt from
            its v3 settings (``None``: v1 only); default :meth:`LinkKeys.new_connection`.
        v3: the protocol v3 state (static key, pins, PSK cache); default: the
            identity's files (:class:`~hivemind_bus_client.client.v3client.V3Client`).
        name: names the engine's task and log lines.
    """

    def __init__(
        self,
        config: ClientConfig,
        identity: NodeIdentity,
        *,
        channel_factory: ChannelFactory | None = None,
        on_message: Callable[[HiveMessage], None] | None = None,
        on_state: Callable[[bool, BaseException | None], None] | None = None,
        on_hello: Callable[[dict[str, Any]], None] | None = None,
        on_open: Callable[[bool], None] | None = None,
        connection_factory: Callable[[V3Settings | None], Connection] | None = None,
        v3: V3Client | None = None,
        name: str = "hivemind-client-link",
    ) -> None:
        self.config = config
        self.identity = identity
        self.channel_factory = channel_factory or websocket_factory(config)
        self.on_message = on_message
        self.on_state = on_state
        self.on_hello = on_hello
        self.on_open = on_open
        self.name = name
        self.loop: asyncio.AbstractEventLoop | None = None
        self.conn: Connection | None = None
        self.driver: LinkDriver | None = None
        self.ready: asyncio.Event | None = None
        #: Why the engine stopped for good (a refusal, or it gave up), if it did.
        self.fatal_error: BaseException | None = None
        self.closing = False
        self._dropping = False
        #: What the hub told us.
        self.peer: str | None = None
        self.node_id: str | None = None
        self.hub_pubkey: str | None = None
        self.handshake: HandshakeComplete | None = None
        self.connects = 0
        self.stats: dict[str, int] = {"messages_in": 0, "messages_out": 0}
        self._run: asyncio.Task[ChannelClosed] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._keyed: asyncio.Future[None] | None = None
        self._early: list[HiveMessage] | None = None
        self._attempt_conn: Connection | None = None
        self.keys = LinkKeys(config, identity)
        #: Builds the Connection of each attempt (default: a client end with our settings).
        self.connection_factory: Callable[[V3Settings | None], Connection] = (
            connection_factory or self.keys.new_connection
        )
        #: Protocol v3: our static key, the hub's pin, the PSKs (docs/client.md).
        self.v3 = v3 if v3 is not None else V3Client(config, identity)
        self._psk_tasks: set[asyncio.Task[None]] = set()

    # -- opening a link ------------------------------------------------------------

    async def open_link(self) -> None:
        """Open a channel and complete the handshake, or raise (see the module docstring).

        A v3 attempt that fails before its session may be retried once at once
        (:meth:`V3Client.failed`: KK refused, so XX; a cached PSK refused).
        """
        for attempt in (1, 2):
            self._attempt_conn = None
            try:
                await self._open_once()
                return
            except HiveMindError as exc:
                retry, error = self.v3.failed(self._attempt_conn, exc)
                if retry and attempt == 1 and not self.closing:
                    LOG.info("v3 handshake with %s failed (%s); retrying", self.config.where, exc)
                    continue
                if error is exc:
                    raise
                raise error from exc

    async def _open_once(self) -> None:
        loop = asyncio.get_running_loop()
        self.loop = loop
        if self.ready is None:
            self.ready = asyncio.Event()
        cfg = self.config
        deadline = loop.time() + cfg.connect_timeout
        try:
            channel = await asyncio.wait_for(self.channel_factory(), cfg.connect_timeout)
        except asyncio.TimeoutError:
            raise ConnectTimeout(
                f"no link to {cfg.where} within {cfg.connect_timeout:g} s"
            ) from None
        self._opened(True)
        conn = self.connection_factory(self.v3.settings())
        self._attempt_conn = conn
        driver = LinkDriver(
            conn, channel, lambda ev: self._on_event(ev, conn, driver), name=self.name
        )
        self._keyed = keyed = loop.create_future()
        self._early = []
        driver.start()
        run = loop.create_task(driver.run(), name=f"{self.name}-driver")
        try:
            await asyncio.wait(
                {run, keyed}, timeout=deadline - loop.time(), return_when=asyncio.FIRST_COMPLETED
            )
            if not keyed.done():
                if run.done():
                    raise close_error(run.result(), cfg.where, handshaking=True, mode=conn.mode)
                raise ConnectTimeout(
                    f"hub at {cfg.where} did not complete the handshake within "
                    f"{cfg.connect_timeout:g} s"
                )
        except BaseException:
            self._early = None
            self._cancel_psk_tasks()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(driver.close(CloseCode.NORMAL, "handshake abandoned"), 2)
            run.cancel()
            with contextlib.suppress(BaseException):
                await run
            await self._release(channel)
            self._opened(False)
            raise
        self.conn, self.driver, self._run = conn, driver, run
        self.connects += 1
        self.ready.set()
        hs = self.handshake
        LOG.info(
            "connected to %s: %s handshake, cipher=%s encoding=%s binarize=%s",
            cfg.redacted(),
            hs.mode if hs else "?",
            hs.cipher if hs else "?",
            hs.encoding if hs else "?",
            hs.binarize if hs else "?",
        )
        if self.on_state is not None:
            self.on_state(True, None)
        early, self._early = self._early or [], None
        for msg in early:
            self._deliver(msg)

    def _opened(self, up: bool) -> None:
        if self.on_open is not None:
            self.on_open(up)

    def _on_event(self, event: Event, conn: Connection, driver: LinkDriver) -> None:
        if isinstance(event, MessageReceived):
            self.stats["messages_in"] += 1
            if self._early is not None:
                self._early.append(event.message)
            else:
                self._deliver(event.message)
        elif isinstance(event, HelloReceived):
            self._on_hello(event.payload)
        elif isinstance(event, PSKNeeded):
            task = asyncio.get_running_loop().create_task(
                self._provide_psk(conn, driver, event.node_id), name=f"{self.name}-psk"
            )
            self._psk_tasks.add(task)
            task.add_done_callback(self._psk_tasks.discard)
        elif isinstance(event, HandshakeComplete):
            self.handshake = event
            if event.protocol >= 3:
                self.v3.keyed(conn, event)
            if self._keyed is not None and not self._keyed.done():
                self._keyed.set_result(None)
        elif isinstance(event, CloseRequested) and self._early is None and not self._quiet:
            LOG.warning("closing link: %s (code %s)", event.reason, event.code)

    async def _provide_psk(self, conn: Connection, driver: LinkDriver, node_id: str) -> None:
        """Answer a PSKNeeded (cache, else Argon2id in a thread), then let the link go on."""
        try:
            psk = await self.v3.psk_for(node_id)
        except Exception as exc:  # the derivation itself failed: end this attempt
            LOG.error("deriving the v3 PSK failed: %r", exc)
            if driver.ended is None:
                await driver.close(CloseCode.INTERNAL, "PSK derivation failed")
            return
        if driver.ended is None:
            conn.provide_psk(psk)
            driver.process()

    def _cancel_psk_tasks(self) -> None:
        for task in list(self._psk_tasks):
            task.cancel()

    def _deliver(self, msg: HiveMessage) -> None:
        if self.on_message is not None:
            try:
                self.on_message(msg)
            except Exception:
                LOG.exception("handling a %s message failed", msg.msg_type.value)

    def _on_hello(self, payload: dict[str, Any]) -> None:
        peer = payload.get("peer")
        if isinstance(peer, str) and peer:
            # The reference hub announces the peer before it knows our session:
            # its real routing peer ends with our session id.
            if peer.endswith("::default"):
                peer = peer[: -len("default")] + self.config.session_id
            self.peer = peer
        node_id = payload.get("node_id")
        if isinstance(node_id, str) and node_id:
            self.node_id = node_id
        pub = payload.get("pubkey")
        if isinstance(pub, str) and pub:
            self.hub_pubkey = pub
        if self.on_hello is not None:
            self.on_hello(payload)

    # -- running ---------------------------------------------------------------------

    def start_supervisor(self) -> None:
        """Watch the link (and reconnect) in a named background task."""
        assert self.loop is not None
        self._supervisor = self.loop.create_task(self._supervise(), name=self.name)

    def delays(self) -> Iterator[float]:
        """The delays between attempts (see :meth:`ClientConfig.delays`)."""
        return self.config.delays()

    async def _supervise(self) -> None:
        while True:
            run = self._run
            assert run is not None and self.ready is not None
            try:
                closed = await run
                reason: BaseException = close_error(closed, self.config.where, handshaking=False)
                reason = self.v3.lost(self.conn, reason)
            except Exception as exc:  # a bug below must not kill the link silently
                LOG.exception("link driver failed")
                reason = exc
            self.ready.clear()
            if self.driver is not None:
                await self._release(self.driver.channel)
            self.driver = None
            self._opened(False)
            if self.closing:
                return
            level = logging.INFO if self._dropping else logging.WARNING
            self._dropping = False
            LOG.log(level, "link to %s lost: %s", self.config.redacted(), reason)
            if self.on_state is not None:
                self.on_state(False, reason)
            if not self.config.reconnect or is_fatal(reason):
                self._stop(reason)
                return
            if not await self._reconnect():
                return

    async def _reconnect(self) -> bool:
        attempt = 0
        for delay in self.delays():
            attempt += 1
            await asyncio.sleep(delay)
            if self.closing:
                return False
            try:
                await self.open_link()
                LOG.info("reconnected after %d attempt(s)", attempt)
                return True
            except HiveMindError as exc:
                if is_fatal(exc):
                    LOG.error("hub refused us on reconnect, giving up: %s", exc)
                    self._stop(exc)
                    return False
                LOG.info("reconnect attempt %d failed: %s", attempt, exc)
            except Exception as exc:
                LOG.warning("reconnect attempt %d failed: %r", attempt, exc)
        self._stop(ConnectionClosedError(None, f"gave up reconnecting after {attempt} attempts"))
        return False

    @staticmethod
    async def _release(channel: Channel) -> None:
        """Make sure an ended channel let go of its socket, threads or broker connection."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(channel.close(CloseCode.NORMAL, ""), 3)

    def _stop(self, reason: BaseException) -> None:
        self.fatal_error = reason
        LOG.error("client stopped: %s", reason)
        if self.on_state is not None:
            self.on_state(False, reason)

    async def drop_link(self, reason: str = "client dropped the link") -> None:
        """Close the current socket only: the supervisor reconnects as after a loss."""
        driver = self.driver
        if driver is not None:
            self._dropping = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(driver.close(CloseCode.NORMAL, reason), 3)

    @property
    def _quiet(self) -> bool:
        return self.closing or self._dropping

    async def close(self) -> None:
        """Close the link and stop reconnecting."""
        self.closing = True
        sup, self._supervisor = self._supervisor, None
        driver = self.driver
        if driver is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(driver.close(CloseCode.NORMAL, "client closing"), 3)
        if sup is not None and sup is not asyncio.current_task():
            sup.cancel()
            with contextlib.suppress(BaseException):
                await sup
        if self.ready is not None:
            self.ready.clear()
        self._cancel_psk_tasks()
