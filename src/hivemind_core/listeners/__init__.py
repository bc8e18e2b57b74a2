"""The hub's listeners: each turns its transport's connections into Channels for satellite links.

* :mod:`.websocket`: ``ws://`` / ``wss://`` satellites (the hub's main listener);
* :mod:`.http`: HTTP polling satellites (served by ``aiohttp``);
* :mod:`.mqtt`: satellites that reach the hub through an MQTT broker.

They share the node, the admission step and the upkeep through :class:`Hub`,
and never import each other.
"""

from __future__ import annotations

import ssl
from typing import Protocol

from hivemind_core.admission import Admission
from hivemind_core.node import HubNode
from hivemind_core.upkeep import Upkeep

__all__ = ["Hub"]


class Hub(Protocol):
    """What a listener needs of the hub it serves."""

    @property
    def node(self) -> HubNode:
        """The node: router, sinks, sessions, agent."""

    @property
    def admission(self) -> Admission:
        """The one admission step (authorization, throttle)."""

    @property
    def upkeep(self) -> Upkeep:
        """Permission reload and the idle sweep."""

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        """The hub's TLS context, the default of listeners that serve TLS."""
