"""HiveMind through an MQTT broker: :class:`HiveMindMQTTClient`.

For satellites that already sit on an MQTT bus (home automation, small
devices) and cannot, or should not, open a socket to the hub. The hub joins
the same broker (``hivemind-core listen --mqtt-host ...``); neither end binds
a port. The client is the sync client with an
:class:`~hivemind_bus_client.transport.mqtt.MQTTChannel` under its engine
(that module describes topics and the bootstrap), so the handshake and its
timeout, the error mapping (wrong password: ``AuthenticationFailed``; unknown
key: ``UnauthorizedKeyError``; broker unreachable:
``HiveMindEntryPointNotFound``; broker login refused: ``ConfigurationError``)
and reconnects are the websocket client's. Each link attempt uses a fresh
broker connection under one client identifier per client, so the broker retires
a stale connection (and fires its last will) before the new one speaks.
"""

from __future__ import annotations

import ssl
import uuid
from typing import Any

from hivemind_bus_client.client.channelled import ChannelledClient, client_arguments
from hivemind_bus_client.transport import mqtt as wire

__all__ = ["DEFAULT_MQTT_PORT", "DEFAULT_MQTT_USERAGENT", "HiveMindMQTTClient", "MQTTChannel"]

#: The MQTT port brokers listen on without TLS.
DEFAULT_MQTT_PORT = 1883
#: Useragent our client announces in its bootstrap HELLO.
DEFAULT_MQTT_USERAGENT = "HiveMindMQTTClientV1.0"
#: The channel class, under its old name here.
MQTTChannel = wire.MQTTChannel


class HiveMindMQTTClient(ChannelledClient):
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
        call, raw_host = client_arguments(
            args,
            kwargs,
            default_port=DEFAULT_MQTT_PORT,
            default_useragent=DEFAULT_MQTT_USERAGENT,
        )
        secure = raw_host.lower().startswith(("mqtts://", "ssl://"))
        super().__init__(**call)
        tls = secure if broker_tls is None else broker_tls
        self.config.secure = bool(tls)
        cfg = self.config
        self.broker = wire.Broker(
            cfg.host, cfg.port, broker_username, broker_password, tls, prefix, qos, keepalive
        )
        #: One identifier for every broker connection of this client.
        self.client_id = f"hivemind-sat-{uuid.uuid4().hex[:16]}"

    def _new_channel(self) -> wire.MQTTChannel:
        cfg, engine = self.config, self._engine
        hello = {
            "pubkey": self.identity.public_key,
            "session": engine.keys.session_dict(),
            "site_id": cfg.site_id,
            "useragent": cfg.useragent,
        }
        return wire.MQTTChannel(
            self.broker, cfg.key, self.client_id, hello, timeout=cfg.connect_timeout
        )

    @property
    def topics(self) -> dict[str, str]:
        """Our ``in``, ``out`` and ``status`` topics."""
        return {d: self.broker.topic(self.config.key, d) for d in ("in", "out", "status")}
