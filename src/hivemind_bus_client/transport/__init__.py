"""Asyncio I/O for HiveMind links: channels, the one driver loop, error translation, TLS.

May import :mod:`hivemind_bus_client.protocol`, :mod:`hivemind_bus_client.exceptions`
and I/O libraries (websockets, aiomqtt, http.client); never the client or the hub.

* :mod:`.channel`: the :class:`Channel` contract, :class:`ChannelClosed`,
  :class:`BoundedBacklog`, :class:`QueueChannel`;
* :mod:`.driver`: :class:`LinkDriver`, the loop between a channel and a Connection;
* :mod:`.errors`: :func:`map_errors` and :func:`close_error`;
* :mod:`.tls`: :func:`client_context`;
* :mod:`.websocket`, :mod:`.http`, :mod:`.mqtt`: one channel per transport.
"""

from __future__ import annotations

from hivemind_bus_client.transport.channel import (
    BoundedBacklog,
    Channel,
    ChannelClosed,
    QueueChannel,
)
from hivemind_bus_client.transport.driver import LinkDriver

__all__ = ["BoundedBacklog", "Channel", "ChannelClosed", "LinkDriver", "QueueChannel"]
