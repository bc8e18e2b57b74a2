"""HiveMind through an MQTT broker: the wire both ends agree on, and the client's channel.

Topics (docs/hub.md, "MQTT topics"):

=================================  ===============================================
``<prefix>/<access_key>/in``       the satellite's frames to the hub
``<prefix>/<access_key>/out``      the hub's frames to the satellite
``<prefix>/<access_key>/status``   the satellite's presence (retained ``online``;
                                   ``offline`` on close and as its last will), and
                                   the hub's ``offline <code> <reason>`` when it
                                   ends the link
``<prefix>/<hub node_id>/status``  the hub's presence (``offline``: link lost)
=================================  ===============================================

Each payload is one frame of the websocket protocol (text frames as UTF-8).
The functions here (topics, payloads, notices) are shared by the client's
:class:`MQTTChannel` and the hub's MQTT listener, so both ends build and read the
wire the same way; this is also the one place ``aiomqtt`` is imported, with a
clear error when the ``mqtt`` extra is not installed.

:class:`MQTTChannel` opens a link: connect to the broker with the last will,
publish ``online``, subscribe, then publish an unencrypted bootstrap HELLO
(pubkey, session, site_id, useragent) on ``/in``: MQTT has no connection
event, so this is what makes the hub open a link and send its HELLO and
HANDSHAKE offer. Frames that reach ``/out`` before the hub's plaintext HELLO
belong to an older link of this key and are skipped; the hub's HELLO names its
node id, whose presence topic the channel then follows.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_MISSING = "HiveMind over MQTT needs aiomqtt: install it with pip install 'hivemind-mesh[mqtt]'"


def require_aiomqtt() -> None:
    """Raise a clear ImportError when the ``mqtt`` extra (aiomqtt) is not installed."""
    try:
        import aiomqtt  # noqa: F401
    except ImportError as exc:
        raise ImportError(_MISSING) from exc


require_aiomqtt()
import aiomqtt  # noqa: E402

from hivemind_bus_client.exceptions import CloseCode  # noqa: E402
from hivemind_bus_client.protocol.message import HiveMessage, HiveMessageType  # noqa: E402
from hivemind_bus_client.transport.channel import PumpedChannel  # noqa: E402
from hivemind_bus_client.transport.errors import map_errors  # noqa: E402

LOG = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_PREFIX",
    "OFFLINE",
    "ONLINE",
    "Broker",
    "MQTTChannel",
    "aiomqtt",
    "format_notice",
    "frame_of",
    "key_address",
    "parse_notice",
    "payload_of",
    "plain_hello",
    "pump",
    "require_aiomqtt",
    "tls_context",
    "topic",
    "valid_level",
]

#: First topic level(s) of every HiveMind topic, as the ecosystem's MQTT plugin.
DEFAULT_PREFIX = "hivemind"
#: Retained presence values on ``<prefix>/<id>/status``.
ONLINE = b"online"
OFFLINE = b"offline"
#: Bootstrap HELLOs are small; anything larger is a frame, not a bootstrap.
_MAX_HELLO = 64 * 1024
#: Topic levels may not hold these.
_TOPIC_RESERVED = frozenset("/+#")


@dataclass
class Broker:
    """Where the broker is, how to log in, and the topic scheme: what both ends configure."""

    host: str
    port: int = 1883
    #: Login at the broker (not the HiveMind access key), when the broker wants one.
    username: str | None = None
    password: str | None = None
    #: TLS: True (system trust store) or a context of one's own.
    tls: bool | ssl.SSLContext = False
    #: First topic level(s).
    prefix: str = DEFAULT_PREFIX
    #: QoS of the frames one publishes and of the frame subscription.
    qos: int = 1
    #: MQTT keepalive, seconds: how soon the broker notices a dead peer (and fires its will).
    keepalive: int = 30

    def topic(self, ident: str, direction: str) -> str:
        """``<prefix>/<ident>/<direction>``."""
        return topic(self.prefix.strip("/") or DEFAULT_PREFIX, ident, direction)

    def client(self, identifier: str, will_topic: str | None, timeout: float) -> aiomqtt.Client:
        """An unconnected client whose last will is a retained ``offline`` on ``will_topic``."""
        will = aiomqtt.Will(will_topic, OFFLINE, qos=1, retain=True) if will_topic else None
        return aiomqtt.Client(
            self.host,
            self.port,
            username=self.username,
            password=self.password,
            identifier=identifier,
            will=will,
            keepalive=self.keepalive,
            tls_context=tls_context(self.tls),
            timeout=timeout,
        )


def topic(prefix: str, ident: str, direction: str) -> str:
    """``<prefix>/<ident>/<direction>`` (direction ``in``, ``out`` or ``status``)."""
    return f"{prefix}/{ident}/{direction}"


def valid_level(ident: str) -> bool:
    """True when ``ident`` can stand as one topic level."""
    return bool(ident) and not any(c in _TOPIC_RESERVED for c in ident)


def payload_of(frame: str | bytes) -> bytes:
    """The MQTT payload of one frame: text frames as UTF-8, binary frames as they are."""
    return frame.encode("utf-8") if isinstance(frame, str) else bytes(frame)


def frame_of(payload: bytes) -> str | bytes:
    """The frame a payload carries: text when it starts with ``{`` and is UTF-8, else binary."""
    if payload[:1] == b"{":
        try:
            return payload.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return payload


def plain_hello(payload: bytes) -> dict[str, Any] | None:
    """The payload of an unencrypted HELLO frame, or None for any other payload.

    Encrypted text frames (``{"ciphertext": ...}``) and binary frames are
    rejected without parsing, so the check costs nothing on ordinary traffic.
    """
    if payload[:1] != b"{" or len(payload) > _MAX_HELLO or b'"ciphertext"' in payload:
        return None
    try:
        obj = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(obj, dict) or obj.get("msg_type") != "hello":
        return None
    data = obj.get("payload")
    if isinstance(data, str):  # some encoders nest the payload as a JSON string
        try:
            data = json.loads(data)
        except ValueError:
            data = None
    return data if isinstance(data, dict) else {}


def format_notice(code: int, reason: str) -> bytes:
    """The hub's "your link ended" notice on the satellite's status topic."""
    text = " ".join(reason.split())[:120]
    return f"offline {int(code)} {text}".rstrip().encode("utf-8")


def parse_notice(payload: bytes) -> tuple[int, str] | None:
    """``(code, reason)`` of a status payload that ends a link, or None.

    A bare ``offline`` (what the ecosystem's hub publishes when it drops a
    satellite, and what a satellite's last will says) reads as code 1000.
    """
    text = payload.decode("utf-8", "replace").strip()
    if text == "offline":
        return 1000, "offline on the status topic"
    head, _, rest = text.partition(" ")
    if head != "offline":
        return None
    code_text, _, reason = rest.partition(" ")
    if not code_text.isdigit():
        return None
    return int(code_text), reason


def key_address(key: str) -> str:
    """A stand-in for the peer address of an MQTT satellite: per key, loggable (no key)."""
    return "mqtt:" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]


def tls_context(tls: bool | ssl.SSLContext) -> ssl.SSLContext | None:
    """The TLS context for a broker connection: None (plain TCP), the default one, or the given one."""
    if isinstance(tls, ssl.SSLContext):
        return tls
    return ssl.create_default_context() if tls else None


async def pump(client: aiomqtt.Client, handle: Callable[[str, bytes, bool], None]) -> None:
    """Call ``handle(topic, payload, retained)`` for every message until the broker is lost.

    Raises:
        aiomqtt.MqttError: the broker connection ended.
    """
    async for message in client.messages:
        payload = message.payload
        if not isinstance(payload, (bytes, bytearray)):
            payload = str(payload if payload is not None else "").encode("utf-8")
        handle(message.topic.value, bytes(payload), bool(message.retain))


class MQTTChannel(PumpedChannel):
    """A :class:`~hivemind_bus_client.transport.channel.Channel` through a broker
    (see the module docstring): one broker connection per link attempt.

    Args:
        broker: the broker, our login there and the topic scheme.
        key: our access key (names our topics).
        client_id: the broker client identifier (one per satellite, so the broker
            retires a stale connection, firing its will, before the new one speaks).
        hello: the bootstrap HELLO payload.
        timeout: seconds for broker operations.
        max_frames, max_bytes: bounds of the outgoing backlog.
    """

    def __init__(
        self,
        broker: Broker,
        key: str,
        client_id: str,
        hello: dict[str, Any],
        *,
        timeout: float = 10.0,
        max_frames: int = 4096,
        max_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        super().__init__(
            f"MQTT broker {broker.host}:{broker.port}",
            max_frames=max_frames,
            max_bytes=max_bytes,
            overflow_reason="send queue overflow (slow broker)",
        )
        self.broker = broker
        self.in_topic = broker.topic(key, "in")
        self.out_topic = broker.topic(key, "out")
        self.status_topic = broker.topic(key, "status")
        self.hub_topic: str | None = None
        self.client_id = client_id
        self.hello = hello
        self.timeout = timeout
        self._client: aiomqtt.Client | None = None
        self._greeted = False

    async def open(self) -> None:
        """Connect (with our last will), say ``online``, subscribe, send the bootstrap HELLO."""
        with map_errors(self.peer_address, connecting=True, timeout=self.timeout):
            client = self.broker.client(self.client_id, self.status_topic, self.timeout)
            await client.__aenter__()
            self._client = client
            await client.publish(self.status_topic, ONLINE, qos=1, retain=True)
            await client.subscribe(self.out_topic, qos=self.broker.qos)
            await client.subscribe(self.status_topic, qos=1)
            loop = asyncio.get_running_loop()
            self._tasks = [
                loop.create_task(self._read(client), name="hivemind-mqtt-read"),
                loop.create_task(self._send_loop(client), name="hivemind-mqtt-send"),
            ]
            hello = HiveMessage(HiveMessageType.HELLO, self.hello).serialize()
            await client.publish(self.in_topic, hello.encode("utf-8"), qos=self.broker.qos)

    # -- incoming ---------------------------------------------------------------------

    async def _read(self, client: aiomqtt.Client) -> None:
        try:
            await pump(client, self._on_message)
        except aiomqtt.MqttError as exc:
            LOG.debug("broker connection lost: %s", exc)
        self.feed_close(CloseCode.ABNORMAL, "broker connection lost")

    def _on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        if topic == self.out_topic:
            if not self._greeted:
                hello = plain_hello(payload)
                if hello is None:
                    LOG.debug("skipped a frame of an older link before the hub's HELLO")
                    return
                self._greeted = True
                node_id = hello.get("node_id")
                if isinstance(node_id, str):
                    asyncio.get_running_loop().create_task(
                        self._watch_hub(node_id), name="hivemind-mqtt-watch"
                    )
            self.feed(frame_of(payload))
        elif retained:
            return  # presence from before we subscribed
        elif topic == self.status_topic:
            notice = parse_notice(payload)
            if notice is not None:
                self.feed_close(*notice)
        elif topic == self.hub_topic and payload.strip() == OFFLINE:
            self.feed_close(CloseCode.GOING_AWAY, "the hub went offline")

    async def _watch_hub(self, node_id: str) -> None:
        """Follow the hub's presence topic: its ``offline`` ends the link."""
        client = self._client
        if client is None or self.hub_topic is not None or not valid_level(node_id):
            return
        self.hub_topic = self.broker.topic(node_id, "status")
        try:
            await client.subscribe(self.hub_topic, qos=1)
        except aiomqtt.MqttError as exc:
            LOG.debug("could not follow the hub's presence: %s", exc)

    # -- outgoing ---------------------------------------------------------------------

    async def _send_loop(self, client: aiomqtt.Client) -> None:
        async def publish(frame: str | bytes) -> None:
            await client.publish(self.in_topic, payload_of(frame), qos=self.broker.qos)

        try:
            await self._pump(publish)
        except aiomqtt.MqttError as exc:
            LOG.debug("publish to the broker failed: %s", exc)
            self.feed_close(CloseCode.ABNORMAL, "broker connection lost")

    async def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """End the link: say ``offline`` (the hub drops our link) and leave the broker."""
        self.close_nowait(code, reason)
        await self._stop_tasks()
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.publish(self.status_topic, OFFLINE, qos=1, retain=True)
            with contextlib.suppress(Exception):
                await client.__aexit__(None, None, None)
