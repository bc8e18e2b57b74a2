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
* ``on_hello(payload)``: each HELLO of the hub (its peer string for us, its node id).

So a client node runs its router over it, and a hub's upstream link can reuse it
with the hub's own router.

Failures while opening are the hierarchy (docs/client.md, "Connect errors";
the table is in :mod:`hivemind_bus_client.transport.errors`). A dropped link is
reopened after jittered exponential backoff
(:mod:`hivemind_bus_client.protocol.reconnect`); refusals stop the loop and are
kept in :attr:`LinkEngine.fatal_error`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from hivemind_bus_client.client.config import ClientConfig
from hivemind_bus_client.exceptions import (
    CloseCode,
    ConnectionClosedError,
    ConnectTimeout,
    HiveMindError,
    InvalidState,
)
from hivemind_bus_client.identity import NodeIdentity
from hivemind_bus_client.protocol import crypto
from hivemind_bus_client.protocol.connection import (
    CloseRequested,
    Connection,
    Event,
    HandshakeComplete,
    HelloReceived,
    MessageReceived,
    Role,
)
from hivemind_bus_client.protocol.message import HiveMessage
from hivemind_bus_client.protocol.reconnect import backoff, is_fatal
from hivemind_bus_client.transport import websocket
from hivemind_bus_client.transport.channel import Channel, ChannelClosed
from hivemind_bus_client.transport.driver import LinkDriver
from hivemind_bus_client.transport.errors import close_error
from hivemind_bus_client.transport.tls import client_context

__all__ = ["ChannelFactory", "LinkEngine", "build_session", "websocket_factory"]

LOG = logging.getLogger(__name__)

#: Opens one channel to the hub (raising the hierarchy when it cannot).
ChannelFactory = Callable[[], Awaitable[Channel]]


def build_session(session_id: str, site_id: str) -> dict[str, Any]:
    """The OVOS session dict sent in our HELLO (a real id, never ``default``)."""
    try:
        from ovos_bus_client.session import Session

        data = Session(session_id=session_id).serialize()
    except Exception:  # ovos config unreadable: the two keys a hub needs
        LOG.debug("could not build a full OVOS session", exc_info=True)
        data = {"session_id": session_id}
    data["session_id"] = session_id
    data["site_id"] = site_id
    return data


def websocket_factory(config: ClientConfig) -> ChannelFactory:
    """The default channel: a websocket to ``config.url``."""

    async def open_channel() -> Channel:
        return await websocket.connect(
            config.url,
            ssl_context=client_context(config.secure, config.self_signed),
            open_timeout=config.connect_timeout,
            max_size=config.max_size,
            ping_interval=config.ping_interval,
            ping_timeout=config.ping_timeout,
            user_agent=config.useragent,
            where=config.where,
        )

    return open_channel


