"""Live topology of a hive, built from the PONGs of a PING flood.

A node that wants a map sends a PING inside a PROPAGATE (``Router.ping``);
every node the flood reaches answers with a PONG carrying the route the PING
travelled to reach it (:mod:`~hivemind_bus_client.protocol.ping`). :class:`HiveMapper` turns
those PONGs into nodes and parent -> child edges and prints them as a tree with
each node's hop count and round-trip time.

Round-trip time: the PING carries the originator's clock (``timestamp``) and
each PONG echoes it, so ``received_at - timestamp`` is measured on a single
clock, the originator's: a true round trip, not a difference between two
machines' clocks.

Example::

    mapper = HiveMapper()
    for pong in pongs:                      # Deliver(PONG) actions at the originator
        mapper.on_pong(pong, received_at=now)
    print(mapper.to_ascii())
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from typing import Any

from hivemind_bus_client.protocol.message import HiveMessage, HiveMessageType

__all__ = ["HiveMapper", "NodeInfo"]


@dataclass
class NodeInfo:
    """What the map knows about one node.

    ``hops`` is the number of links between the map's root and the node;
    ``rtt`` the round trip in seconds (None when the PING had no timestamp);
    ``parent`` the node the PING reached it from.
    """

    peer: str
    site_id: str | None = None
    hops: int = 0
    rtt: float | None = None
    parent: str | None = None
    public_key: str | None = None
    timestamp: float | None = None
    received_at: float | None = None
    route: list[str] = field(default_factory=list)


class HiveMapper:
    """Collects PONGs into a topology.

    Args:
        root_peer: the node the map hangs from (default: the first hop of the
            first route seen, i.e. the PING's originator).
        cache_size: (flood id, peer) pairs remembered to ignore repeated PONGs.
    """

    def __init__(self, root_peer: str | None = None, cache_size: int = 1000) -> None:
        self.root_peer = root_peer
        self.cache_size = cache_size
        self.nodes: dict[str, NodeInfo] = {}
        self.edges: set[tuple[str, str]] = set()
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()

    def __len__(self) -> int:
        return len(self.nodes)

    def __contains__(self, peer: object) -> bool:
        return peer in self.nodes

    def reset(self) -> None:
        """Forget everything (before a fresh PING)."""
        self.nodes.clear()
        self.edges.clear()
        self._seen.clear()

    def check_flood_id(self, flood_id: str, peer: str = "") -> bool:
        """True the first time ``(flood_id, peer)`` is seen (and remember it)."""
        key = (flood_id, peer)
        if key in self._seen:
            return False
        self._seen[key] = None
        if len(self._seen) > self.cache_size:
            self._seen.popitem(last=False)
        return True

    def on_pong(self, message: HiveMessage, received_at: float) -> NodeInfo | None:
        """Record one PONG (or a PING, whose route is read the same way).

        Returns the node's info, or None for a repeat or an unusable message.
        """
        if message.msg_type not in (HiveMessageType.PONG, HiveMessageType.PING):
            return None
        payload = message.payload if isinstance(message.payload, dict) else {}
        peer = payload.get("peer")
        if not isinstance(peer, str) or not peer:
            return None
        flood = payload.get("flood_id") or payload.get("ping_id") or ""
        if not self.check_flood_id(str(flood), peer):
            return None
        hops = [
            h["source"]
            for h in message.route
            if isinstance(h, dict) and isinstance(h.get("source"), str)
        ]
        if self.root_peer is None and hops:
            self.root_peer = hops[0]
        if self.root_peer is not None and self.root_peer not in self.nodes:
            self.nodes[self.root_peer] = NodeInfo(self.root_peer, rtt=0.0)
        path = [*hops, peer]
        for parent, child in pairwise(path):
            if parent != child:
                self.edges.add((parent, child))
        stamp = payload.get("timestamp")
        rtt = received_at - stamp if isinstance(stamp, (int, float)) else None
        info = NodeInfo(
            peer=peer,
            site_id=payload.get("site_id"),
            hops=len(hops),
            rtt=rtt,
            parent=hops[-1] if hops else None,
            public_key=payload.get("public_key"),
            timestamp=stamp if isinstance(stamp, (int, float)) else None,
            received_at=received_at,
            route=hops,
        )
        self.nodes[peer] = info
        return info

    #: The reference's name for the same entry point.
    on_ping = on_pong

    def children(self, peer: str) -> list[str]:
        """Nodes whose PING came through ``peer``, sorted."""
        return sorted(n.peer for n in self.nodes.values() if n.parent == peer and n.peer != peer)

    def to_dict(self) -> dict[str, Any]:
        """``{"root", "nodes": [...], "edges": [{"source", "target"}]}``."""
        return {
            "root": self.root_peer,
            "nodes": [asdict(n) for n in sorted(self.nodes.values(), key=lambda n: n.peer)],
            "edges": [{"source": a, "target": b} for a, b in sorted(self.edges)],
        }

    def to_json(self) -> str:
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), indent=2)

    def to_ascii(self, root_peer: str | None = None) -> str:
        """The map as a tree, one node per line with hop count and round trip."""
        root = root_peer or self.root_peer
        if root is None:
            return "(empty hive map)"
        lines = [root]
        seen = {root}

        def walk(peer: str, prefix: str) -> None:
            kids = [k for k in self.children(peer) if k not in seen]
            for i, kid in enumerate(kids):
                seen.add(kid)
                last = i == len(kids) - 1
                lines.append(f"{prefix}{'└── ' if last else '├── '}{self._label(kid)}")
                walk(kid, prefix + ("    " if last else "│   "))

        walk(root, "")
        orphans = sorted(set(self.nodes) - seen)
        for peer in orphans:  # answered, but their relay did not (yet)
            lines.append(f"? {self._label(peer)}")
        return "\n".join(lines)

    def _label(self, peer: str) -> str:
        n = self.nodes[peer]
        hop = "hop" if n.hops == 1 else "hops"
        rtt = f"{n.rtt * 1000:.1f} ms" if n.rtt is not None else "rtt ?"
        site = f" [{n.site_id}]" if n.site_id else ""
        return f"{peer}{site} ({n.hops} {hop}, {rtt})"
