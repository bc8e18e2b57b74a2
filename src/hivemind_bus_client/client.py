"""The synchronous HiveMind client, :class:`HiveMessageBusClient` (seed docs 000, 001).

Threads
-------
``connect()`` starts two daemon threads per client:

* an **I/O thread** running an asyncio loop with the websocket link
  (:class:`hivemind_bus_client._transport.LinkEngine`): it reads frames,
  decrypts them, resolves waiters and reconnects;
* a **dispatcher thread** that runs your handlers one at a time, in arrival order.

Because handlers never run on the I/O thread, a handler may call
``wait_for_response`` (or anything else that blocks on the hub) without
deadlocking the client: the waiter it registers is resolved by the I/O thread.

The public API follows the reference client 0.4.4 (CLIENT-REFERENCE.md §7.1)
plus what the seed docs add (``peer``, ``on_bin``, ``with_hivemind``, PONG,
CASCADE aggregation); the constructor arguments and their defaults are the
reference's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from ovos_bus_client.message import Message

from hivemind_bus_client import _config
from hivemind_bus_client._handlers import Call, HandlerRegistry, Waiter, hive_type
from hivemind_bus_client._transport import LinkEngine
from hivemind_bus_client.exceptions import (
    ConnectTimeout,
    HiveMindError,
    InvalidState,
)
from hivemind_bus_client.identity import NodeIdentity
from hivemind_bus_client.protocol.cascade import CascadeResult, is_response, query_id_of
from hivemind_bus_client.protocol.message import (
    TRANSPORT_TYPES,
    HiveMessage,
    HiveMessageType,
    HiveMindBinaryPayloadType,
)

__all__ = ["BinaryDataCallbacks", "HiveMessageBusClient"]

LOG = logging.getLogger(__name__)

_T = HiveMessageType
_DEFAULT_WAIT = 3.0


class BinaryDataCallbacks:
    """Receivers for binary payloads the hub sends (override the methods you need).

    The default implementation logs and ignores, as the reference does.
    """

    def handle_receive_tts(
        self, bin_data: bytes, utterance: str, lang: str, file_name: str
    ) -> None:
        """Synthesized speech for ``utterance`` (``TTS_AUDIO``)."""
        LOG.warning("TTS audio for %r received and ignored (%d bytes)", utterance, len(bin_data))

    def handle_receive_file(self, bin_data: bytes, file_name: str) -> None:
        """A file pushed by the hub (``FILE``)."""
        LOG.warning("file %r received and ignored (%d bytes)", file_name, len(bin_data))


class ClientCore:
    """What both client flavours share: settings, handler registry, message shaping.

    Not public: use :class:`HiveMessageBusClient` or
    :class:`hivemind_bus_client.asyncio_client.AsyncHiveMessageBusClient`.
    """

    def __init__(
        self,
        key: str | None = None,
        password: str | None = None,
        crypto_key: str | None = None,
        host: str | None = None,
        port: int | None = None,
        useragent: str = "",
        self_signed: bool = True,
        share_bus: bool = False,
        compress: bool = True,
        binarize: bool = True,
        identity: NodeIdentity | None = None,
        internal_bus: Any = None,
        bin_callbacks: BinaryDataCallbacks | None = None,
        site_id: str | None = None,
        session_id: str | None = None,
        *,
        encodings: Iterable[str] | None = None,
        ciphers: Iterable[str] | None = None,
        connect_timeout: float = 15.0,
        handshake_timeout: float = 10.0,
        reconnect: bool = True,
        reconnect_delays: Any = None,
        max_reconnect_delay: float = 30.0,
        ping_interval: float | None = 5.0,
        ping_timeout: float | None = 5.0,
        send_timeout: float = 10.0,
        max_size: int = 16 * 1024 * 1024,
        answer_pings: bool = True,
        cascade_timeout: float = 5.0,
    ) -> None:
        if session_id is None and internal_bus is not None:
            session_id = getattr(internal_bus, "session_id", None)
        self.config, self.identity = _config.resolve(
            identity=identity,
            key=key,
            password=password,
            crypto_key=crypto_key,
            host=host,
            port=port,
            useragent=useragent,
            site_id=site_id,
            session_id=session_id,
            self_signed=self_signed,
            compress=compress,
            binarize=binarize,
            share_bus=share_bus,
            encodings=list(encodings) if encodings is not None else None,
            ciphers=list(ciphers) if ciphers is not None else None,
            connect_timeout=connect_timeout,
            handshake_timeout=handshake_timeout,
            reconnect=reconnect,
            reconnect_delays=reconnect_delays,
            max_reconnect_delay=max_reconnect_delay,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            send_timeout=send_timeout,
            max_size=max_size,
            answer_pings=answer_pings,
            cascade_timeout=cascade_timeout,
        )
        self.internal_bus = internal_bus
        self.bin_callbacks = bin_callbacks or BinaryDataCallbacks()
        self._registry = HandlerRegistry()
        self._registry.on_bin(_T.BINARY, self._builtin_binary)
        if internal_bus is not None and hasattr(internal_bus, "emit"):
            self._registry.on(_T.BUS, self._to_internal_bus)
        self._engine = LinkEngine(self.config, self.identity, self._registry, self._dispatch)

    # -- settings as properties ------------------------------------------------------

    @property
    def key(self) -> str:
        """The access key."""
        return self.config.key

    @property
    def password(self) -> str | None:
        """The handshake password."""
        return self.config.password

    @property
    def crypto_key(self) -> str | None:
        """The legacy pre-shared key, if any."""
        return self.config.crypto_key

    @property
    def useragent(self) -> str:
        """User agent sent with the access key."""
        return self.config.useragent

    @property
    def site_id(self) -> str:
        """This node's site; sent in HELLO and stamped on every BUS message."""
        return self.config.site_id

    @site_id.setter
    def site_id(self, value: str) -> None:
        self.config.site_id = value

    @property
    def session_id(self) -> str:
        """This client's OVOS session id (a uuid, never ``default``; kept across reconnects)."""
        return self.config.session_id

    @property
    def peer(self) -> str | None:
        """Our peer string at the hub (``useragent::id::name::session``), once connected."""
        return self._engine.peer

    @property
    def node_id(self) -> str | None:
        """The hub's node id from its HELLO."""
        return self._engine.node_id

    @property
    def protocol(self) -> LinkEngine:
        """The link engine; carries ``cascade_select_callback`` and ``hive_mapper`` (seed doc 001)."""
        return self._engine

    @property
    def connected(self) -> bool:
        """True while a keyed link to the hub exists."""
        ready = self._engine.ready
        return bool(ready is not None and ready.is_set())

    def _begin_connect(self, site_id: str | None, timeout: float | None) -> bool:
        """Apply ``connect()``'s overrides and reset the engine for a new link.

        Returns True when a keyed link already exists (``connect()`` has nothing to do).
        """
        if site_id:
            self.site_id = site_id
        if timeout is not None:
            self.config.connect_timeout = timeout
        if self.connected:
            return True
        engine = self._engine
        engine.closing = False
        engine.fatal_error = None
        engine.ready = None  # a fresh Event, on whichever loop opens the link
        return False

    @property
    def handshake_info(self) -> dict[str, Any] | None:
        """What the last handshake negotiated (mode, cipher, encoding, binarize)."""
        hs = self._engine.handshake
        if hs is None:
            return None
        return {
            "mode": hs.mode,
            "cipher": hs.cipher,
            "encoding": hs.encoding,
            "binarize": hs.binarize,
        }

    @property
    def stats(self) -> dict[str, int]:
        """Counters: messages in/out, PINGs answered, INTERCOMs opened and dropped."""
        return dict(self._engine.stats, connects=self._engine.connects)

    # -- handlers --------------------------------------------------------------------

    def on(self, event: HiveMessageType | str, func: Callable[..., Any]) -> None:
        """Call ``func`` for received messages.

        ``event`` is a :class:`HiveMessageType` (or its wire string: ``"bus"``,
        ``"pong"``...): ``func(HiveMessage)``; ``"message"``: ``func(json_text)``;
        anything else is an OVOS message type: ``func(Message)`` for each BUS
        message of that type (as :meth:`on_mycroft`). A PONG handler also gets the
        PONGs that arrived unheard in the last two seconds (answers to a PING
        emitted just before the handler was registered).
        """
        late = self._registry.on(event, func)
        if late:
            self._dispatch(late)

    def on_mycroft(self, msg_type: str, func: Callable[[Message], Any]) -> None:
        """Call ``func(Message)`` for every BUS message of OVOS type ``msg_type``."""
        self._registry.on_mycroft(msg_type, func)

    def on_bin(self, event: Any, func: Callable[[bytes, dict[str, Any]], Any]) -> None:
        """Call ``func(data, context)`` for BINARY messages.

        ``event`` is ``HiveMessageType.BINARY`` (all) or a
        :class:`HiveMindBinaryPayloadType` (one kind); ``context`` holds the
        frame metadata plus ``bin_type``.
        """
        self._registry.on_bin(event, func)

    def once(self, event: HiveMessageType | str, func: Callable[..., Any]) -> None:
        """Like :meth:`on`, but only for the next matching message."""

        def wrapper(*args: Any) -> Any:
            self.remove(event, wrapper)
            return func(*args)

        wrapper.__wrapped__ = func  # type: ignore[attr-defined]
        self.on(event, wrapper)

    def remove(self, event: Any, func: Callable[..., Any]) -> bool:
        """Unregister ``func`` for ``event``; ``True`` when it was registered."""
        return self._registry.remove(event, func)

    def remove_all_listeners(self, event: Any = None) -> None:
        """Unregister every handler of ``event`` (every handler when ``None``)."""
        self._registry.remove_all_listeners(event)
        if event is None or hive_type(event) is _T.BINARY:
            self._registry.on_bin(_T.BINARY, self._builtin_binary)
        if self.internal_bus is not None and (event is None or hive_type(event) is _T.BUS):
            self._registry.on(_T.BUS, self._to_internal_bus)

    # -- message shaping ---------------------------------------------------------------

    def prepare(
        self,
        message: HiveMessage | Message,
        binary_type: HiveMindBinaryPayloadType | int = HiveMindBinaryPayloadType.UNDEFINED,
    ) -> HiveMessage:
        """The HiveMessage :meth:`emit` sends: OVOS messages wrapped as BUS, contexts filled.

        Every BUS payload (also inside transport messages) gets ``source`` and
        ``platform`` (the user agent) and ``destination`` (``HiveMind``) when
        missing, and ``session.session_id`` / ``session.site_id`` set to ours,
        so a hub 4.0.0 never sees the ``default`` session.
        """
        if isinstance(message, Message):
            message = HiveMessage(_T.BUS, message)
        if not isinstance(message, HiveMessage):
            raise TypeError(f"emit takes a HiveMessage or an OVOS Message, not {type(message)}")
        if message.msg_type is _T.BINARY and binary_type:
            message.bin_type = HiveMindBinaryPayloadType(int(binary_type))
        self._fill(message, 0)
        return message

    def _fill(self, msg: HiveMessage, depth: int) -> None:
        if depth > 8:
            return
        if msg.msg_type in (_T.BUS, _T.SHARED_BUS):
            payload = msg.payload
            if isinstance(payload, Message):
                ctx = payload.context
                if ctx is None:
                    ctx = payload.context = {}
                ua = self.config.useragent
                ctx.setdefault("source", ua)
                ctx.setdefault("platform", ua)
                ctx.setdefault("destination", "HiveMind")
                session = ctx.get("session")
                if not isinstance(session, dict):
                    session = ctx["session"] = {}
                session["session_id"] = self.config.session_id
                session["site_id"] = self.config.site_id
        elif msg.msg_type in TRANSPORT_TYPES:
            inner = msg.payload
            if isinstance(inner, HiveMessage):
                self._fill(inner, depth + 1)

    def _make_ping(self) -> tuple[str, HiveMessage]:
        ping_id = str(uuid.uuid4())
        ping = HiveMessage(
            _T.PING,
            payload={
                "ping_id": ping_id,
                "timestamp": time.time(),
                "peer": self.peer,
                "site_id": self.site_id,
            },
        )
        return ping_id, HiveMessage(_T.PROPAGATE, payload=ping)

    @staticmethod
    def _wrap_request(
        mtype: HiveMessageType, message: HiveMessage | Message
    ) -> tuple[str, HiveMessage]:
        if isinstance(message, Message):
            message = HiveMessage(_T.BUS, message)
        if message.msg_type is mtype:
            request = message
        else:
            request = HiveMessage(mtype, payload=message)
        qid = query_id_of(request) or str(uuid.uuid4())
        request.metadata["query_id"] = qid
        return qid, request

    # -- built-in receivers -------------------------------------------------------------

    def _builtin_binary(self, data: bytes, context: dict[str, Any]) -> None:
        kind = context.get("bin_type")
        if kind == HiveMindBinaryPayloadType.TTS_AUDIO:
            self.bin_callbacks.handle_receive_tts(
                data,
                context.get("utterance", ""),
                context.get("lang", ""),
                context.get("file_name", "tts.wav"),
            )
        elif kind == HiveMindBinaryPayloadType.FILE:
            self.bin_callbacks.handle_receive_file(data, context.get("file_name", "file"))

    def _to_internal_bus(self, message: HiveMessage) -> None:
        payload = message.payload
        if isinstance(payload, Message):
            try:
                self.internal_bus.emit(payload)
            except Exception:
                LOG.exception("internal bus rejected a message")

    def _dispatch(self, calls: list[Call]) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class _Dispatcher:
    """Runs handler calls on one thread, in order; exceptions are logged, not raised."""

    def __init__(self, on_awaitable: Callable[[Any], None]) -> None:
        self._queue: queue.SimpleQueue[list[Call] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._on_awaitable = on_awaitable

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._run, name="hivemind-client-dispatch", daemon=True
            )
            self._thread.start()

    def put(self, calls: list[Call]) -> None:
        self._queue.put(calls)

    def stop(self) -> None:
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._queue.put(None)
            if thread is not threading.current_thread():
                thread.join(timeout=5)
        self._thread = None

    def _run(self) -> None:
        while True:
            calls = self._queue.get()
            if calls is None:
                return
            for fn, args in calls:
                try:
                    result = fn(*args)
                    if asyncio.iscoroutine(result):
                        self._on_awaitable(result)
                except Exception:
                    LOG.exception("handler %r failed", getattr(fn, "__name__", fn))


