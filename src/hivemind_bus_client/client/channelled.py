"""What the HTTP and MQTT clients share: :class:`ChannelledClient`.

Both are the sync client with a channel of their own kind under its engine.
They take the websocket client's arguments (positional or not), with their own
default port and useragent, and open their channel the same way: build it,
``open`` it, and close it again when opening fails.
"""

from __future__ import annotations

import inspect
from typing import Any, Protocol

from hivemind_bus_client.client.config import has_port
from hivemind_bus_client.client.core import ClientCore
from hivemind_bus_client.client.engine import ChannelFactory
from hivemind_bus_client.client.node import ClientNode
from hivemind_bus_client.client.sync import HiveMessageBusClient
from hivemind_bus_client.identity import NodeIdentity
from hivemind_bus_client.transport.channel import Channel

__all__ = ["ChannelledClient", "OpenableChannel", "client_arguments"]

#: Arguments of the websocket client, which the HTTP and MQTT clients take too.
CLIENT_SIGNATURE = inspect.signature(ClientCore)


class OpenableChannel(Channel, Protocol):
    """A :class:`~hivemind_bus_client.transport.channel.Channel` that is built
    first and connected by :meth:`open`."""

    async def open(self) -> None: ...


def client_arguments(
    args: tuple[Any, ...], kwargs: dict[str, Any], *, default_port: int, default_useragent: str
) -> tuple[dict[str, Any], str]:
    """The websocket client's arguments bound by name, with this client's defaults.

    The identity is loaded when not given; ``port`` defaults to ``default_port``
    unless the host (given, or the identity file's ``default_master``) names one;
    an empty useragent becomes ``default_useragent``.

    Returns:
        The arguments by name, and the host as written (scheme and all).
    """
    call = CLIENT_SIGNATURE.bind_partial(*args, **kwargs).arguments
    ident = call.get("identity") or NodeIdentity()
    call["identity"] = ident
    raw_host = call.get("host") or ident.default_master or ""
    if call.get("port") is None and not has_port(raw_host):
        call["port"] = default_port
    call["useragent"] = call.get("useragent") or default_useragent
    return call, raw_host


class ChannelledClient(HiveMessageBusClient):
    """The sync client over the channel :meth:`_new_channel` builds (not a websocket)."""

    def _make_node(self, channel_factory: ChannelFactory | None = None) -> ClientNode:
        return super()._make_node(channel_factory or self._open_channel)

    def _new_channel(self) -> OpenableChannel:
        """A fresh, unopened channel for one link attempt."""
        raise NotImplementedError

    async def _open_channel(self) -> Channel:
        channel = self._new_channel()
        try:
            await channel.open()
        except BaseException:
            await channel.close()
            raise
        return channel
