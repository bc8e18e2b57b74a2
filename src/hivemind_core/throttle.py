"""Failed-authentication throttling per source address (sans-I/O: time comes in as ``now``).

Each failed login (unknown or revoked key, malformed ``authorization``, wrong
password) is recorded against the client's IP address. An address with
``budget`` failures inside the last ``window`` seconds is refused at the
websocket upgrade (HTTP 429) until its oldest failure ages out, so guessing
keys costs real time while a satellite with a typo is not locked out forever.
Memory is bounded: at most ``max_addresses`` addresses are tracked, the least
recently failing are forgotten first.
"""

from __future__ import annotations

from collections import OrderedDict, deque

__all__ = ["AuthThrottle"]


class AuthThrottle:
    """Sliding-window failure counter per address.

    Args:
        budget: failures allowed per address within ``window``; ``0`` disables throttling.
        window: length of the sliding window, seconds.
        max_addresses: addresses remembered at most.
    """

    def __init__(self, budget: int = 10, window: float = 60.0, max_addresses: int = 10_000) -> None:
        self.budget = budget
        self.window = window
        self.max_addresses = max_addresses
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        #: Connection attempts refused because their address was over budget.
        self.refused = 0

    def _recent(self, address: str, now: float) -> deque[float] | None:
        times = self._failures.get(address)
        if times is None:
            return None
        horizon = now - self.window
        while times and times[0] <= horizon:
            times.popleft()
        if not times:
            del self._failures[address]
            return None
        return times

    def blocked(self, address: str, now: float) -> bool:
        """True when ``address`` has used up its budget (counts the refusal)."""
        if self.budget <= 0:
            return False
        times = self._recent(address, now)
        if times is not None and len(times) >= self.budget:
            self.refused += 1
            return True
        return False

    def failure(self, address: str, now: float) -> None:
        """Record one failed authentication from ``address``."""
        if self.budget <= 0:
            return
        times = self._recent(address, now)
        if times is None:
            times = self._failures[address] = deque(maxlen=self.budget)
        else:
            self._failures.move_to_end(address)
        times.append(now)
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)

    def retry_after(self, address: str, now: float) -> float:
        """Seconds until ``address`` may try again (0 when not blocked)."""
        times = self._recent(address, now)
        if times is None or len(times) < self.budget:
            return 0.0
        return max(0.0, times[0] + self.window - now)

    def __len__(self) -> int:
        return len(self._failures)