class LinkEngine:
    """One client's link to its hub, with reconnects (see the module docstring).

    Args:
        config: merged client settings.
        identity: the node identity (public key for HELLO, RSA key).
        channel_factory: opens a channel to the hub (default: websocket).
        on_message: called with each application message of a keyed link.
        on_state: called with (keyed?, reason) on every change.
        on_hello: called with the payload of each HELLO of the hub.
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
        name: str = "hivemind-client-link",
    ) -> None:
        self.config = config
        self.identity = identity
        self.channel_factory = channel_factory or websocket_factory(config)
        self.on_message = on_message
        self.on_state = on_state
        self.on_hello = on_hello
        self.name = name
        self.loop: asyncio.AbstractEventLoop | None = None
        self.conn: Connection | None = None
        self.driver: LinkDriver | None = None
        self.ready: asyncio.Event | None = None
        #: Why the engine stopped for good (a refusal, or it gave up), if it did.
        self.fatal_error: BaseException | None = None
        self.closing = False
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
        self._private_key: crypto.PrivateKey | None = None
        self._key_loaded = False
        self._session: dict[str, Any] | None = None

    # -- keys and session ----------------------------------------------------------

    @property
    def private_key(self) -> crypto.PrivateKey | None:
        """Our RSA key: the identity's, or a throwaway one when RSA mode needs it."""
        if not self._key_loaded:
            self._key_loaded = True
            self._private_key = self.identity.load_private_key()
            if self._private_key is None and not self.config.password:
                # No password: the RSA handshake is the only way in. A per-process
                # key is as good as any for link encryption.
                LOG.info("no RSA key in the identity; using a throwaway key for this process")
                self._private_key = crypto.create_private_key()
        return self._private_key

    @property
    def public_key_pem(self) -> str | None:
        """PEM of our public key, as HELLO and INTERCOM senders use it."""
        if self.identity.public_key:
            return self.identity.public_key
        key = self.private_key
        return crypto.public_key_pem(key) if key is not None else None

    def session_dict(self) -> dict[str, Any]:
        """Our OVOS session (built once; its id survives reconnects)."""
        if self._session is None:
            self._session = build_session(self.config.session_id, self.config.site_id)
        self._session["site_id"] = self.config.site_id
        return self._session

    def new_connection(self) -> Connection:
        """A fresh client Connection with our settings (one per link attempt)."""
        cfg = self.config
        hello = {
            "pubkey": self.identity.public_key,
            "session": self.session_dict(),
            "site_id": cfg.site_id,
        }
        return Connection(
            Role.CLIENT,
            password=cfg.password,
            crypto_key=cfg.crypto_key,
            private_key=self.private_key,
            encodings=cfg.encodings,
            ciphers=cfg.ciphers,
            binarize=cfg.binarize,
            compress=cfg.compress,
            hello=hello,
            handshake_timeout=cfg.handshake_timeout,
            max_size=cfg.max_size,
        )

    # -- opening a link ------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while a keyed link exists."""
        return self.ready is not None and self.ready.is_set()

    async def open_link(self) -> None:
        """Open a channel and complete the handshake, or raise (see the module docstring)."""
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
        conn = self.new_connection()
        driver = LinkDriver(conn, channel, self._on_event, name=self.name)
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
            with contextlib.suppress(Exception):
                await asyncio.wait_for(driver.close(CloseCode.NORMAL, "handshake abandoned"), 2)
            run.cancel()
            with contextlib.suppress(BaseException):
                await run
            await self._release(channel)
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

    def _on_event(self, event: Event) -> None:
        if isinstance(event, MessageReceived):
            self.stats["messages_in"] += 1
            if self._early is not None:
                self._early.append(event.message)
            else:
                self._deliver(event.message)
        elif isinstance(event, HelloReceived):
            self._on_hello(event.payload)
        elif isinstance(event, HandshakeComplete):
            self.handshake = event
            if self._keyed is not None and not self._keyed.done():
                self._keyed.set_result(None)
        elif isinstance(event, CloseRequested) and self._early is None and not self.closing:
            LOG.warning("closing link: %s (code %s)", event.reason, event.code)

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

    def _delays(self) -> Iterator[float]:
        delays = self.config.reconnect_delays
        if delays is None:
            return backoff(initial=0.5, max_delay=self.config.max_reconnect_delay)
        if callable(delays):
            return iter(delays())
        return iter(delays)

    async def _supervise(self) -> None:
        while True:
            run = self._run
            assert run is not None and self.ready is not None
            try:
                closed = await run
                reason: BaseException = close_error(closed, self.config.where, handshaking=False)
            except Exception as exc:  # a bug below must not kill the link silently
                LOG.exception("link driver failed")
                reason = exc
            self.ready.clear()
            if self.driver is not None:
                await self._release(self.driver.channel)
            self.driver = None
            if self.closing:
                return
            LOG.warning("link to %s lost: %s", self.config.redacted(), reason)
            if self.on_state is not None:
                self.on_state(False, reason)
            if not self.config.reconnect or is_fatal(reason):
                self._stop(reason)
                return
            if not await self._reconnect():
                return

    async def _reconnect(self) -> bool:
        attempt = 0
        for delay in self._delays():
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

    # -- sending ---------------------------------------------------------------------

    async def wait_ready(self, timeout: float) -> None:
        """Wait until a keyed link exists; raise if the client stopped or time ran out."""
        if self.ready is None:
            raise InvalidState("not connected: call connect() first")
        if self.ready.is_set():
            return
        if self.fatal_error is not None:
            raise ConnectionClosedError(None, f"client stopped: {self.fatal_error}")
        if self.closing:
            raise InvalidState("the client is closed")
        try:
            await asyncio.wait_for(self.ready.wait(), timeout)
        except asyncio.TimeoutError:
            raise ConnectionClosedError(
                None, f"no link to the hub (reconnecting) after {timeout:g} s"
            ) from None

    async def send(self, message: HiveMessage) -> None:
        """Encode and write one message, waiting for a link if one is being reopened."""
        await self.wait_ready(self.config.send_timeout)
        self.send_nowait(message, quiet=False)

    def send_nowait(self, message: HiveMessage, *, quiet: bool = True) -> bool:
        """Write one message on the current link now; False (or raise) when there is none.

        Raises (only with ``quiet=False``):
            ConnectionClosedError: the link is gone.
        """
        driver = self.driver
        if driver is None or not self.connected:
            if quiet:
                LOG.debug("no link: %s not sent", message.msg_type.value)
                return False
            raise ConnectionClosedError(None, "link lost while sending")
        try:
            driver.send(message)
        except ChannelClosed as exc:
            if quiet:
                return False
            raise ConnectionClosedError(exc.code, exc.reason or "link lost while sending") from None
        except InvalidState:
            if quiet:
                return False
            raise ConnectionClosedError(None, "link lost while sending") from None
        self.stats["messages_out"] += 1
        return True
