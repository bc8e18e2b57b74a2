"""The state a :class:`~hivemind_bus_client.protocol.router.Router` works on.

Configuration, the link registry, counters, and the two route helpers every
handler uses (stamping a hop, choosing a flood's next links). The handlers
live in ``core`` and ``requests``; nothing here makes a routing decision.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hivemind_bus_client.protocol import crypto
from hivemind_bus_client.protocol.intercom import TrustStore
from hivemind_bus_client.protocol.message import HiveMessage
from hivemind_bus_client.protocol.ping import PingRoutes
from hivemind_bus_client.protocol.router.actions import Action, Link, LinkKind
from hivemind_bus_client.protocol.router.bindings import RequestTable
from hivemind_bus_client.protocol.router.floods import FloodCache, stamp, visited

__all__ = ["RouterState"]


class RouterState:
    """Configuration, links and counters of one node's router.

    Args:
        node_id: this node's id, written into route hops.
        site_id: this node's site (BROADCAST ``target_site_id`` matching).
        hop_limit: longest route a transport message may have.
        flood_cache_size: flood ids (PROPAGATE, BROADCAST, CASCADE) remembered
            for duplicate suppression.
        max_violations: refused originations tolerated before a link is closed (4003).
        private_key: this node's RSA key, to open INTERCOM messages meant for it.
        trusted_keys: ``alias -> PEM`` (or PEMs) of senders whose INTERCOM and
            PROPAGATE(BUS) this node accepts.
        query_timeout: seconds the local agent has to answer a QUERY or CASCADE.
        query_ttl: seconds a QUERY forwarded upstream is remembered; then the
            node answers ``hive.query.timeout`` itself.
        cascade_ttl: seconds a CASCADE binding is kept to route answers back.
        max_pending: QUERY + CASCADE bindings kept at once (over it, new
            requests are dropped and counted).
        max_pending_per_link: of those, bindings of requests from one link
            (over it, that link's new requests are dropped and counted
            ``pending_quota``, so one satellite cannot fill the table).
        ping_cache_size: PING floods whose PONG route back is remembered.
        require_trusted_propagate: inject the inner BUS of a PROPAGATE only
            from trusted links; False injects every one.
        ping_rate: PING floods per second a satellite link may start (each
            one makes every node of the hive answer, so an unbounded rate is
            an amplifier); ``ping_burst`` more are allowed at once. 0 = no limit.
        pong_fields: extra payload fields of every PONG this node answers
            (a client adds its ``session_id``, for instance).
    """

    def __init__(
        self,
        node_id: str,
        site_id: str | None = None,
        *,
        hop_limit: int = 16,
        flood_cache_size: int = 4096,
        max_violations: int = 3,
        private_key: crypto.PrivateKey | None = None,
        trusted_keys: Any = (),
        query_timeout: float = 8.0,
        query_ttl: float = 300.0,
        cascade_ttl: float = 300.0,
        max_pending: int = 1024,
        ping_cache_size: int = 4096,
        require_trusted_propagate: bool = True,
        ping_rate: float = 1.0,
        ping_burst: int = 5,
        pong_fields: dict[str, Any] | None = None,
        max_pending_per_link: int = 64,
    ) -> None:
        self.node_id = node_id
        self.site_id = site_id
        self.hop_limit = hop_limit
        self.max_violations = max_violations
        self.links: dict[str, Link] = {}
        self.floods = FloodCache(flood_cache_size)
        self.counters: dict[str, int] = {}
        self.private_key = private_key
        self.public_key = crypto.public_key_pem(private_key) if private_key else None
        self.trust = (
            trusted_keys if isinstance(trusted_keys, TrustStore) else TrustStore(trusted_keys)
        )
        self.query_timeout = query_timeout
        self.query_ttl = query_ttl
        self.cascade_ttl = cascade_ttl
        self.max_pending = max_pending
        self.max_pending_per_link = max_pending_per_link
        self.ping_cache_size = ping_cache_size
        self.require_trusted_propagate = require_trusted_propagate
        self.ping_rate = ping_rate
        self.ping_burst = ping_burst
        self.pong_fields = dict(pong_fields or {})
        self.requests = RequestTable()
        #: PING flood id -> link its PING came from (None: we sent it).
        self.pings = PingRoutes(ping_cache_size)
        #: Time of the call being handled (handlers read it; set by each entry point).
        self._now = 0.0

    # -- links ---------------------------------------------------------------

    def add_link(self, link: Link) -> None:
        """Register a link (replacing one with the same peer)."""
        self.links[link.peer] = link

    def remove_link(self, peer: str) -> list[Action]:
        """Forget a link; returns the answers this owes to others (execute them).

        QUERYs that came from ``peer`` are forgotten; QUERYs forwarded to it
        (it was the master) are answered ``hive.query.timeout`` now, since no
        answer can come back. CASCADE bindings towards ``peer`` are dropped.
        """
        link = self.links.pop(peer, None)
        return [] if link is None else self._forget_link(link)

    @property
    def upstream(self) -> Link | None:
        """The master link, if connected."""
        for link in self.links.values():
            if link.kind is LinkKind.UPSTREAM:
                return link
        return None

    def satellites(self) -> Iterable[Link]:
        """Links below this node."""
        return (lk for lk in self.links.values() if lk.kind is LinkKind.SATELLITE)

    def set_trusted_keys(self, keys: Any) -> None:
        """Replace the trusted keys (``alias -> PEM`` or PEMs)."""
        self.trust = keys if isinstance(keys, TrustStore) else TrustStore(keys)

    def is_trusted(self, link: Link) -> bool:
        """Whether PROPAGATE(BUS) from this link may be injected here."""
        return link.trusted or (link.pubkey is not None and link.pubkey in self.trust)

    def _count(self, what: str) -> None:
        self.counters[what] = self.counters.get(what, 0) + 1

    def _forget_link(self, link: Link) -> list[Action]:
        """Forget what refers to a removed link; request routing extends this."""
        return []

    def _stamp(self, msg: HiveMessage, targets: list[str]) -> bool:
        """Append this node's hop; False when the message looped or is over the hop limit."""
        return stamp(msg, self.node_id, targets, self.hop_limit)

    def _flood_targets(self, link: Link | None, msg: HiveMessage) -> list[Link]:
        seen = visited(msg)
        return [
            lk
            for lk in self.links.values()
            if (link is None or lk.peer != link.peer) and lk.ident not in seen
        ]
