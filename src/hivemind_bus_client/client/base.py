"""The state both client faces hold: settings, handlers, the node and its engine.

:class:`ClientBase` resolves the settings (arguments, then the identity file),
keeps the handler registry and builds the
:class:`~hivemind_bus_client.client.node.ClientNode`; the requests are
:class:`~hivemind_bus_client.client.core.ClientCore`'s.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from ovos_bus_client.message import Message

from hivemind_bus_client.client import config as _settings
from hivemind_bus_client.client.engine import LinkEngine
from hivemind_bus_client.client.handlers import Call, HandlerRegistry, hive_type
from hivemind_bus_client.client.keys import ChannelFactory
from hivemind_bus_client.client.node import ClientNode
from hivemind_bus_client.client.shaping import BinaryDataCallbacks
from hivemind_bus_client.identity import NodeIdentity
from hivemind_bus_client.protocol.message import (
    HiveMessage,
    HiveMessageType,
    HiveMindBinaryPayloadType,
)

__all__ = ["ClientBase"]

LOG = logging.getLogger(__name__)

_T = HiveMessageType
#: Marks a keyword argument that was not given (``None`` means "off" for pings).
_UNSET: Any = object()


class ClientBase:
    """Settings, the handler registry and the node, for both client faces.

    Not public: see :class:`~hivemind_bus_client.client.core.ClientCore`.
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
        ping_interval: float | None = _settings.DEFAULT_PING_INTERVAL,
        ping_timeout: float | None = _settings.DEFAULT_PING_TIMEOUT,
        send_timeout: float = 10.0,
        max_size: int = 16 * 1024 * 1024,
        max_inflated: int = 1024 * 1024,
        answer_pings: bool = True,
        cascade_timeout: float = 5.0,
        websocket_ping_interval: Any = _UNSET,
        websocket_ping_timeout: Any = _UNSET,
        websocket_connect_timeout: float = 30.0,
        max_protocol_version: int = _settings.MAX_PROTOCOL_VERSION,
    ) -> None:
        # The 1.2.x client's names for the keepalive; when given they win.
        if websocket_ping_interval is not _UNSET:
            ping_interval = websocket_ping_interval
        if websocket_ping_timeout is not _UNSET:
            ping_timeout = websocket_ping_timeout
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
            max_inflated=max_inflated,
            answer_pings=answer_pings,
            cascade_timeout=cascade_timeout,
            websocket_connect_timeout=websocket_connect_timeout,
            max_protocol_version=max_protocol_version,
        )
        self.internal_bus = internal_bus
        self.bin_callbacks = bin_callbacks or BinaryDataCallbacks()
        self._registry = HandlerRegistry()
        self._registry.on_bin(_T.BINARY, self._builtin_binary)
        if internal_bus is not None and hasattr(internal_bus, "emit"):
            self._registry.on(_T.BUS, self._to_internal_bus)
        #: Set while a socket to the hub is open (before and after its handshake).
        self.connected_event = threading.Event()
        #: Set while the link is keyed (handshake complete); cleared when it is lost.
        self.handshake_event = threading.Event()
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
        node.on_open = self._on_open
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
        """The node; carries ``cascade_select_callback`` and ``hive_mapper`` (docs/client.md, "Node duties")."""
        return self._node

    @property
    def max_protocol_version(self) -> int:
        """Highest protocol version this client may speak (1..3; v3 needs 3 and a password)."""
        return self.config.max_protocol_version

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

    def _on_open(self, up: bool) -> None:
        """A socket opened (``up``) or is gone: :attr:`connected_event` follows it."""
        if up:
            self.connected_event.set()
        else:
            self.connected_event.clear()
            self.handshake_event.clear()

    def _on_state(self, up: bool, reason: BaseException | None) -> None:
        """A link was keyed (``up``) or lost: :attr:`handshake_event` follows it."""
        if up:
            self.connected_event.set()
            self.handshake_event.set()
        else:
            self.handshake_event.clear()
