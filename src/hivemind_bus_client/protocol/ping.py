"""PING and PONG: the one payload format, the one PONG format, the PING rate limit.

A PING travels inside a PROPAGATE flood. Every node that sees the flood for
the first time answers with a PONG that carries the route the PING travelled,
and the PONG goes back hop by hop along the flood's spanning tree: each node
remembers which link the flood came from (:class:`PingRoutes`) and passes the
PONG to that link. A PONG therefore has to say which flood it answers:
``flood_id`` is in its payload *and* its metadata, and a node drops a PONG
whose flood it did not see.

Since one PING makes every node of the hive answer, a satellite may start
only a few PING floods a second (:class:`PingBucket`).

The router (:mod:`hivemind_bus_client.protocol.router`) is the only user on a
node, hub or client alike: a client runs a router whose only link is its hub
(``UPSTREAM``), so it answers PINGs with exactly this format.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from hivemind_bus_client.protocol.message import HiveMessage, HiveMessageType

__all__ = [
    "PingBucket",
    "PingRoutes",
    "ping_message",
    "ping_payload",
    "pong_flood_id",
    "pong_message",
]

T = HiveMessageType


def ping_payload(
    flood_id: str, peer: str, site_id: str | None, now: float, **fields: Any
) -> dict[str, Any]:
    """The payload of a PING started by node ``peer`` at ``now``.

    ``ping_id`` and ``flood_id`` are the flood's id; ``timestamp`` is the
    originator's time, echoed back by every PONG so the originator can
    compute round trips. ``fields`` (e.g. ``lang``) are added as they are.
    """
    return {
        "ping_id": flood_id,
        "flood_id": flood_id,
        "peer": peer,
        "site_id": site_id,
        "timestamp": now,
        **fields,
    }


def ping_message(flood_id: str, payload: dict[str, Any]) -> HiveMessage:
    """The PROPAGATE flood that carries a PING with ``payload``."""
    return HiveMessage(T.PROPAGATE, HiveMessage(T.PING, payload), metadata={"flood_id": flood_id})


def pong_message(
    ping: HiveMessage,
    *,
    flood_id: str,
    peer: str,
    site_id: str | None,
    public_key: str | None,
    route: list[dict[str, Any]],
    **fields: Any,
) -> HiveMessage:
    """The PONG node ``peer`` answers to ``ping``, which reached it along ``route``.

    Payload: ``flood_id``, ``ping_id`` (the PING's, or the flood id),
    ``peer``, ``site_id``, ``timestamp`` (the PING's, unchanged), ``hops``
    (the length of ``route``) and ``public_key``, plus any ``fields``.
    Metadata: ``flood_id``. The PONG's route starts as ``route``, so the
    originator sees the path (see :class:`~hivemind_bus_client.protocol.hive_map.HiveMapper`).
    """
    data = ping.payload if isinstance(ping.payload, dict) else {}
    payload = {
        "flood_id": flood_id,
        "ping_id": data.get("ping_id") or data.get("flood_id") or flood_id,
        "peer": peer,
        "site_id": site_id,
        "timestamp": data.get("timestamp"),
        "hops": len(route),
        "public_key": public_key,
        **fields,
    }
    return HiveMessage(
        T.PONG, payload, node=peer, route=list(route), metadata={"flood_id": flood_id}
    )


def pong_flood_id(pong: HiveMessage) -> str | None:
    """The flood a PONG answers (payload first, then metadata), or None."""
    payload = pong.payload if isinstance(pong.payload, dict) else {}
    flood = payload.get("flood_id") or pong.metadata.get("flood_id")
    return flood if isinstance(flood, str) and flood else None


@dataclass(slots=True)
class PingBucket:
    """A token bucket: ``rate`` PING floods a second after a burst of ``burst``.

    Starts full; :meth:`take` spends one token when there is one.
    """

    rate: float
    burst: int
    tokens: float | None = None
    stamp: float = 0.0

    def take(self, now: float) -> bool:
        """Spend a token at ``now``; False (and nothing spent) when the bucket is empty."""
        if self.rate <= 0:
            return True
        capacity = float(max(1, self.burst))
        tokens = capacity if self.tokens is None else self.tokens
        tokens = min(capacity, tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if tokens < 1.0:
            self.tokens = tokens
            return False
        self.tokens = tokens - 1.0
        return True


class PingRoutes:
    """Bounded memory of PING floods: flood id -> the link its PING came from.

    ``None`` as the parent means this node started the flood, so its PONGs
    are for this node. The oldest floods are forgotten first.
    """

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._parents: OrderedDict[str, str | None] = OrderedDict()

    def remember(self, flood_id: str, parent: str | None) -> None:
        """Note that flood ``flood_id`` came from link ``parent`` (None: from us)."""
        self._parents[flood_id] = parent
        if len(self._parents) > self.size:
            self._parents.popitem(last=False)

    def __contains__(self, flood_id: object) -> bool:
        return flood_id in self._parents

    def __len__(self) -> int:
        return len(self._parents)

    def parent(self, flood_id: str) -> str | None:
        """The link a known flood came from (None when this node started it)."""
        return self._parents[flood_id]
