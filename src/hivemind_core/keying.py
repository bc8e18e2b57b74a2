"""How many password/RSA handshakes the hub derives a key for: per link and per access key.

Every v1 HANDSHAKE that passes its cheap checks (envelope, fresh IV) costs the
hub a key derivation: a PBKDF2 of about 25 ms, or an RSA signature. Holding a
key, or a satellite's password, is enough to ask for thousands a second, each
on a new IV. :class:`HandshakeLimits` keeps two token buckets and is asked
before each derivation:

* per link (``rekey_rate``/``rekey_burst``): handshakes on one link, the
  opening included. The stock 0.4.4 client repeats its HANDSHAKE every 5 s
  until answered (0.2 a second), so the default, a burst of 4 and one more
  every 2 s, never stops it. Past it the link closes 1008: a link that
  re-keys that often is not a client we know.
* per access key (``key_handshake_rate``/``key_handshake_burst``): handshakes
  of one client record across all its links. The default, 4 a second after a
  burst of 64, lets a fleet of satellites sharing one key reconnect at once
  after a hub restart, and a satellite reconnecting every second forever.
  Past it the link closes 1013 (try again later): a flood on one key then
  costs at most 4 derivations a second, in the key workers.

Neither refusal counts against the address throttle: the address may be
shared with honest neighbours, and no password was wrong. Both are counted
(``rekeys_refused``, ``key_handshakes_refused``) and logged once per link or key.
A rate of 0 turns a bucket off.
"""

from __future__ import annotations

from hivemind_bus_client.exceptions import CloseCode, HandshakeThrottled
from hivemind_core.config import HubConfig
from hivemind_core.ratelimit import RateLimits

__all__ = ["KEY", "LINK", "HandshakeLimits"]

#: The RateLimits kinds.
LINK = "handshakes-per-link"
KEY = "handshakes-per-key"


class HandshakeLimits:
    """The two handshake buckets (see the module docstring).

    Args:
        rekey_rate, rekey_burst: handshakes a second on one link, after a burst.
        key_rate, key_burst: handshakes a second of one access key, after a burst.
    """

    def __init__(
        self, rekey_rate: float, rekey_burst: int, key_rate: float, key_burst: int
    ) -> None:
        self._limits = RateLimits({LINK: (rekey_rate, rekey_burst), KEY: (key_rate, key_burst)})

    @classmethod
    def from_config(cls, config: HubConfig) -> HandshakeLimits:
        """The limits of ``config`` (``rekey_rate``, ``rekey_burst``, ``key_handshake_*``)."""
        return cls(
            config.rekey_rate,
            config.rekey_burst,
            config.key_handshake_rate,
            config.key_handshake_burst,
        )

    def check(self, link: str, key: str, now: float) -> HandshakeThrottled | None:
        """Spend one handshake of ``link`` and of ``key`` at ``now``; the refusal, if any.

        The link's bucket is asked first, so a link refused for itself spends
        nothing of its key's.
        """
        if not self._limits.allow(LINK, link, now):
            return HandshakeThrottled("too many handshakes on this link", CloseCode.POLICY)
        if not self._limits.allow(KEY, key, now):
            return HandshakeThrottled(
                "too many handshakes for this key, try again later", CloseCode.TRY_AGAIN
            )
        return None

    def forget(self, link: str) -> None:
        """Drop the bucket of a link that ended (keys keep theirs)."""
        self._limits.forget(link)
