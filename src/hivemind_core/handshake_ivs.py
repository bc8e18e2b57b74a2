"""Password-handshake IVs already used, per access key: replays are refused cheaply.

The first frame of a password handshake is a static proof of the password: a
captured copy replayed without the password would cost the hub a PBKDF2 key
derivation each time. The hub remembers the last ``per_key`` IVs it accepted
for each key and refuses a repeat before deriving anything. It also counts the
successful handshakes of each client.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

__all__ = ["HandshakeIVs"]


class HandshakeIVs:
    """Bounded memory of handshake IVs by client id.

    Args:
        per_key: IVs remembered per client (the oldest are forgotten first).
    """

    def __init__(self, per_key: int = 4096) -> None:
        self.per_key = max(1, per_key)
        self._seen: dict[int, OrderedDict[bytes, None]] = {}
        #: Successful handshakes by client id.
        self.completed: dict[int, int] = {}

    def checker(self, client_id: int) -> Callable[[bytes], bool]:
        """``fresh(iv)`` for one client's links: True (and remembered) for a new IV."""

        def fresh(iv: bytes) -> bool:
            seen = self._seen.setdefault(client_id, OrderedDict())
            if iv in seen:
                return False
            seen[iv] = None
            if len(seen) > self.per_key:
                seen.popitem(last=False)
            return True

        return fresh

    def keyed(self, client_id: int) -> None:
        """One more successful handshake of ``client_id``."""
        self.completed[client_id] = self.completed.get(client_id, 0) + 1
