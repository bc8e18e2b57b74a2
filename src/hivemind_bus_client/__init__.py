"""HiveMind client library and the protocol core it shares with the hub.

The names most programs need are importable from here::

    from hivemind_bus_client import HiveMessageBusClient, HiveMessage, HiveMessageType

The client classes are imported on first use, so programs that only need the
protocol core (message model, framing, ciphers) do not load the websocket
transport.
"""

from __future__ import annotations

import importlib
from typing import Any

from hivemind_bus_client.exceptions import HiveMindError
from hivemind_bus_client.protocol.message import (
    HiveMessage,
    HiveMessageType,
    HiveMindBinaryPayloadType,
)

__all__ = [
    "AsyncHiveMessageBusClient",
    "BinaryDataCallbacks",
    "HiveMessage",
    "HiveMessageBusClient",
    "HiveMessageType",
    "HiveMindBinaryPayloadType",
    "HiveMindError",
    "NodeIdentity",
    "with_hivemind",
]

# name -> module that defines it; loaded lazily by __getattr__ (PEP 562).
_LAZY = {
    "HiveMessageBusClient": "hivemind_bus_client.client",
    "BinaryDataCallbacks": "hivemind_bus_client.client",
    "NodeIdentity": "hivemind_bus_client.identity",
    "AsyncHiveMessageBusClient": "hivemind_bus_client.client.asyncio",
    "with_hivemind": "hivemind_bus_client.decorators",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
