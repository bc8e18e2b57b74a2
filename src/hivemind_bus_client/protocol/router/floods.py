"""Loop and duplicate protection: flood ids, route stamps, the visited set.

Every transport hop appends ``{"source": node_id, "targets": [...]}`` to the
message's ``route``. A node never forwards a message whose route already
holds it, never sends a flood to a neighbour on its route, remembers flood
ids in a bounded :class:`FloodCache` (so a mesh with cycles delivers each
flood once per node), and drops any transport message whose route is
``hop_limit`` long.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from typing import Any

from hivemind_bus_client.protocol.message import HiveMessage, HiveMessageType

__all__ = [
    "WRAPPERS",
    "FloodCache",
    "bus_type",
    "flood_id_of",
    "new_flood_id",
    "stamp",
    "visited",
]

T = HiveMessageType

#: Transport types whose payload is another HiveMessage.
WRAPPERS = frozenset({T.BROADCAST, T.PROPAGATE, T.ESCALATE, T.QUERY, T.CASCADE})


class FloodCache:
    """Bounded memory of flood ids already handled (oldest forgotten first)."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._seen: OrderedDict[str, None] = OrderedDict()

    def check_and_add(self, flood_id: str) -> bool:
        """True when ``flood_id`` is new (and remember it)."""
        if flood_id in self._seen:
            return False
        self._seen[flood_id] = None
        if len(self._seen) > self.size:
            self._seen.popitem(last=False)
        return True

    def __contains__(self, flood_id: object) -> bool:
        return flood_id in self._seen

    def __len__(self) -> int:
        return len(self._seen)


def bus_type(message: HiveMessage) -> str | None:
    """The OVOS message type a BUS/SHARED_BUS message carries (innermost for wrappers)."""
    m = message
    for _ in range(32):
        if m.msg_type in (T.BUS, T.SHARED_BUS):
            p = m.raw_payload
            return p.get("type") if isinstance(p, dict) else p.msg_type
        inner = m.payload if m.msg_type in WRAPPERS else None
        if not isinstance(inner, HiveMessage):
            return None
        m = inner
    return None


def new_flood_id() -> str:
    """A fresh flood id (32 hex digits)."""
    return uuid.uuid4().hex


def flood_id_of(msg: HiveMessage) -> str:
    """The flood id of a flooding message, assigned (in its metadata) when missing."""
    flood = msg.metadata.get("flood_id")
    if not isinstance(flood, str) or not flood:
        flood = msg.metadata["flood_id"] = new_flood_id()
    return flood


def visited(msg: HiveMessage) -> set[Any]:
    """Node ids already on a message's route."""
    return {hop.get("source") for hop in msg.route if isinstance(hop, dict)}


def stamp(msg: HiveMessage, node_id: str, targets: list[str], hop_limit: int) -> bool:
    """Append ``node_id``'s hop to the route; False when it looped or is over ``hop_limit``."""
    route = msg.route
    for hop in route:
        if isinstance(hop, dict) and hop.get("source") == node_id:
            return False
    if len(route) >= hop_limit:
        return False
    route.append({"source": node_id, "targets": targets})
    return True
