"""The HiveMind client: a node of the hive whose one link is its hub.

* :mod:`.config` (settings), :mod:`.handlers` (who gets which message),
  :mod:`.shaping` (what leaves), :mod:`.engine` (one link over any channel,
  reconnects), :mod:`.node` (the router with the hub as its upstream link),
  :mod:`.core` (every request, written once);
* the faces: :mod:`.sync` (:class:`HiveMessageBusClient`), :mod:`.asyncio`
  (:class:`AsyncHiveMessageBusClient`), :mod:`.http` (HTTP polling) and
  :mod:`.mqtt` (through a broker).

May import :mod:`hivemind_bus_client.protocol`, :mod:`hivemind_bus_client.transport`
and :mod:`hivemind_bus_client.identity`. ``hivemind_bus_client.client`` keeps
exporting what it always did.
"""

from hivemind_bus_client.client.core import ClientCore
from hivemind_bus_client.client.shaping import BinaryDataCallbacks
from hivemind_bus_client.client.sync import HiveMessageBusClient

__all__ = ["BinaryDataCallbacks", "ClientCore", "HiveMessageBusClient"]
