"""How long the hub's event loop was blocked: a ticker that measures its own lateness.

A key derivation, a database call or a huge frame run on the loop stops every
link for as long as it runs. With ``loop_watch`` set (seconds between ticks),
:func:`watch_loop` sleeps that long over and over; how late each wake-up is,
is how long the loop could not run anything. The worst figure is kept in
the node's stats (``loop_lag_max_ms``); each stall over ``loop_stall_ms`` is
counted (``loop_stalls``) and logged (a blocked loop wakes the watch at most
once per stall, so the log grows no faster than the stalls). Off by default:
a short interval costs wake-ups on an idle hub.
"""

from __future__ import annotations

import asyncio
import logging

from hivemind_core.node import HubNode

__all__ = ["watch_loop"]

LOG = logging.getLogger(__name__)


async def watch_loop(node: HubNode, interval: float, stall_ms: float) -> None:
    """Measure loop lateness every ``interval`` seconds until cancelled (see the module docstring)."""
    loop = asyncio.get_running_loop()
    LOG.info(
        "watching the event loop every %g ms (stalls over %g ms logged)", interval * 1e3, stall_ms
    )
    worst = 0.0
    while True:
        due = loop.time() + interval
        await asyncio.sleep(interval)
        now = loop.time()
        late_ms = max(0.0, (now - due) * 1e3)
        if late_ms > worst:
            worst = late_ms
            node.stats["loop_lag_max_ms"] = int(worst)
        if late_ms > stall_ms:
            node.count("loop_stalls")
            LOG.warning("event loop stalled %.0f ms (worst %.0f ms)", late_ms, worst)
