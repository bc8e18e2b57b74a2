"""One satellite link, whatever carries it: a Channel, a Connection, a session, a peer name.

A :class:`SatelliteLink` is what a listener makes of an admitted satellite. It
puts the hub end of a sans-I/O
:class:`~hivemind_bus_client.protocol.connection.Connection` over the
listener's :class:`~hivemind_bus_client.transport.channel.Channel` and lets the
one :class:`~hivemind_bus_client.transport.driver.LinkDriver` move frames
between them. Websocket, HTTP polling and MQTT links are the same class; only
their channels differ.

Its life, written once here:

* :meth:`SatelliteLink.open` adds it to the node's connections and starts the
  connection (the hub's HELLO and handshake offer go out);
* the satellite's HELLO registers it with the node under a unique peer name
  (:meth:`HubNode.add_satellite`); a first message before any HELLO registers
  it with a private session;
* every message the connection delivers goes to :meth:`HubNode.route`;
* :meth:`SatelliteLink.close` asks the connection to close (the driver closes
  the channel); when :meth:`SatelliteLink.run` returns, however the link
  ended, it is unregistered and removed, once, and ``on_end`` tells the
  listener.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from hivemind_bus_client.exceptions import (
    CloseCode,
    HandshakeError,
    HandshakeReplayed,
    HandshakeThrottled,
)
from hivemind_bus_client.protocol import handshake
from hivemind_bus_client.protocol.connection import (
    CloseRequested,
    Event,
    FrameDropped,
    HandshakeComplete,
    HelloReceived,
    MessageReceived,
    PSKNeeded,
    State,
)
from hivemind_bus_client.protocol.events import KeyNeeded
from hivemind_bus_client.protocol.message import HiveMessage
from hivemind_bus_client.protocol.v3offer import REASON_NEEDS_PASSWORD
from hivemind_bus_client.protocol.v3settings import REASON_REQUIRES_V3
from hivemind_bus_client.transport.channel import Channel, ChannelClosed
from hivemind_bus_client.transport.driver import LinkDriver
from hivemind_core.admission import Admission, Admitted
from hivemind_core.keywork import KeyWorkBusy
from hivemind_core.node import HubNode
from hivemind_core.noise_keys import V3_TRANSPORTS, pinned_key, record_pin
from hivemind_core.session import LinkSession, peer_name

__all__ = ["SatelliteLink"]

LOG = logging.getLogger(__name__)


class SatelliteLink:
    """One satellite's link to the hub (see the module docstring).

    Args:
        node: the hub.
        admission: where a failed handshake is counted against ``address``.
        channel: the transport under the link.
        admitted: the satellite's client record and useragent.
        address: where it connects from (throttle key, logs).
        transport: ``websocket``, ``http``, ``mqtt`` ... (stats, logs).
        idle_timeout: seconds without activity before :class:`~hivemind_core.upkeep.Upkeep`
            closes the link (None or 0: never).
        idle_reason, idle_counter: the close reason and the stats counter of that close.
        on_end: called once with the link when it has ended and been unregistered.
    """

    def __init__(
        self,
        node: HubNode,
        admission: Admission,
        channel: Channel,
        admitted: Admitted,
        address: str,
        *,
        transport: str = "websocket",
        idle_timeout: float | None = None,
        idle_reason: str = "idle timeout",
        idle_counter: str = "idle_closed",
        on_end: Callable[[SatelliteLink], None] | None = None,
    ) -> None:
        self.node = node
        self.admission = admission
        self.channel = channel
        self.client = admitted.client
        self.useragent = admitted.useragent
        self.key = admitted.key
        self.address = address
        self.transport = transport
        self.idle_timeout = idle_timeout
        self.idle_reason = idle_reason
        self.idle_counter = idle_counter
        self.on_end = on_end
        self.peer: str | None = None
        self.session: LinkSession | None = None
        self.closing = False
        self.ended: ChannelClosed | None = None
        self.conn = node.new_connection(self.client, v3=transport in V3_TRANSPORTS)
        self.conn.peer = self.base_name
        self.conn.defer_keys = True  # keys are derived in node.keywork (see _derive_key)
        self.driver = LinkDriver(
            self.conn, channel, self._on_event, clock=node.now, name=f"hub-{transport}-link"
        )
        #: Loop time of the last sign of life (a frame, a poll); see :meth:`touch`.
        self.last_rx = node.now()
        self._frames_seen = 0
        self._task: asyncio.Task[ChannelClosed | None] | None = None
        self._key_task: asyncio.Task[None] | None = None
        self._psk_task: asyncio.Task[None] | None = None
        self._pin_task: asyncio.Task[None] | None = None

    @property
    def base_name(self) -> str:
        """``useragent::client_id::name``."""
        return peer_name(self.useragent, self.client.client_id, self.client.name or "")

    # -- life cycle ---------------------------------------------------------------

    def open(self) -> None:
        """Add the link to the node's connections, start the connection (HELLO and offer go out)."""
        self.node.connections.add(self)
        if self.conn.v3 is None and self.node.noise.min_version(self.client) >= 3:
            # No v3 on this link (no password, or a transport without v3): it
            # can never meet the floor.
            self.node.count("v3_required_closes")
            has_password = bool(getattr(self.client, "password", None))
            reason = REASON_REQUIRES_V3 if has_password else REASON_NEEDS_PASSWORD
            self.conn.close(CloseCode.POLICY, reason)
            self.driver.process()
            return
        self.driver.start()

    async def run(self) -> ChannelClosed | None:
        """Drive the link until it ends; then unregister it (once). Returns how it ended."""
        try:
            self.ended = await self.driver.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            self.node.count("errors")
            LOG.exception("link of %s failed", self.peer or self.address)
            await self.driver.close(CloseCode.INTERNAL, "internal error")
        finally:
            self.finish()
        return self.ended

    def spawn(self) -> asyncio.Task[ChannelClosed | None]:
        """:meth:`open`, then :meth:`run` in a task of its own (transports without a handler task)."""
        self.open()
        self._task = asyncio.get_running_loop().create_task(
            self.run(), name=f"hivemind-{self.transport}-link"
        )
        return self._task

    def finish(self) -> None:
        """The link ended: unregister it from the node and tell the listener (once)."""
        if self not in self.node.connections:
            return
        self.closing = True
        ended = self.ended
        if ended is not None and ended.code == CloseCode.TRY_AGAIN and not ended.by_peer:
            self.node.count("send_overflow")
        self._unregister()
        self.node.connections.discard(self)
        self.node.handshake_limits.forget(self._limit_id)
        if self.on_end is not None:
            try:
                self.on_end(self)
            except Exception:
                self.node.count("errors")
                LOG.exception("end-of-link hook failed for %s", self.peer or self.address)

    def close(self, code: int, reason: str) -> None:
        """Close the link with ``code`` and a one-line ``reason`` (once; later calls do nothing)."""
        if self.closing:
            return
        self.closing = True
        asyncio.get_running_loop().create_task(
            self.driver.close(code, reason), name="hivemind-link-close"
        )

    async def aclose(self, code: int, reason: str) -> None:
        """:meth:`close`, then wait until the link has ended and been unregistered."""
        if not self.closing:
            self.closing = True
            await self.driver.close(code, reason)
        await self.wait_ended()

    async def wait_ended(self, timeout: float | None = None) -> None:
        """Wait (at most ``timeout`` seconds) until a spawned link's task has finished."""
        task = self._task
        if task is not None and not task.done() and task is not asyncio.current_task():
            await asyncio.wait({task}, timeout=timeout)

    def touch(self, now: float | None = None) -> None:
        """Record a sign of life that is not a frame (an HTTP poll)."""
        self.last_rx = self.node.now() if now is None else now

    def idle_since(self, now: float) -> float:
        """Loop time of the link's last activity (frames received count as activity)."""
        frames = self.conn.frames_in
        if frames != self._frames_seen:
            self._frames_seen = frames
            self.last_rx = now
        return self.last_rx

    # -- the sink the node writes to -------------------------------------------------

    def send_message(self, message: HiveMessage) -> None:
        """Encode ``message`` for this link and write it (never blocks)."""
        if self.closing or self.conn.state is not State.READY:
            self.node.count("dropped_not_ready")
            return
        try:
            self.driver.send(message)
        except ChannelClosed:
            self.node.count("dropped_not_ready")

    # -- events of the connection ---------------------------------------------------

    def _on_event(self, event: Event) -> None:
        if isinstance(event, MessageReceived):
            if self.closing:
                return
            if self.peer is None:
                self._register({})  # no HELLO yet: a private session
            assert self.peer is not None
            self.node.route(self.peer, event.message)
        elif isinstance(event, HelloReceived):
            self._register(event.payload)
        elif isinstance(event, PSKNeeded):
            self._psk_task = asyncio.get_running_loop().create_task(
                self._provide_psk(event.node_id), name="hivemind-v3-psk"
            )
        elif isinstance(event, HandshakeComplete):
            if event.protocol == 3:
                self._noise_keyed(event)
            self.node.handshake_ivs.keyed(self.client.client_id)
            LOG.info(
                "%s from %s keyed: %s, cipher %s, encoding %s, binarize %s",
                self.base_name,
                self.address,
                event.mode,
                event.cipher or "-",
                event.encoding or "-",
                event.binarize,
            )
        elif isinstance(event, KeyNeeded):
            self._key_task = asyncio.get_running_loop().create_task(
                self._derive_key(event), name="hivemind-link-key"
            )
        elif isinstance(event, CloseRequested):
            self.closing = True
            if isinstance(event.error, HandshakeReplayed):
                # Not a wrong password: the address may be shared with honest clients.
                self.node.count("handshake_replays")
                return
            if isinstance(event.error, (HandshakeThrottled, KeyWorkBusy)):
                return  # counted where refused; no password was wrong (not the address's)
            if isinstance(event.error, HandshakeError) and event.code == CloseCode.POLICY:
                # A wrong password: counted against this address and key only.
                self.admission.failed(self.address, event.reason, self.key)
                return
            if event.error is not None:
                self.node.count("protocol_errors")
                LOG.info("closing %s: %s (%d)", self.peer or self.address, event.reason, event.code)
            if event.pre_handshake:
                # A fault or a timeout before keying: counted against the address.
                self.node.count("pre_handshake_closes")
                self.admission.failed(self.address, event.reason)
        elif isinstance(event, FrameDropped):
            self.node.count(f"{event.reason}s_dropped")  # replays_dropped, reflections_dropped
            if event.count == 1:
                LOG.info("dropping %s frames from %s", event.reason, self.peer or self.address)

    @property
    def _limit_id(self) -> str:
        return f"link-{id(self):x}"

    async def _derive_key(self, event: KeyNeeded) -> None:
        """Answer a :class:`KeyNeeded`: the handshake limits, then the key in node.keywork.

        The event loop only waits: the PBKDF2 (or RSA seal) runs in a worker
        thread, then the connection gets the answer and the driver sends it.
        """
        node, conn = self.node, self.conn
        refusal = node.handshake_limits.check(
            self._limit_id, f"key-{self.client.client_id}", node.now()
        )
        if refusal is not None:
            node.count(
                "rekeys_refused"
                if refusal.close_code == CloseCode.POLICY
                else "key_handshakes_refused"
            )
            conn.refuse_key(refusal)
        else:
            try:
                answer = await node.keywork.run(handshake.hub_finish, event.job)
            except KeyWorkBusy as exc:
                node.count("key_work_busy")
                conn.refuse_key(exc)
            else:
                conn.provide_key(answer)
        self.driver.process()

    def _register(self, hello: dict[str, Any]) -> None:
        """Name the link after its session and add it to the node (or update it)."""
        raw = hello.get("session")
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except ValueError:
                raw = None
        session = LinkSession(raw, hello.get("site_id"), is_admin=bool(self.client.is_admin))
        node = self.node
        if self.peer is not None and self.session is not None:
            if session.session_id == self.session.session_id:
                self.session = session
                node.update_session(self.peer, session)
                self.conn.announce(self.peer, node.node_id)
                return
            self._unregister()
        self.session = session
        self.peer = node.add_satellite(self, self.client, self.useragent, hello, session)
        self.conn.announce(self.peer, node.node_id)

    def _unregister(self) -> None:
        peer, self.peer = self.peer, None
        if peer is not None:
            self.node.remove_satellite(peer, self, self.client)

    # -- protocol v3 (hivemind_core.noise_keys) ------------------------------------------

    async def _provide_psk(self, node_id: str) -> None:
        """Derive (or share, or take from the cache) the row's PSK off the loop, hand it in."""
        node = self.node
        try:
            psk = await node.noise.psk_for(self.client, node_id, node.keywork.run)
        except KeyWorkBusy:
            node.count("key_work_busy")
            self.close(CloseCode.TRY_AGAIN, "try again later")
            return
        except Exception:
            node.count("errors")
            LOG.exception("v3 PSK derivation failed for %s", self.base_name)
            self.close(CloseCode.INTERNAL, "internal error")
            return
        # One link at a time, one per loop turn: the links that shared one
        # derivation do not all run their handshake step in the same turn.
        async with node.noise.handoff:
            if self.closing or self.driver.ended is not None:
                node.count("psk_late")  # the link ended while the PSK was derived
                return
            self.conn.provide_psk(psk)
            self.driver.process()
            await asyncio.sleep(0)

    def _noise_keyed(self, event: HandshakeComplete) -> None:
        """After a v3 handshake: pin the client's static key if the row has no pin yet."""
        node, client = self.node, self.client
        node.count(f"v3_{event.pattern or 'noise'}")
        key = event.peer_static
        if key is None or pinned_key(client) is not None or client.client_id in node.noise.pinning:
            return
        node.noise.pinning.add(client.client_id)
        loop = asyncio.get_running_loop()
        self._pin_task = loop.create_task(self._pin(client.client_id, key.hex()), name="v3-pin")

    async def _pin(self, client_id: int, pubkey_hex: str) -> None:
        node = self.node
        try:
            if await asyncio.to_thread(record_pin, node.db, client_id, pubkey_hex):
                node.count("noise_pins")
                LOG.info("pinned the Noise static key %s of client %s", pubkey_hex, client_id)
        except Exception:
            node.count("errors")
            LOG.exception("recording the Noise pin of client %s failed", client_id)
        finally:
            node.noise.pinning.discard(client_id)
