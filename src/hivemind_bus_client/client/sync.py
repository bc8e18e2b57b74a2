"""The synchronous HiveMind client, :class:`HiveMessageBusClient`.

``connect()`` starts two daemon threads per client (:mod:`.threads`): an I/O
thread running an asyncio loop with the link (the node and its engine), and a
dispatcher thread that runs your handlers one at a time, in arrival order.
Because handlers never run on the I/O thread, a handler may call
``wait_for_response`` (or anything else that blocks on the hub) without
deadlocking the client.

The public API follows the reference client 0.4.4 (docs/client.md,
"Compared with the reference client") plus what the samples of
tests/seed/samples.json use (``peer``, ``on_bin``,
``with_hivemind``, PONG, CASCADE aggregation); the constructor arguments and
their defaults are the reference's. The requests themselves are written once in
:class:`~hivemind_bus_client.client.core.ClientCore`; this face only says how
to wait.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from typing import Any

from ovos_bus_client.message import Message

from hivemind_bus_client.client.core import ClientCore, Request
from hivemind_bus_client.client.handlers import Call, Waiter
from hivemind_bus_client.client.lifecycle import check_retries, open_with_retries, retry_budget
from hivemind_bus_client.client.shaping import BinaryDataCallbacks
from hivemind_bus_client.client.threads import Dispatcher, LoopThread
from hivemind_bus_client.exceptions import ConnectTimeout, HiveMindError
from hivemind_bus_client.protocol.cascade import CascadeResult
from hivemind_bus_client.protocol.message import (
    HiveMessage,
    HiveMessageType,
    HiveMindBinaryPayloadType,
)

__all__ = ["BinaryDataCallbacks", "ClientCore", "HiveMessageBusClient"]

LOG = logging.getLogger(__name__)

_T = HiveMessageType


class HiveMessageBusClient(ClientCore):
    """A HiveMind satellite: one encrypted websocket link to a hub.

    Args:
        key: access key (default: the identity file's ``access_key``).
        password: handshake password (default: the identity file's).
        crypto_key: legacy pre-shared key (16 characters), used until a handshake
            replaces it, or alone when the hub offers no handshake.
        host: hub address, with or without ``ws://`` / ``wss://`` (``wss`` means
            TLS); default: the identity file's ``default_master``.
        port: hub port (default: the identity file's, else 5678).
        useragent: sent with the key; default ``HiveMessageBusClientV0.0.1``.
        self_signed: accept any TLS certificate (for self-signed hubs).
        share_bus: forward every message of the OVOS bus given to
            :meth:`connect` to the hub as SHARED_BUS.
        compress: zlib-compress binary frames.
        binarize: use binary frames when the hub offers them.
        identity: a :class:`NodeIdentity` (default: the identity file).
        internal_bus: an OVOS bus to re-emit received BUS messages on; its
            ``session_id`` becomes ours.
        bin_callbacks: receivers of TTS audio and files.
        site_id: this node's site (default: the identity file's, else ``unknown``).
        session_id: OVOS session id (default: a new uuid).

    Keyword-only limits (see :class:`hivemind_bus_client.client.config.ClientConfig`):
    ``connect_timeout``, ``handshake_timeout``, ``reconnect``,
    ``reconnect_delays``, ``max_reconnect_delay``, ``ping_interval``,
    ``ping_timeout``, ``send_timeout``, ``max_size``, ``max_inflated``,
    ``encodings``, ``ciphers``, ``answer_pings``, ``cascade_timeout``; and the 1.2.x client's
    ``websocket_ping_interval``, ``websocket_ping_timeout`` (the same keepalive
    settings, 20 s each), ``websocket_connect_timeout`` (30 s, the websocket
    opening) and ``max_protocol_version`` (1..3, default 3: protocol v3 with
    a password when the hub offers it, else v1; docs/client.md, "Protocol v3").

    Attributes:
        connected_event: set while a socket to the hub is open.
        handshake_event: set while the link is keyed.

    Raises:
        ConfigurationError: neither the arguments nor the identity file give an
            access key and a host.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._io = LoopThread()
        self._dispatcher = Dispatcher(self._io.submit)
        self._bus: Any = None

    # -- lifecycle -------------------------------------------------------------------

    def connect(
        self,
        bus: Any = None,
        protocol: Any = None,
        site_id: str | None = None,
        timeout: float | None = None,
        handshake_max_retries: int | None = None,
    ) -> HiveMessageBusClient:
        """Open the link and return once the handshake is complete.

        Args:
            bus: a local OVOS bus; with ``share_bus`` its traffic is forwarded as
                SHARED_BUS.
            protocol: accepted for compatibility with the reference; unused.
            site_id: overrides the site for this connection.
            timeout: seconds for socket + handshake (default ``connect_timeout``).
            handshake_max_retries: retry a failed attempt this many times
                (:mod:`.lifecycle`); ``None``: one attempt.

        Raises:
            UnauthorizedKeyError: the hub refused the access key.
            AuthenticationFailed: the hub's envelope does not match our password
                (or it refused the handshake).
            NegotiationFailed: no common cipher/encoding or handshake mode.
            HiveMindEntryPointNotFound: nothing listens at host:port.
            ConnectTimeout: no completed handshake in time.
            ConfigurationError: ``handshake_max_retries`` is not ``None`` nor >= 0.
        """
        del protocol
        retries = check_retries(handshake_max_retries)
        if self._begin_connect(site_id, timeout):
            return self
        engine = self._engine
        self._io.start()
        self._dispatcher.start()

        async def _open() -> None:
            await open_with_retries(engine, retries)
            engine.start_supervisor()

        try:
            self._io.run(_open(), retry_budget(engine, retries))
        except concurrent.futures.TimeoutError:
            self._shutdown_threads()
            raise ConnectTimeout(
                f"no completed handshake with {self.config.host}:{self.config.port}"
            ) from None
        except BaseException:
            self._shutdown_threads()
            raise
        if bus is not None:
            self._bind_bus(bus)
        return self

    def wait_for_handshake(self, timeout: float | None = None) -> bool:
        """Block until a keyed link exists; ``False`` on timeout."""
        return self.handshake_event.wait(timeout)

    def close_connection(self) -> None:
        """Drop the socket only: the client reconnects (with a fresh handshake) by itself.

        Unlike :meth:`close`, which is permanent. Nothing happens before ``connect()``.
        """
        if self._io.loop is not None:
            try:
                self._io.run(self._engine.drop_link(), 10)
            except (concurrent.futures.TimeoutError, HiveMindError, RuntimeError):
                LOG.debug("dropping the link did not finish cleanly", exc_info=True)

    def close(self) -> None:
        """Close the link for good: stop reconnecting and stop the client's threads."""
        if self._io.loop is not None:
            try:
                self._io.run(self._close_on_loop(), 10)
            except (concurrent.futures.TimeoutError, HiveMindError, RuntimeError):
                LOG.debug("close did not finish cleanly", exc_info=True)
        self._shutdown_threads()
        if self._bus is not None and hasattr(self._bus, "remove"):
            try:
                self._bus.remove("message", self._share)
            except Exception:
                LOG.debug("could not unbind the local bus", exc_info=True)
        self._bus = None

    def _shutdown_threads(self) -> None:
        self._io.stop()
        self._dispatcher.stop()
        self._engine.ready = None
        self.handshake_event.clear()
        self.connected_event.clear()

    def __enter__(self) -> HiveMessageBusClient:
        if not self.connected:
            self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def _close_on_loop(self) -> None:
        await self._engine.close()
        self._node.stop_timers()

    # -- sending -----------------------------------------------------------------------

    def emit(
        self,
        message: HiveMessage | Message,
        binary_type: HiveMindBinaryPayloadType | int = HiveMindBinaryPayloadType.UNDEFINED,
    ) -> None:
        """Send a message to the hub (an OVOS Message is sent as BUS).

        Waits up to ``send_timeout`` seconds when the link is being reopened.

        Raises:
            InvalidState: never connected, or closed.
            ConnectionClosedError: no link within ``send_timeout``, or the client
                stopped after a refusal.
        """
        msg = self.prepare(message, binary_type)
        if self.internal_bus is not None and isinstance(message, Message):
            try:
                self.internal_bus.emit(message)
            except Exception:
                LOG.debug("internal bus rejected a message", exc_info=True)
        self._io.run(self._engine.send(msg), self.config.send_timeout + 5)

    # -- how this face waits -------------------------------------------------------------

    def _wait(self, request: Request, timeout: float) -> Any:
        done = threading.Event()
        box: list[HiveMessage] = []

        def resolve(msg: HiveMessage) -> None:
            box.append(msg)
            done.set()

        waiter = Waiter(request.msg_type, resolve, request.payload_type, request.predicate)
        self._registry.add_waiter(waiter)
        try:
            if request.send is not None:
                self.emit(request.send)
            if request.originate is not None:
                self._io.run(self._send_originated(request.originate), self.config.send_timeout + 5)
            done.wait(timeout)
        finally:
            self._registry.remove_waiter(waiter)
        return request.result(box[0] if box else None)

    def _gather(
        self, qid: str, request: HiveMessage, window: float, expected: int | None
    ) -> CascadeResult:
        done = threading.Event()
        box: list[CascadeResult] = []

        def finished(result: CascadeResult) -> None:
            box.append(result)
            done.set()

        async def start() -> None:
            self._node.begin_cascade(qid, finished, expected, window)
            await self._send_originated(request)

        self._io.run(start(), self.config.send_timeout + 5)
        done.wait(window + 5)
        return box[0] if box else self._no_answers(qid)

    def _flood(self, timeout: float) -> list[HiveMessage]:
        pongs: list[HiveMessage] = []
        flood: list[str] = []
        lock = threading.Lock()
        keep = self._pong_collector(flood, pongs)

        def collect(msg: HiveMessage) -> None:
            with lock:
                keep(msg)

        self.on(_T.PONG, collect)
        started = time.monotonic()
        try:
            self._io.run(self._start_ping(flood), self.config.send_timeout + 5)
            time.sleep(max(0.0, timeout - (time.monotonic() - started)))
        finally:
            self.remove(_T.PONG, collect)
        with lock:
            return list(pongs)

    # -- plumbing ------------------------------------------------------------------------

    def _dispatch(self, calls: list[Call]) -> None:
        self._dispatcher.put(calls)

    def _bind_bus(self, bus: Any) -> None:
        self._bus = bus
        if self.config.share_bus and hasattr(bus, "on"):
            bus.on("message", self._share)

    def _share(self, raw: Any) -> None:
        try:
            msg = raw if isinstance(raw, Message) else Message.deserialize(raw)
            self.emit(HiveMessage(_T.SHARED_BUS, msg))
        except Exception:
            LOG.debug("could not share a local bus message", exc_info=True)
