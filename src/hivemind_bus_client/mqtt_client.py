"""HiveMind through an MQTT broker: :class:`HiveMindMQTTClient`.

For satellites that already sit on an MQTT bus (home automation, small
devices) and cannot, or should not, open a socket to the hub. The hub joins
the same broker (``hivemind-core listen --mqtt-host ...``); neither end binds
a port. Topics, as the ecosystem's MQTT plugin (``JarbasHiveMind/hivemind-mqtt-protocol``)
and our hub (:mod:`hivemind_core.mqtt_listener`, which describes the exchange):

=================================  ===============================================
``<prefix>/<access_key>/in``       our frames to the hub
``<prefix>/<access_key>/out``      the hub's frames to us
``<prefix>/<access_key>/status``   our presence (retained ``online``; ``offline``
                                   on close and as our last will), and the hub's
                                   ``offline <code> <reason>`` when it ends our link
``<prefix>/<hub node_id>/status``  the hub's presence (``offline``: link lost)
=================================  ===============================================

Each payload is one frame of the websocket protocol (text frames as UTF-8).
Opening a link: connect to the broker with the last will, publish ``online``,
subscribe, then publish an unencrypted HELLO (pubkey, session, site_id,
useragent) on ``/in``: MQTT has no connection event, so this bootstrap is what
makes the hub open a link and send its HELLO and HANDSHAKE offer, exactly as
the ecosystem's MQTT satellites do. From there the sans-I/O
:class:`~hivemind_bus_client.protocol.connection.Connection` runs the usual password,
RSA or pre-shared-key handshake. Frames that reach ``/out`` before the hub's
plaintext HELLO belong to an older link of this key and are skipped.

This module is thin: :class:`MQTTChannel` offers the part of a websocket
connection :class:`~hivemind_bus_client._transport.LinkEngine` drives (``recv``,
``send``, ``close``, iteration, close codes as ``websockets.ConnectionClosed``),
so the handshake, the error mapping (wrong password: ``AuthenticationFailed``;
unknown key: ``UnauthorizedKeyError``), PING answers, INTERCOM, CASCADE and the
reconnect policy are :class:`LinkEngine`'s, and :class:`HiveMindMQTTClient` is
the sync client with :class:`MQTTLinkEngine`. Each link attempt uses a fresh
broker connection under one client identifier per client, so the broker
retires a stale connection (and fires its last will) before the new one
speaks. Broker failures become :class:`HiveMindEntryPointNotFound` (unreachable),
:class:`SecureConnectionFailed` (TLS) or :class:`ConfigurationError` (the broker
refused our broker login).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import ssl
import uuid
from typing import Any

import websockets
from websockets.frames import Close

from hivemind_bus_client import _mqtt_wire as wire
from hivemind_bus_client._mqtt_wire import aiomqtt
from hivemind_bus_client._transport import LinkEngine
from hivemind_bus_client.client import ClientCore, HiveMessageBusClient
from hivemind_bus_client.exceptions import (
    ConfigurationError,
    ConnectTimeout,
    HiveMindEntryPointNotFound,
    SecureConnectionFailed,
)
from hivemind_bus_client.http_client import _has_port
from hivemind_bus_client.identity import NodeIdentity
from hivemind_bus_client.protocol.message import HiveMessage, HiveMessageType

__all__ = [
    "DEFAULT_MQTT_PORT",
    "DEFAULT_MQTT_USERAGENT",
    "HiveMindMQTTClient",
    "MQTTChannel",
    "MQTTLinkEngine",
]

LOG = logging.getLogger(__name__)

#: The MQTT port brokers listen on without TLS.
DEFAULT_MQTT_PORT = 1883
#: Useragent our client announces in its bootstrap HELLO.
DEFAULT_MQTT_USERAGENT = "HiveMindMQTTClientV1.0"

#: Arguments of the websocket client, which this client takes too.
_CLIENT_SIGNATURE = inspect.signature(ClientCore)
#: Queued after the last frame of a link.
_END = object()


def _lost() -> websockets.ConnectionClosed:
    """The close of a link whose broker connection is gone (reads as code 1006)."""
    return websockets.ConnectionClosed(None, None)


class MQTTChannel:
    """One broker connection carrying one link attempt (see the module docstring)."""

    #: Read by LinkEngine when iteration ends without an exception (it never does here).
    close_exc: websockets.ConnectionClosed | None = None

    def __init__(self, engine: MQTTLinkEngine) -> None:
        self.engine = engine
        key = engine.config.key
        self.in_topic = engine.topic(key, "in")
        self.out_topic = engine.topic(key, "out")
        self.status_topic = engine.topic(key, "status")
        self.hub_topic: str | None = None
        self._client: aiomqtt.Client | None = None
        self._frames: asyncio.Queue[str | bytes | object] = asyncio.Queue()
        self._ended: websockets.ConnectionClosed | None = None
        self._greeted = False
        self._reader: asyncio.Task[None] | None = None

    # -- opening ----------------------------------------------------------------------

    async def open(self) -> None:
        """Connect (with our last will), announce ``online``, subscribe, send the bootstrap HELLO."""
        engine = self.engine
        cfg = engine.config
        client = engine.broker.client(engine.client_id, self.status_topic, cfg.connect_timeout)
        await client.__aenter__()
        self._client = client
        await client.publish(self.status_topic, wire.ONLINE, qos=1, retain=True)
        await client.subscribe(self.out_topic, qos=engine.broker.qos)
        await client.subscribe(self.status_topic, qos=1)
        self._reader = asyncio.get_running_loop().create_task(
            self._read(client), name="hivemind-mqtt-client-read"
        )
        hello = {
            "pubkey": engine.identity.public_key,
            "session": engine.session_dict(),
            "site_id": cfg.site_id,
            "useragent": cfg.useragent,
        }
        await self.send(HiveMessage(HiveMessageType.HELLO, hello).serialize())

    async def watch_hub(self, node_id: str) -> None:
        """Follow the hub's presence topic: its ``offline`` ends the link."""
        client = self._client
        if client is None or self.hub_topic is not None or not wire.valid_level(node_id):
            return
        self.hub_topic = self.engine.topic(node_id, "status")
        try:
            await client.subscribe(self.hub_topic, qos=1)
        except aiomqtt.MqttError as exc:
            LOG.debug("could not follow the hub's presence: %s", exc)

    # -- the websocket-like surface LinkEngine drives ------------------------------------

    async def recv(self) -> str | bytes:
        """The next frame from the hub; raises ``ConnectionClosed`` once the link ended.

        Frames that arrived before the end are returned first, in order.
        """
        item = await self._frames.get()
        if item is _END:
            self._frames.put_nowait(_END)  # every later call raises too
            await self.close()  # leave the broker before anyone opens the next link
            assert self._ended is not None
            raise self._ended
        return item  # type: ignore[return-value]

    def __aiter__(self) -> MQTTChannel:
        return self

    async def __anext__(self) -> str | bytes:
        return await self.recv()

    async def send(self, frame: str | bytes) -> None:
        """Publish one frame to the hub."""
        client = self._client
        if self._ended is not None or client is None:
            raise self._ended or _lost()
        try:
            await client.publish(self.in_topic, wire.payload_of(frame), qos=self.engine.broker.qos)
        except aiomqtt.MqttError as exc:
            LOG.debug("publish to the broker failed: %s", exc)
            self._end(_lost())
            raise _lost() from None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """End the link: say ``offline`` (the hub drops our link) and leave the broker."""
        self._end(websockets.ConnectionClosed(None, Close(code, reason)))
        client, self._client = self._client, None
        reader, self._reader = self._reader, None
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
        if client is not None:
            with contextlib.suppress(Exception):
                await client.publish(self.status_topic, wire.OFFLINE, qos=1, retain=True)
            with contextlib.suppress(Exception):
                await client.__aexit__(None, None, None)

    # -- incoming -----------------------------------------------------------------------

    def _end(self, why: websockets.ConnectionClosed) -> None:
        if self._ended is None:
            self._ended = why
            self._frames.put_nowait(_END)

    async def _read(self, client: aiomqtt.Client) -> None:
        try:
            await wire.pump(client, self._on_message)
        except aiomqtt.MqttError as exc:
            LOG.debug("broker connection lost: %s", exc)
            self._end(_lost())

    def _on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        if topic == self.out_topic:
            if not self._greeted:
                if wire.plain_hello(payload) is None:
                    LOG.debug("skipped a frame of an older link before the hub's HELLO")
                    return
                self._greeted = True
            self._frames.put_nowait(wire.frame_of(payload))
        elif retained:
            return  # presence from before we subscribed
        elif topic == self.status_topic:
            notice = wire.parse_notice(payload)
            if notice is not None:
                self._end(websockets.ConnectionClosed(Close(*notice), None))
        elif topic == self.hub_topic and payload.strip() == wire.OFFLINE:
            self._end(websockets.ConnectionClosed(Close(1001, "the hub went offline"), None))