class _LoopThread:
    """An asyncio event loop on a daemon thread."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> asyncio.AbstractEventLoop:
        if self.loop is not None:
            return self.loop
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="hivemind-client-io", daemon=True)
        self._thread.start()
        ready.wait()
        self.loop = loop
        return loop

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float | None = None) -> Any:
        if self.loop is None:
            coro.close()
            raise InvalidState("not connected: call connect() first")
        if self._thread is threading.current_thread():
            coro.close()
            raise InvalidState("blocking client call made from the client's I/O thread")
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise

    def stop(self) -> None:
        loop, thread = self.loop, self._thread
        self.loop, self._thread = None, None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)


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

    Keyword-only limits (see :class:`hivemind_bus_client._config.ClientConfig`):
    ``connect_timeout``, ``handshake_timeout``, ``reconnect``,
    ``reconnect_delays``, ``max_reconnect_delay``, ``ping_interval``,
    ``ping_timeout``, ``send_timeout``, ``max_size``, ``encodings``, ``ciphers``,
    ``answer_pings``, ``cascade_timeout``.

    Raises:
        ConfigurationError: neither the arguments nor the identity file give an
            access key and a host.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._io = _LoopThread()
        self._dispatcher = _Dispatcher(self._run_awaitable)
        self._engine.on_state = self._on_state
        self.handshake_event = threading.Event()
        self.connected_event = threading.Event()
        self._bus: Any = None

    # -- lifecycle -------------------------------------------------------------------

    def connect(
        self,
        bus: Any = None,
        protocol: Any = None,
        site_id: str | None = None,
        timeout: float | None = None,
    ) -> HiveMessageBusClient:
        """Open the link and return once the handshake is complete.

        Args:
            bus: a local OVOS bus; with ``share_bus`` its traffic is forwarded as
                SHARED_BUS.
            protocol: accepted for compatibility with the reference; unused.
            site_id: overrides the site for this connection.
            timeout: seconds for socket + handshake (default ``connect_timeout``).

        Raises:
            UnauthorizedKeyError: the hub refused the access key.
            AuthenticationFailed: the hub's envelope does not match our password
                (or it refused the handshake).
            NegotiationFailed: no common cipher/encoding or handshake mode.
            HiveMindEntryPointNotFound: nothing listens at host:port.
            ConnectTimeout: no completed handshake in time.
        """
        del protocol
        if self._begin_connect(site_id, timeout):
            return self
        engine = self._engine
        self._io.start()
        self._dispatcher.start()

        async def _open() -> None:
            await engine.open_link()
            engine.start_supervisor()

        try:
            self._io.run(_open(), self.config.connect_timeout + 5)
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

    def close(self) -> None:
        """Close the link, stop reconnecting and stop the client's threads."""
        if self._io.loop is not None:
            try:
                self._io.run(self._engine.close(), 10)
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

    def _on_state(self, up: bool, reason: BaseException | None) -> None:
        if up:
            self.handshake_event.set()
            self.connected_event.set()
        else:
            self.handshake_event.clear()
            self.connected_event.clear()

    @property
    def fatal_error(self) -> BaseException | None:
        """Why the client stopped for good (a credential refusal on reconnect, or giving up)."""
        return self._engine.fatal_error

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

    def emit_mycroft(self, message: Message) -> None:
        """Send an OVOS message to the hub's bus (as BUS)."""
        self.emit(HiveMessage(_T.BUS, message))

    def emit_intercom(self, message: HiveMessage | Message, pubkey: str) -> None:
        """Send ``message`` end-to-end encrypted to the node owning ``pubkey`` (INTERCOM)."""
        inner = self.prepare(message)
        self.emit(self._engine.make_intercom(inner, pubkey))

    # -- waiting -------------------------------------------------------------------------

    def _wait(
        self,
        msg_type: HiveMessageType,
        timeout: float,
        payload_type: str | None = None,
        predicate: Callable[[HiveMessage], bool] | None = None,
        before: Callable[[], None] | None = None,
    ) -> HiveMessage | None:
        done = threading.Event()
        box: list[HiveMessage] = []

        def resolve(msg: HiveMessage) -> None:
            box.append(msg)
            done.set()

        waiter = Waiter(msg_type, resolve, payload_type, predicate)
        self._registry.add_waiter(waiter)
        try:
            if before is not None:
                before()
            done.wait(timeout)
        finally:
            self._registry.remove_waiter(waiter)
        return box[0] if box else None

    def wait_for_message(
        self, message_type: HiveMessageType | str, timeout: float = _DEFAULT_WAIT
    ) -> HiveMessage | Message | None:
        """The next hive message of ``message_type`` (or, for an OVOS type, the next
        BUS message of that type as an OVOS Message); ``None`` on timeout."""
        htype = hive_type(message_type)
        if htype is None:
            return self.wait_for_mycroft(str(message_type), timeout)
        return self._wait(htype, timeout)

    def wait_for_mycroft(
        self, mycroft_msg_type: str, timeout: float = _DEFAULT_WAIT
    ) -> Message | None:
        """The next BUS message of OVOS type ``mycroft_msg_type``; ``None`` on timeout."""
        msg = self._wait(_T.BUS, timeout, payload_type=mycroft_msg_type)
        return msg.payload if msg is not None else None

    def wait_for_payload(
        self,
        payload_type: str,
        message_type: HiveMessageType | str = _T.THIRDPRTY,
        timeout: float = _DEFAULT_WAIT,
    ) -> HiveMessage | None:
        """The next ``message_type`` message whose payload type is ``payload_type``."""
        htype = hive_type(message_type) or _T.THIRDPRTY
        return self._wait(htype, timeout, payload_type=payload_type)

    def wait_for_response(
        self,
        message: HiveMessage | Message,
        reply_type: str | None = None,
        timeout: float = _DEFAULT_WAIT,
    ) -> HiveMessage | None:
        """Send ``message`` and return the reply, or ``None`` after ``timeout`` seconds.

        For an OVOS message (or a BUS HiveMessage) the reply is the next BUS
        message whose OVOS type is ``reply_type`` (default: the message's own
        type). For another HiveMessage it is the next message of that hive type
        (or of ``reply_type``, a hive type).
        """
        msg = self.prepare(message)
        if msg.msg_type is _T.BUS:
            inner = msg.payload
            ptype = reply_type or (inner.msg_type if isinstance(inner, Message) else None)
            return self._wait(_T.BUS, timeout, payload_type=ptype, before=lambda: self.emit(msg))
        htype = hive_type(reply_type) if reply_type else msg.msg_type
        return self._wait(htype or msg.msg_type, timeout, before=lambda: self.emit(msg))

    def wait_for_payload_response(
        self,
        message: HiveMessage | Message,
        payload_type: str,
        reply_type: HiveMessageType | str | None = None,
        timeout: float = _DEFAULT_WAIT,
    ) -> HiveMessage | None:
        """Send ``message`` and return the next ``reply_type`` message (default: the
        message's hive type) whose payload type is ``payload_type``."""
        msg = self.prepare(message)
        htype = (hive_type(reply_type) if reply_type else None) or msg.msg_type
        return self._wait(htype, timeout, payload_type=payload_type, before=lambda: self.emit(msg))

    # -- mesh helpers (issue 5: QUERY, CASCADE, PING) ------------------------------------

    def query(self, message: HiveMessage | Message, timeout: float = 10.0) -> HiveMessage | None:
        """Send a QUERY wrapping ``message``; the first answer, or ``None`` on timeout."""
        qid, request = self._wrap_request(_T.QUERY, self.prepare(message))
        return self._wait(
            _T.QUERY,
            timeout,
            predicate=lambda m: is_response(m) and query_id_of(m) == qid,
            before=lambda: self.emit(request),
        )

    def cascade(
        self,
        message: HiveMessage | Message,
        timeout: float | None = None,
        expected: int | None = None,
    ) -> CascadeResult:
        """Send a CASCADE wrapping ``message`` and gather the answers.

        Returns after ``timeout`` (default ``cascade_timeout``) or once
        ``expected`` nodes answered; ``selected`` is what
        ``protocol.cascade_select_callback`` chose.
        """
        qid, request = self._wrap_request(_T.CASCADE, self.prepare(message))
        window = self._engine.cascade_timeout if timeout is None else timeout
        done = threading.Event()
        box: list[CascadeResult] = []

        def finished(result: CascadeResult) -> None:
            box.append(result)
            done.set()

        async def start() -> None:
            self._engine.begin_cascade(qid, finished, expected, window)

        self._io.run(start(), 5)
        self.emit(request)
        done.wait(window + 5)
        return box[0] if box else CascadeResult(qid, [], None, False)

    def ping(self, timeout: float = 5.0) -> list[HiveMessage]:
        """Flood a PING (inside PROPAGATE) and return the PONGs received within ``timeout``."""
        ping_id, outer = self._make_ping()
        pongs: list[HiveMessage] = []
        lock = threading.Lock()

        def collect(msg: HiveMessage) -> None:
            data = msg.payload if isinstance(msg.payload, dict) else {}
            if data.get("ping_id") == ping_id:
                msg.metadata.setdefault("received_at", time.time())
                with lock:
                    pongs.append(msg)

        self._engine.note_own_ping(ping_id)
        self.on(_T.PONG, collect)
        try:
            self.emit(outer)
            time.sleep(timeout)
        finally:
            self.remove(_T.PONG, collect)
        with lock:
            return list(pongs)

    # -- plumbing ------------------------------------------------------------------------

    def _dispatch(self, calls: list[Call]) -> None:
        self._dispatcher.put(calls)

    def _run_awaitable(self, coro: Any) -> None:
        loop = self._io.loop
        if loop is None:
            coro.close()
            return
        asyncio.run_coroutine_threadsafe(coro, loop)

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
