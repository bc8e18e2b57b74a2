"""The hub without sockets: router, sessions, agent and the one action executor.

Theory of operation
-------------------
A :class:`HubNode` owns the :class:`~hivemind_bus_client.protocol.router.Router`
and everything that acts on its decisions. Links (satellites on any transport,
the upstream link to a master) are known to it only as :class:`Sink` objects
registered under their peer name in :attr:`HubNode.sinks`; the node writes to
them and may close them, nothing more. Listeners and the upstream link live in
other modules and import this one, never the reverse.

The path of a message:

1. a link hands what its connection received to :meth:`HubNode.route`;
2. the router answers with actions, which :meth:`HubNode.execute` carries out
   (the ONE place every action type is dispatched);
3. a ``Deliver`` of a BUS message reaches the agent only through
   :meth:`HubNode.admit`, the one admission step: a satellite's message gets
   its own session stamped in (and a non-admin's ``destination`` is kept
   from naming other satellites), an answer from the master for one of our
   satellites is sent down instead of injected;
4. agent replies come back through :meth:`HubNode.agent_reply` and go to the
   satellites named in ``context.destination`` only, through the router so
   each link's outbound ``message_blacklist`` applies.

Nothing a peer sends can raise out of :meth:`execute`: every exception is
caught, logged and counted in :attr:`HubNode.stats`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

from hivemind_bus_client.protocol import crypto
from hivemind_bus_client.protocol.connection import Connection
from hivemind_bus_client.protocol.framing import encode_once
from hivemind_bus_client.protocol.message import HiveMessage, HiveMessageType
from hivemind_bus_client.protocol.router import (
    AskLocal,
    Deliver,
    Deny,
    Drop,
    Link,
    LinkKind,
    Permissions,
    Router,
    Send,
)
from hivemind_core.agents.base import Agent
from hivemind_core.binary import BinaryHandler, LoggingBinaryHandler
from hivemind_core.config import HubConfig
from hivemind_core.delivery import Delivery
from hivemind_core.handshake_ivs import HandshakeIVs
from hivemind_core.hubconn import hub_connection
from hivemind_core.keying import HandshakeLimits
from hivemind_core.keywork import KeyWork
from hivemind_core.last_seen import LastSeenWriter
from hivemind_core.noise_keys import NoiseHub, create_noise_key
from hivemind_core.ratelimit import AGENT, PROPAGATE, RateLimits
from hivemind_core.session import Concealer, LinkSession, PeerRegistry, peer_name
from hivemind_core.sinks import Sink, UpstreamSink
from hivemind_core.trust import hub_trusted_keys

__all__ = ["HubNode", "Sink", "UpstreamSink", "hub_trusted_keys"]

LOG = logging.getLogger(__name__)

T = HiveMessageType


class HubNode(Delivery):
    """The hub's runtime: router, sinks, sessions, agent glue, action executor.

    Args:
        config: limits and crypto settings.
        database: the client database (``get_client_by_api_key``, ``list_clients``,
            ``revision``, optionally ``touch``).
        agent: what answers satellites.
        binary_handler: where BINARY messages go (default: log and drop).
        private_key: the hub's RSA key (HELLO pubkey, RSA handshake); a fresh one
            when omitted.
        node_id: this hub's id in HELLO and route hops (default: derived from the key).
        site_id: this hub's own site (BROADCAST targeting).
        router: a ready router (tests, simulations); default: one built from ``config``.
        clock: the time base of the router and the connections (default: the
            running loop's clock); with a clock of its own the node arms no
            loop timer, its owner drives ``router.handle_timer``.
        noise_key: the hub's raw X25519 static key for protocol v3 (a fresh one
            when omitted); see :mod:`hivemind_core.noise_keys`.
    """

    def __init__(
        self,
        config: HubConfig,
        database: Any,
        agent: Agent,
        binary_handler: BinaryHandler | None = None,
        *,
        private_key: crypto.PrivateKey | None = None,
        node_id: str | None = None,
        site_id: str | None = None,
        router: Router | None = None,
        clock: Callable[[], float] | None = None,
        noise_key: bytes | None = None,
    ) -> None:
        self.config = config
        self.db = database
        self.agent = agent
        self.binary_handler = binary_handler or LoggingBinaryHandler()
        self.private_key = private_key or crypto.create_private_key()
        pub = crypto.public_key_pem(self.private_key)
        if router is not None:
            node_id = node_id or router.node_id
        self.node_id = node_id or "hivemind-core::" + hashlib.sha256(pub.encode()).hexdigest()[:16]
        self.router = router or Router(
            self.node_id,
            site_id,
            hop_limit=config.hop_limit,
            flood_cache_size=config.flood_cache_size,
            max_violations=config.max_violations,
            private_key=self.private_key,
            trusted_keys=hub_trusted_keys(config),
            query_timeout=config.query_timeout,
            ping_rate=config.ping_rate,
            ping_burst=config.ping_burst,
            max_pending_per_link=config.max_pending_per_link,
        )
        self.peers = PeerRegistry()
        #: Per-satellite token buckets (agent input, non-admin PROPAGATE).
        self.limits = RateLimits(
            {
                AGENT: (config.agent_rate, config.agent_burst),
                PROPAGATE: (config.propagate_rate, config.propagate_burst),
            }
        )
        #: Every link the router can name, by peer (satellites, and e.g. an upstream link).
        self.sinks: dict[str, Sink] = {}
        #: The OVOS session of each registered satellite, by peer.
        self.sessions: dict[str, LinkSession] = {}
        #: Public name -> peer of each registered satellite (what others are told it is).
        self.public_names: dict[str, str] = {}
        #: The tags of public names and hidden session ids (a per-hub secret).
        self.concealer = Concealer()
        #: Satellite links, registered or not yet (the listeners add and remove them).
        self.connections: set[Any] = set()
        #: Counters (connections, auth failures, denials, drops, errors ...).
        self.stats: dict[str, int] = {}
        #: Handlers for delivered message types other than BUS/SHARED_BUS/BINARY
        #: (mesh features plug in here): ``fn(message, origin_peer)``.
        self.local_handlers: dict[HiveMessageType, Callable[[HiveMessage, str | None], None]] = {}
        #: Extra action types (router extensions): ``{ActionClass: fn(action)}``.
        self.action_handlers: dict[type, Callable[[Any], None]] = {}
        #: Called with ``(ovos_dict, peer)`` for each SHARED_BUS message.
        self.shared_bus_observers: list[Callable[[dict[str, Any], str | None], None]] = []
        #: The link to this hub's master (nested hives), when there is one.
        self.upstream: UpstreamSink | None = None
        self._router_timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clock = clock
        #: Password-handshake IVs already used, and handshakes, per client.
        self.handshake_ivs = HandshakeIVs()
        #: The bounded executor every key derivation of this hub runs in.
        self.keywork = KeyWork(config.key_workers, config.key_queue)
        #: Handshakes per link and per access key (hivemind_core.keying).
        self.handshake_limits = HandshakeLimits.from_config(config)
        #: Protocol v3: the static key, the PSK cache, the protocol floor.
        self.noise = NoiseHub(noise_key or create_noise_key(), config.min_protocol_version)
        #: Debounced, off-loop ``last_seen`` writes.
        self.last_seen = LastSeenWriter(database, config.last_seen_delay, self.count)

    # -- life cycle ---------------------------------------------------------------

    def bind(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Use ``loop`` (default: the running one) for the router's timer."""
        self._loop = loop or asyncio.get_running_loop()

    def now(self) -> float:
        """The node's clock: what every ``now`` given to the router and connections is."""
        if self._clock is not None:
            return self._clock()
        loop = self._loop or asyncio.get_running_loop()
        return loop.time()

    def halt(self) -> None:
        """Cancel the router's timer (the node stops acting on its own)."""
        if self._router_timer is not None:
            self._router_timer.cancel()
            self._router_timer = None
        self.keywork.shutdown()

    def count(self, what: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``what`` of :attr:`stats`."""
        stats = self.stats
        stats[what] = stats.get(what, 0) + n

    def new_connection(self, client: Any, *, v3: bool = True) -> Connection:
        """The hub end of a link for ``client``'s record, whatever the transport.

        With ``v3`` (transports that carry it), a row with a password is
        offered v3 as well as v1 (:meth:`NoiseHub.settings_for`).
        """
        return hub_connection(self, client, v3=v3)

    # -- satellites ------------------------------------------------------------------

    def add_satellite(
        self, sink: Sink, client: Any, useragent: str, hello: dict[str, Any], session: LinkSession
    ) -> str:
        """Register a satellite under a fresh unique peer name; returns that name.

        The session is namespaced for the client (:meth:`LinkSession.bind`), so
        a session id another client uses is no way into that client's OVOS
        state, and the link gets a public name (:attr:`public_names`) that is
        all other links ever learn of it.
        """
        session.bind(self.node_id, client.client_id)
        name = client.name or ""
        peer = self.peers.claim(peer_name(useragent, client.client_id, name, session.session_id))
        public = self.concealer.public_peer(useragent, client.client_id, name, peer)
        self.public_names[public] = peer
        pubkey = hello.get("pubkey")
        # Relay hubs name the id they stamp into routes (loop checks compare it).
        node_id = hello.get("node_id")
        self.router.add_link(
            Link(
                peer,
                LinkKind.SATELLITE,
                Permissions.from_record(client),
                site_id=session.site_id,
                session_id=session.session_id,
                pubkey=pubkey if isinstance(pubkey, str) else None,
                is_hub=bool(hello.get("is_hub")),
                node_id=node_id if isinstance(node_id, str) and node_id else None,
                public=public,
            )
        )
        self.sinks[peer] = sink
        self.sessions[peer] = session
        self.touch(client)
        LOG.info(
            "satellite %s connected (client %s, site %s)",
            peer,
            client.client_id,
            session.site_id or "-",
        )
        try:
            self.agent.client_connected(peer, session.agent_id)
        except Exception:
            self.count("errors")
            LOG.exception("agent.client_connected failed")
        return peer

    def update_session(self, peer: str, session: LinkSession) -> None:
        """A registered satellite sent a new HELLO for the same session."""
        old = self.sessions.get(peer)
        if old is not None:
            session.namespace = old.namespace
        self.sessions[peer] = session
        rlink = self.router.links.get(peer)
        if rlink is not None:
            rlink.site_id = session.site_id

    def remove_satellite(self, peer: str, sink: Sink, client: Any) -> None:
        """Forget a satellite: answer what waited on it, free its name, tell the agent."""
        LOG.info("satellite %s left", peer)
        self.touch(client)
        rlink = self.router.links.get(peer)
        if rlink is not None and rlink.public is not None:
            self.public_names.pop(rlink.public, None)
        self.remove_link(peer, sink)
        self.sessions.pop(peer, None)
        self.peers.release(peer)
        self.limits.forget(peer)
        try:
            self.agent.client_disconnected(peer)
        except Exception:
            self.count("errors")
            LOG.exception("agent.client_disconnected failed")

    def peer_named(self, name: str | None) -> str | None:
        """The link a name denotes: a peer, or a satellite's public name; None if neither."""
        if name is None:
            return None
        if name in self.router.links:
            return name
        return self.public_names.get(name)

    def add_link(self, link: Link, sink: Sink) -> None:
        """Register any link (e.g. the upstream one) with the router and the sinks."""
        self.router.add_link(link)
        self.sinks[link.peer] = sink

    def remove_link(self, peer: str, sink: Sink) -> None:
        """Remove ``peer`` from the router (executing what it owes) and the sinks."""
        owed = self.router.remove_link(peer)
        if owed:
            self.execute(owed)
        if self.sinks.get(peer) is sink:
            del self.sinks[peer]

    def touch(self, client: Any) -> None:
        """Record ``last_seen`` (once per connect and disconnect, never per message):
        debounced and written off the event loop (:mod:`hivemind_core.last_seen`)."""
        self.last_seen.touch(client.client_id)

    # -- actions -------------------------------------------------------------------

    def route(self, peer: str, message: HiveMessage) -> None:
        """Hand a message received on link ``peer`` to the router and carry out its decision.

        A non-admin satellite's PROPAGATE over its rate limit stops here (denied).
        """
        if message.msg_type is HiveMessageType.PROPAGATE and peer in self.sessions:
            rlink = self.router.links.get(peer)
            admin = rlink is not None and rlink.permissions.is_admin
            if not admin and not self.limits.allow(PROPAGATE, peer, self.now()):
                self.rate_denied(peer, HiveMessageType.PROPAGATE.value)
                return
        self.execute(self.router.handle(peer, message, self.now()), peer)

    def execute(self, actions: Iterable[Any], origin: str | None = None) -> None:
        """Carry out router actions. The ONE place every action type is dispatched.

        ``Send`` writes to a link, ``Deliver`` hands a message to this node,
        ``Deny`` answers ``hive.policy.denied`` (closing with 4003 when the
        router says so), ``Drop`` is counted, ``AskLocal`` asks the agent.
        Other action types are looked up in :attr:`action_handlers`, so router
        extensions plug in without touching this method. A message sent to
        several links is serialized once (``encode_once``); one over
        ``max_forward_size`` is sent to none and its sender (``origin``) told.
        """
        refused: set[int] = set()
        with encode_once():
            self._execute(actions, origin, refused)
        self._arm_router_timer()

    def _execute(self, actions: Iterable[Any], origin: str | None, refused: set[int]) -> None:
        for action in actions:
            try:
                if isinstance(action, Send):
                    sink = self.sinks.get(action.peer)
                    if sink is None:
                        self.count("dropped_no_link")
                    elif self.fits(action.message, origin, refused):
                        sink.send_message(action.message)
                elif isinstance(action, Deliver):
                    self.deliver(action)
                elif isinstance(action, Deny):
                    self.deny(action)
                elif isinstance(action, Drop):
                    self.drop(action)
                elif isinstance(action, AskLocal):
                    self.ask_local(action)
                else:
                    handler = self.action_handlers.get(type(action))
                    if handler is None:
                        self.count("unknown_actions")
                        LOG.warning("no handler for router action %s", type(action).__name__)
                    else:
                        handler(action)
            except Exception:
                self.count("errors")
                LOG.exception("executing %s failed", type(action).__name__)

    def _arm_router_timer(self) -> None:
        loop = self._loop
        if loop is None:
            return
        deadline = self.router.get_timer()
        current = self._router_timer
        if current is not None:
            if deadline is not None and current.when() == deadline:
                return
            current.cancel()
            self._router_timer = None
        if deadline is not None:
            self._router_timer = loop.call_at(deadline, self._on_router_timer)

    def _on_router_timer(self) -> None:
        self._router_timer = None
        try:
            self.execute(self.router.handle_timer(self.now()))
        except Exception:
            self.count("errors")
            LOG.exception("router timer failed")
