"""What the MQTT client and the hub's MQTT listener agree on: topics, payloads, notices.

Shared by :mod:`hivemind_bus_client.mqtt_client` and
:mod:`hivemind_core.mqtt_listener` (whose docstrings describe the exchange), so
both ends build and read the wire the same way. Pure functions of strings and
bytes, plus the one place ``aiomqtt`` is imported with a clear error when the
``mqtt`` extra is not installed.
"""

from __future__ import annotations

import hashlib
import json
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

try:
    import aiomqtt
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "HiveMind over MQTT needs aiomqtt: install it with pip install 'hivemind-mesh[mqtt]'"
    ) from exc

__all__ = [
    "DEFAULT_PREFIX",
    "OFFLINE",
    "ONLINE",
    "Broker",
    "aiomqtt",
    "format_notice",
    "frame_of",
    "key_address",
    "parse_notice",
    "payload_of",
    "plain_hello",
    "pump",
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