class MQTTLinkEngine(LinkEngine):
    """The client link engine over an MQTT broker (see the module docstring).

    Args:
        broker: the broker, our login there and the topic scheme.
        Other arguments: as :class:`~hivemind_bus_client._transport.LinkEngine`.
    """

    def __init__(self, *args: Any, broker: wire.Broker, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.broker = broker
        #: One identifier for every broker connection of this client (see the module docstring).
        self.client_id = f"hivemind-sat-{uuid.uuid4().hex[:16]}"

    def topic(self, ident: str, direction: str) -> str:
        """``<prefix>/<ident>/<direction>``."""
        return self.broker.topic(ident, direction)

    async def _open_socket(self) -> Any:
        """A broker connection that has sent the bootstrap HELLO (LinkEngine handshakes over it)."""
        cfg = self.config
        where = f"MQTT broker {cfg.host}:{cfg.port}"
        channel = MQTTChannel(self)
        try:
            await asyncio.wait_for(channel.open(), cfg.connect_timeout)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await channel.close()
            if isinstance(exc, asyncio.TimeoutError):
                raise ConnectTimeout(
                    f"no answer from the {where} within {cfg.connect_timeout:g} s"
                ) from None
            if isinstance(exc, ssl.SSLError) or isinstance(exc.__cause__, ssl.SSLError):
                raise SecureConnectionFailed(f"TLS with the {where} failed: {exc}") from None
            if isinstance(exc, aiomqtt.MqttCodeError) and exc.rc in (4, 5, 134, 135):
                raise ConfigurationError(f"the {where} refused our login: {exc}") from None
            if isinstance(exc, (aiomqtt.MqttError, OSError)):
                raise HiveMindEntryPointNotFound(f"cannot reach the {where}: {exc}") from None
            raise
        return channel

    async def open_link(self) -> None:
        """Open a link (see :meth:`LinkEngine.open_link`), then follow the hub's presence."""
        await super().open_link()
        channel = self.ws
        if isinstance(channel, MQTTChannel) and self.node_id:
            await channel.watch_hub(self.node_id)


class HiveMindMQTTClient(HiveMessageBusClient):
    """A HiveMind satellite through an MQTT broker (same API as :class:`HiveMessageBusClient`).

    Args:
        key, password, crypto_key, site_id, session_id, identity, internal_bus,
            bin_callbacks, share_bus, compress, binarize: as the websocket client;
            key and password come from the identity file when not given.
        host: the MQTT broker's address (default: the identity file's
            ``default_master``); ``mqtts://host`` means TLS.
        port: the broker's port (default 1883, or one written in ``host``).
        useragent: announced in the bootstrap HELLO (part of our peer name at the hub).
        prefix: first topic level(s), as the hub's ``mqtt_prefix`` (default ``hivemind``).
        broker_username, broker_password: our login at the broker, if it wants one.
        broker_tls: TLS to the broker: True (system trust store) or an ``ssl.SSLContext``.
        qos: QoS of our frames (default 1).
        keepalive: MQTT keepalive in seconds (how soon the broker notices we are gone).

    Other keyword-only limits as :class:`HiveMessageBusClient` (``ping_*`` unused:
    the hub's presence topic and the broker's keepalive watch the link).

    Raises:
        ConfigurationError: no access key or no broker host from either source.
    """

    def __init__(
        self,
        *args: Any,
        prefix: str = wire.DEFAULT_PREFIX,
        broker_username: str | None = None,
        broker_password: str | None = None,
        broker_tls: bool | ssl.SSLContext | None = None,
        qos: int = 1,
        keepalive: int = 30,
        **kwargs: Any,
    ) -> None:
        # The websocket client's arguments, positional or not; only the defaults
        # of useragent and port differ.
        call = _CLIENT_SIGNATURE.bind_partial(*args, **kwargs).arguments
        ident = call.get("identity") or NodeIdentity()
        call["identity"] = ident
        raw_host = call.get("host") or ident.default_master or ""
        secure = raw_host.lower().startswith(("mqtts://", "ssl://"))
        if call.get("port") is None and not _has_port(raw_host):
            call["port"] = DEFAULT_MQTT_PORT
        call["useragent"] = call.get("useragent") or DEFAULT_MQTT_USERAGENT
        super().__init__(**call)
        tls = secure if broker_tls is None else broker_tls
        self.config.secure = bool(tls)
        cfg = self.config
        broker = wire.Broker(
            cfg.host, cfg.port, broker_username, broker_password, tls, prefix, qos, keepalive
        )
        self._engine = MQTTLinkEngine(
            cfg, self.identity, self._registry, self._dispatch, broker=broker
        )
        self._engine.on_state = self._on_state

    @property
    def topics(self) -> dict[str, str]:
        """Our ``in``, ``out`` and ``status`` topics."""
        engine: MQTTLinkEngine = self._engine  # type: ignore[assignment]
        return {d: engine.topic(self.config.key, d) for d in ("in", "out", "status")}
