"""Per-satellite token buckets: what one link may put into the agent, and PROPAGATE.

One satellite could otherwise push thousands of messages a second into the
agent's bus, or flood every other satellite with PROPAGATE. :class:`RateLimits`
keeps one bucket per link and kind; the node asks :meth:`RateLimits.allow`
before it injects (or asks the agent) and before a non-admin's PROPAGATE
reaches the router. A refusal is answered ``hive.policy.denied`` (code
``rate_limited``) and counted by the caller; it is logged at INFO once per
link and kind, not once per message.
"""

from __future__ import annotations

import logging

from hivemind_bus_client.protocol.ping import PingBucket

__all__ = ["AGENT", "PROPAGATE", "RateLimits"]

LOG = logging.getLogger(__name__)

#: Messages a satellite puts into the agent (inject and local asks).
AGENT = "agent"
#: PROPAGATE messages from a non-admin satellite.
PROPAGATE = "propagate"


class RateLimits:
    """Token buckets by ``(kind, peer)``; a rate of 0 means no limit for that kind."""

    def __init__(self, rates: dict[str, tuple[float, int]]) -> None:
        self._rates = dict(rates)
        self._buckets: dict[tuple[str, str], PingBucket] = {}
        self._logged: set[tuple[str, str]] = set()

    def allow(self, kind: str, peer: str, now: float) -> bool:
        """Spend one token of ``peer``'s ``kind`` bucket at ``now``; False when empty."""
        rate, burst = self._rates.get(kind, (0.0, 0))
        if rate <= 0:
            return True
        key = (kind, peer)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = PingBucket(rate, burst, stamp=now)
        if bucket.take(now):
            return True
        if key not in self._logged:
            self._logged.add(key)
            LOG.info("rate limit (%s, %g/s, burst %d) reached by %s", kind, rate, burst, peer)
        return False

    def forget(self, peer: str) -> None:
        """Drop the buckets of a link that left."""
        for kind in self._rates:
            self._buckets.pop((kind, peer), None)
            self._logged.discard((kind, peer))
