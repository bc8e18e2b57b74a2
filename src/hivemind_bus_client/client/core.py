"""What the sync and the asyncio client share: settings, handlers, and every request.

:class:`ClientCore` holds the settings, the handler registry and the
:class:`~hivemind_bus_client.client.node.ClientNode`, and writes each request
(``wait_for_message``, ``wait_for_mycroft``, ``wait_for_payload``,
``wait_for_response``, ``wait_for_payload_response``, ``query``, ``cascade``,
``ping``) once, as a :class:`Request`: what to send, and which message answers.
The faces differ only in how they wait: each implements :meth:`ClientCore._wait`,
:meth:`ClientCore._gather` and :meth:`ClientCore._flood` (the sync face blocks
on its I/O thread, the asyncio face awaits), and ``emit``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ovos_bus_client.message import Message

from hivemind_bus_client.client import config as _settings
from hivemind_bus_client.client.engine import ChannelFactory, LinkEngine
from hivemind_bus_client.client.handlers import Call, HandlerRegistry, hive_type
from hivemind_bus_client.client.node import ClientNode
from hivemind_bus_client.client.shaping import BinaryDataCallbacks, prepare, wrap_request
from hivemind_bus_client.identity import NodeIdentity
from hivemind_bus_client.protocol.cascade import CascadeResult, is_response, query_id_of
from hivemind_bus_client.protocol.message import (
    HiveMessage,
    HiveMessageType,
    HiveMindBinaryPayloadType,
)

__all__ = ["DEFAULT_WAIT", "BinaryDataCallbacks", "ClientCore", "Request"]

LOG = logging.getLogger(__name__)

_T = HiveMessageType
#: Seconds the ``wait_for_*`` methods wait by default.
DEFAULT_WAIT = 3.0


@dataclass
class Request:
    """One request: the message that answers it, and what to send first.

    ``send`` is emitted as it is; ``originate`` goes through the node's router
    first (QUERY: bound to its answer). ``unwrap`` returns the answer's payload
    (the OVOS message of a BUS answer) instead of the HiveMessage.
    """

    msg_type: HiveMessageType
    payload_type: str | None = None
    predicate: Callable[[HiveMessage], bool] | None = None
    send: HiveMessage | None = None
    originate: HiveMessage | None = None
    unwrap: bool = False

    def result(self, msg: HiveMessage | None) -> Any:
        """What the caller gets for the answer ``msg`` (None: timed out)."""
        if msg is None:
            return None
        return msg.payload if self.unwrap else msg


class ClientCore:
    """Settings, handlers, message shaping and the requests of both client faces.

    Not public: use :class:`~hivemind_bus_client.client.sync.HiveMessageBusClient`
    or :class:`~hivemind_bus_client.client.asyncio.AsyncHiveMessageBusClient`.
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
        self.config, self.identity = _settings.resolve(
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
        self._node = self._make_node()

    def _make_node(self, channel_factory: ChannelFactory | None = None) -> ClientNode:
        """The node (router + engine); HTTP and MQTT faces pass their channel factory."""
        node = ClientNode(
            self.config,
            self.identity,
            self._registry,
            self._dispatch,
            channel_factory=channel_factory,
        )
        node.on_state = self._on_state
        return node

    @property
    def _engine(self) -> LinkEngine:
        return self._node.engine

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
    def protocol(self) -> ClientNode:
        """The node; carries ``cascade_select_callback`` and ``hive_mapper`` (seed doc 001)."""
        return self._node

    @property
    def connected(self) -> bool:
        """True while a keyed link to the hub exists."""
        return self._engine.connected

    @property
    def fatal_error(self) -> BaseException | None:
        """Why the client stopped for good (a refusal on reconnect, or giving up)."""
        return self._engine.fatal_error

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
        """Counters: messages in/out, PINGs answered, INTERCOMs opened and dropped, connects."""
        return self._node.stats

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
        """Call ``func(data, context)`` for BINARY messages (all, or one binary type)."""
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

    # -- sending (the faces implement emit) ----------------------------------------------

    def prepare(
        self,
        message: HiveMessage | Message,
        binary_type: HiveMindBinaryPayloadType | int = HiveMindBinaryPayloadType.UNDEFINED,
    ) -> HiveMessage:
        """The HiveMessage :meth:`emit` sends: OVOS messages wrapped as BUS, contexts filled."""
        return prepare(message, self.config, binary_type)

    def emit(self, message: HiveMessage | Message, binary_type: Any = 0) -> Any:
        raise NotImplementedError  # pragma: no cover - each face sends its own way

    def emit_mycroft(self, message: Message) -> Any:
        """Send an OVOS message to the hub's bus (as BUS)."""
        return self.emit(HiveMessage(_T.BUS, message))

    def emit_intercom(self, message: HiveMessage | Message, pubkey: str) -> Any:
        """Send ``message`` end-to-end encrypted to the node owning ``pubkey`` (INTERCOM)."""
        return self.emit(self._node.make_intercom(self.prepare(message), pubkey))

    async def _send_originated(self, message: HiveMessage) -> None:
        """On the loop: route a request through the node's router and send it."""
        await self._engine.wait_ready(self.config.send_timeout)
        for out in self._node.originate(message):
            await self._engine.send(out)

    async def _start_ping(self, flood: list[str]) -> None:
        """On the loop: start a PING flood; its id goes into ``flood`` before it is sent."""
        await self._engine.wait_ready(self.config.send_timeout)
        flood_id, out = self._node.ping()
        flood.append(flood_id)
        for msg in out:
            await self._engine.send(msg)

    # -- requests, written once (the faces implement _wait, _gather and _flood) ---------

    def _wait(self, request: Request, timeout: float) -> Any:
        raise NotImplementedError  # pragma: no cover

    def _gather(self, qid: str, request: HiveMessage, window: float, expected: int | None) -> Any:
        raise NotImplementedError  # pragma: no cover

    def _flood(self, timeout: float) -> Any:
        raise NotImplementedError  # pragma: no cover

    def wait_for_message(
        self, message_type: HiveMessageType | str, timeout: float = DEFAULT_WAIT
    ) -> Any:
        """The next hive message of ``message_type`` (or, for an OVOS type, the next
        BUS message of that type as an OVOS Message); ``None`` on timeout."""
        htype = hive_type(message_type)
        if htype is None:
            return self.wait_for_mycroft(str(message_type), timeout)
        return self._wait(Request(htype), timeout)

    def wait_for_mycroft(self, mycroft_msg_type: str, timeout: float = DEFAULT_WAIT) -> Any:
        """The next BUS message of OVOS type ``mycroft_msg_type``; ``None`` on timeout."""
        return self._wait(Request(_T.BUS, mycroft_msg_type, unwrap=True), timeout)

    def wait_for_payload(
        self,
        payload_type: str,
        message_type: HiveMessageType | str = _T.THIRDPRTY,
        timeout: float = DEFAULT_WAIT,
    ) -> Any:
        """The next ``message_type`` message whose payload type is ``payload_type``."""
        htype = hive_type(message_type) or _T.THIRDPRTY
        return self._wait(Request(htype, payload_type), timeout)

    def wait_for_response(
        self,
        message: HiveMessage | Message,
        reply_type: str | None = None,
        timeout: float = DEFAULT_WAIT,
    ) -> Any:
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
            return self._wait(Request(_T.BUS, ptype, send=msg), timeout)
        htype = (hive_type(reply_type) if reply_type else None) or msg.msg_type
        return self._wait(Request(htype, send=msg), timeout)

    def wait_for_payload_response(
        self,
        message: HiveMessage | Message,
        payload_type: str,
        reply_type: HiveMessageType | str | None = None,
        timeout: float = DEFAULT_WAIT,
    ) -> Any:
        """Send ``message`` and return the next ``reply_type`` message (default: the
        message's hive type) whose payload type is ``payload_type``."""
        msg = self.prepare(message)
        htype = (hive_type(reply_type) if reply_type else None) or msg.msg_type
        return self._wait(Request(htype, payload_type, send=msg), timeout)

    def query(self, message: HiveMessage | Message, timeout: float = 10.0) -> Any:
        """Send a QUERY wrapping ``message``; the first answer, or ``None`` on timeout."""
        qid, request = wrap_request(_T.QUERY, self.prepare(message))

        def answers(m: HiveMessage) -> bool:
            return is_response(m) and query_id_of(m) == qid

        return self._wait(Request(_T.QUERY, predicate=answers, originate=request), timeout)

    def cascade(
        self,
        message: HiveMessage | Message,
        timeout: float | None = None,
        expected: int | None = None,
    ) -> Any:
        """Send a CASCADE wrapping ``message`` and gather the answers (a CascadeResult).

        Returns after ``timeout`` (default ``cascade_timeout``) or once
        ``expected`` nodes answered; ``selected`` is what
        ``protocol.cascade_select_callback`` chose.
        """
        qid, request = wrap_request(_T.CASCADE, self.prepare(message))
        window = self._node.cascade_timeout if timeout is None else timeout
        return self._gather(qid, request, window, expected)

    def ping(self, timeout: float = 5.0) -> Any:
        """Flood a PING (inside PROPAGATE) and return the PONGs received within ``timeout``."""
        return self._flood(timeout)

    @staticmethod
    def _pong_collector(
        flood: list[str], pongs: list[HiveMessage]
    ) -> Callable[[HiveMessage], None]:
        """A PONG handler keeping the answers to the flood named in ``flood`` (once set)."""

        def collect(msg: HiveMessage) -> None:
            data = msg.payload if isinstance(msg.payload, dict) else {}
            if flood and flood[0] in (data.get("ping_id"), data.get("flood_id")):
                msg.metadata.setdefault("received_at", time.time())
                pongs.append(msg)

        return collect

    @staticmethod
    def _no_answers(qid: str) -> CascadeResult:
        return CascadeResult(qid, [], None, False)

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

    def _on_state(self, up: bool, reason: BaseException | None) -> None:
        """A link was keyed (``up``) or lost; the sync face sets its events."""
