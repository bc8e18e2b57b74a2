"""Old path of the hub's MQTT listener: see :mod:`hivemind_core.listeners.mqtt`."""

from hivemind_core.listeners.mqtt import (
    DEFAULT_MQTT_USERAGENT,
    BrokerChannel,
    MQTTListener,
    start_mqtt_listener,
)

__all__ = ["DEFAULT_MQTT_USERAGENT", "BrokerChannel", "MQTTListener", "start_mqtt_listener"]
