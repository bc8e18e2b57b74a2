"""PROPAGATE fan-out cost: time and messages per node, as the hive grows.

Run: ``python benchmarks/mesh.py``

Two measurements:

1. **Full stack**: the 200-node tree of the mesh test harness (real
   ``Connection`` objects after a real pre-shared-key handshake, link
   encryption, the router on every node, in-memory links with 1 ms latency).
2. **Router simulation**: trees of 200 to 2,000 nodes (fan-out 4) plus extra
   random cross links (10% of the node count), every node a :class:`Router`;
   each forwarded message is re-encoded and decoded (JSON) the way a link
   would. Cross links make the number of distinct paths between two nodes
   explode, yet each node forwards a flood at most once to each neighbour,
   so the cost follows nodes + links, not paths.

The table shows, per mesh: nodes, links, messages sent in total and per node,
duplicates stopped, wall time of one flood, and microseconds per node.
"""

from __future__ import annotations

import random
import sys
import time
from collections import deque
from pathlib import Path

from ovos_bus_client.message import Message

from hivemind_bus_client.message import HiveMessage, HiveMessageType
from hivemind_bus_client.router import Deliver, Link, LinkKind, Router, Send

T = HiveMessageType


def flood_message() -> HiveMessage:
    return HiveMessage(T.PROPAGATE, HiveMessage(T.BUS, Message("announce", {"n": 1}, {})))


def build_routers(
    n: int, fanout: int = 4, cross: float = 0.1, seed: int = 7
) -> tuple[dict[str, Router], int]:
    """A tree of ``n`` routers plus ``cross * n`` random cross links; returns (routers, links)."""
    rnd = random.Random(seed)
    routers = {
        f"t{i}": Router(f"t{i}", require_trusted_propagate=False, hop_limit=64) for i in range(n)
    }
    links = 0

    def join(lower: str, upper: str, kind: LinkKind) -> None:
        nonlocal links
        routers[upper].add_link(Link(lower, LinkKind.SATELLITE))
        routers[lower].add_link(Link(upper, kind))
        links += 1

    for i in range(1, n):
        join(f"t{i}", f"t{(i - 1) // fanout}", LinkKind.UPSTREAM)
    extra = 0
    while extra < int(cross * n):
        a, b = rnd.sample(range(n), 2)
        la, lb = f"t{a}", f"t{b}"
        if lb in routers[la].links:
            continue
        join(la, lb, LinkKind.PEER)
        extra += 1
    return routers, links


def simulate_flood(routers: dict[str, Router], origin: str) -> dict[str, float]:
    """One PROPAGATE from ``origin``, breadth first; every hop re-encodes the message."""
    t0 = time.perf_counter()
    queue: deque[tuple[str, str, str]] = deque()
    sent = 0
    delivered = 0
    for a in routers[origin].originate(flood_message()):
        if isinstance(a, Send):
            queue.append((a.peer, origin, a.message.serialize()))
            sent += 1
    while queue:
        node, came_from, frame = queue.popleft()
        msg = HiveMessage.deserialize(frame)
        for a in routers[node].handle(came_from, msg):
            if isinstance(a, Send):
                queue.append((a.peer, node, a.message.serialize()))
                sent += 1
            elif isinstance(a, Deliver):
                delivered += 1
    elapsed = time.perf_counter() - t0
    dups = sum(r.counters.get("duplicate", 0) + r.counters.get("loop", 0) for r in routers.values())
    return {"sent": sent, "delivered": delivered, "dups": dups, "seconds": elapsed}


def full_stack_tree(n: int = 200) -> dict[str, float]:
    """The harness's n-node tree: real connections, encrypted links, fake clock."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, for tests/
    from tests.mesh.mesh import tree

    mesh = tree(n, require_trusted_propagate=False)
    t0 = time.perf_counter()
    mesh.originate("t0", flood_message())
    mesh.run()
    elapsed = time.perf_counter() - t0
    sent = sum(node.sent for node in mesh.nodes.values())
    delivered = sum(len(node.delivered_bus("announce")) for node in mesh.nodes.values())
    assert delivered == n - 1, delivered
    return {
        "sent": sent,
        "delivered": delivered,
        "dups": 0,
        "seconds": elapsed,
        "links": len(mesh.wires),
    }


def main() -> None:
    rows = []
    full = full_stack_tree(200)
    rows.append(("full stack tree", 200, full["links"], full))
    for n in (200, 500, 1000, 2000):
        routers, links = build_routers(n)
        stats = simulate_flood(routers, "t0")
        assert stats["delivered"] == n - 1, (n, stats["delivered"])
        rows.append(("routers + 10% cross", n, links, stats))
    header = f"{'mesh':<22}{'nodes':>7}{'links':>7}{'msgs':>8}{'msgs/node':>11}{'dups':>7}{'time ms':>10}{'us/node':>10}"
    print(header)
    print("-" * len(header))
    for label, n, links, s in rows:
        print(
            f"{label:<22}{n:>7}{links:>7}{int(s['sent']):>8}{s['sent'] / n:>11.2f}"
            f"{int(s['dups']):>7}{s['seconds'] * 1000:>10.1f}{s['seconds'] * 1e6 / n:>10.1f}"
        )
    print(
        "\nEvery node delivered the flood exactly once. Messages = links in the tree direction"
        "\nplus at most two per cross link (one each way, the late copy dropped as a duplicate),"
        "\nso msgs/node stays flat and time per node stays flat as the mesh grows."
    )


if __name__ == "__main__":
    main()
