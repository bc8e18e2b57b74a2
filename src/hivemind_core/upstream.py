"""The hub's link to its master (nested hives): this hub joins another hub as a satellite.

Theory of operation
-------------------
When ``HubConfig.upstream.host`` is set, :class:`UpstreamLink` keeps one link
to the master, authenticated like any satellite (this hub's access key, then
the password or RSA handshake). Its HELLO announces ``is_hub: true`` and this
hub's ``node_id``, so the master treats the link as a relay hub.

The link is the client's :class:`~hivemind_bus_client.client.engine.LinkEngine`
(websocket channel, the one LinkDriver, so ``handshake_timeout`` is the
connection's own deadline; reconnects with backoff; failures classified as the
client classifies them), registered with the hub's router as its UPSTREAM
link: what the master sends goes through :meth:`HubNode.route`, what the router
sends up (ESCALATE, QUERY, floods) goes to the engine. Answers to escalated
requests find their satellite through the return tokens of
:mod:`hivemind_core.returns` (:meth:`UpstreamLink.relay_down`).

When the master goes away the link is removed from the router (QUERYs
waiting on it are answered ``hive.query.timeout``) and the hub reconnects,
first within a second, then backing off. A refusal of this hub's credentials
during the handshake (HTTP 401/403, a policy close, a wrong password or no
common cipher) is fatal: logged once as an error, no retry loop; the hub
keeps serving its satellites. Pointing the upstream at one of this hub's own
listeners raises :class:`UpstreamConfigError` at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from hivemind_bus_client.client.engine import LinkEngine
from hivemind_bus_client.exceptions import CloseCode, HandshakeError, HiveMindError
from hivemind_bus_client.identity import NodeIdentity
from hivemind_bus_client.protocol.connection import Connection
from hivemind_bus_client.protocol.message import HiveMessage, HiveMessageType
from hivemind_bus_client.protocol.reconnect import backoff, is_fatal
from hivemind_bus_client.protocol.router import Link, LinkKind, Permissions
from hivemind_core.config import UpstreamConfig, is_own_listener
from hivemind_core.errors import UpstreamConfigError, UpstreamRefused
from hivemind_core.node import HubNode
from hivemind_core.returns import RETURN_KEY, ReturnTokens
from hivemind_core.upstream_parts import DEFAULT_USERAGENT, UpstreamParts

__all__ = [
    "DEFAULT_USERAGENT",
    "RETURN_KEY",
    "UpstreamConfigError",
    "UpstreamLink",
    "UpstreamRefused",
    "is_own_listener",
]

LOG = logging.getLogger(__name__)

T = HiveMessageType


class UpstreamLink(UpstreamParts):
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
        noise_key_path: this hub's Noise static key file for protocol v3
            (default: the client identity rules, see ``upstream_parts``).
        identity: where the master's Noise pin is kept (default: the identity file).
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
        noise_key_path: str | os.PathLike[str] | None = None,
        identity: NodeIdentity | None = None,
    ) -> None:
        self.server = server
        self.config = config
        self.listen_ports = set(listen_ports)
        self.peer = f"upstream::{config.host}:{config.port}"
        self.where = f"{config.host}:{config.port}"
        self._delays = delays or (lambda: backoff(initial=0.5, max_delay=max_delay))
        self.connect_timeout = connect_timeout or config.connect_timeout
        self.handshake_timeout = handshake_timeout or config.handshake_timeout
        self.noise_key_path, self.identity = noise_key_path, identity
        #: The client engine of the current attempt (None between attempts).
        self.engine: LinkEngine | None = None
        self._stopped = asyncio.Event()
        self._gave_up = False
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
        """Close the link (1001) and stop reconnecting."""
        self._stopping = True
        engine = self.engine
        if engine is not None:
            engine.closing = True  # no reconnect after the close below
            driver = engine.driver
            if driver is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(driver.close(CloseCode.GOING_AWAY, "hub stopping"), 2)
            with contextlib.suppress(Exception):
                await engine.close()
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
        engine = self.engine
        if engine is None or not self.connected:
            self.server.count("upstream_dropped_not_ready")
            return
        if message.msg_type is T.ESCALATE:
            self.returns.mark(message)
        if not engine.send_nowait(message):
            self.server.count("upstream_dropped_not_ready")

    def close(self, code: int, reason: str) -> None:
        """Close the current link (the engine reconnects unless the hub is stopping)."""
        driver = self.engine.driver if self.engine is not None else None
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

    async def _run(self) -> None:
        """Open the master link, and open it again for as long as the hub runs.

        The engine reconnects a lost link itself; this loop covers the first
        connection and an engine that stopped on an error a client would not
        retry but a hub does (e.g. a malformed frame from the master).
        """
        delays = self._delays()
        while not self._stopping:
            refused = await self._attempt()
            if refused is not None:
                self.fatal_error = UpstreamRefused(str(refused))
                LOG.error(
                    "upstream %s refused this hub: %s; not retrying (fix upstream key/password "
                    "in server.json and restart)",
                    self.where,
                    refused,
                )
                return
            if self.connects:
                delays = self._delays()  # it worked once: the next outage starts short
            if self._stopping:
                return
            delay = None if self._gave_up else next(delays, None)
            if delay is None:
                LOG.error("upstream %s: giving up reconnecting", self.where)
                return
            LOG.info("reconnecting to upstream %s in %.2f s", self.where, delay)
            await asyncio.sleep(delay)

    async def _attempt(self) -> BaseException | None:
        """Run one engine until it stops; returns the refusal that stopped it, if one did."""
        engine = LinkEngine(
            self._client_config(),
            NodeIdentity({}),
            channel_factory=self._open_channel,
            v3=self._v3_state() if self.config.password else None,
            on_message=self._on_message,
            on_state=self._on_state,
            on_hello=self._on_hello,
            connection_factory=self._new_connection,
            name="hivemind-upstream-link",
        )
        self.engine, self._stopped = engine, asyncio.Event()
        self.attempts += 1
        try:
            try:
                await engine.open_link()
            except HiveMindError as exc:
                if is_fatal(exc):
                    return exc
                LOG.info("upstream %s unavailable: %s", self.where, exc)
                return None
            engine.start_supervisor()
            await self._stopped.wait()
            reason = engine.fatal_error
            if isinstance(reason, HandshakeError):  # refused when reconnecting
                return reason
            return None
        finally:
            with contextlib.suppress(Exception):
                await engine.close()
            self.engine = None
            self._unlink()

    def _on_state(self, up: bool, reason: BaseException | None) -> None:
        engine = self.engine
        if up and engine is not None and engine.conn is not None:
            self._link(engine.conn)
            return
        self._unlink()
        if engine is not None and engine.fatal_error is not None:
            self._stopped.set()

    def _on_message(self, message: HiveMessage) -> None:
        if self.connected:
            self.server.route(self.peer, message)

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
