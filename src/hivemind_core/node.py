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
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from hivemind_bus_client.exceptions import CloseCode
from hivemind_bus_client.protocol import crypto
from hivemind_bus_client.protocol.connection import Connection, Role
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
    denial_message,
)
from hivemind_core.agents.base import Agent
from hivemind_core.binary import BinaryHandler, LoggingBinaryHandler
from hivemind_core.config import HubConfig
from hivemind_core.session import LinkSession, PeerRegistry, peer_name

__all__ = ["HubNode", "Sink", "UpstreamSink", "hub_trusted_keys"]

LOG = logging.getLogger(__name__)

T = HiveMessageType


class Sink(Protocol):
    """What the node sees of a link: it can be written to and closed."""

    def send_message(self, message: HiveMessage) -> None:
        """Queue ``message`` for this link (never blocks)."""

    def close(self, code: int, reason: str) -> None:
        """Close the link (idempotent)."""


class UpstreamSink(Sink, Protocol):
    """What the node sees of its link to a master (nested hives)."""

    @property
    def connected(self) -> bool:
        """Whether the master link is keyed and registered with the router."""

    @property
    def share_bus(self) -> bool:
        """Whether this hub shows its bus to the master (SHARED_BUS)."""

    def relay_down(self, payload: dict[str, Any]) -> bool:
        """Send an answer of the master on to one of our satellites; False if not one."""


def hub_trusted_keys(config: HubConfig) -> dict[str, str]:
    """The keys a hub trusts: its identity file's ``trusted_keys``, then ``config.trusted_keys``.

    An unreadable identity file is logged by :class:`NodeIdentity` and trusts nothing.
    """
    keys: dict[str, str] = {}
    if config.identity_trust:
        from hivemind_bus_client.identity import NodeIdentity

        keys.update(NodeIdentity().trusted_keys)
    extra: Any = config.trusted_keys or {}
    if isinstance(extra, (list, tuple)):  # a bare list of PEMs in server.json
        extra = {f"key-{i}": pem for i, pem in enumerate(extra)}
    keys.update(extra)
    if keys:
        LOG.info(
            "trusting %d key(s) for PROPAGATE(BUS) and INTERCOM: %s", len(keys), ", ".join(keys)
        )
    return keys


class HubNode:
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
        )
        self.peers = PeerRegistry()
        #: Every link the router can name, by peer (satellites, and e.g. an upstream link).
        self.sinks: dict[str, Sink] = {}
        #: The OVOS session of each registered satellite, by peer.
        self.sessions: dict[str, LinkSession] = {}
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

    def count(self, what: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``what`` of :attr:`stats`."""
        stats = self.stats
        stats[what] = stats.get(what, 0) + n

    def new_connection(self, client: Any) -> Connection:
        """The hub end of a link for ``client``'s record, whatever the transport."""
        cfg = self.config
        return Connection(
            Role.HUB,
            password=getattr(client, "password", None) or None,
            crypto_key=getattr(client, "crypto_key", None) or None,
            private_key=self.private_key,
            encodings=cfg.allowed_encodings,
            ciphers=cfg.allowed_ciphers,
            binarize=cfg.binarize,
            prefer_own_order=cfg.prefer_hub_order,
            node_id=self.node_id,
            handshake_timeout=cfg.handshake_timeout,
            max_size=cfg.max_frame_size,
        )

    # -- satellites ------------------------------------------------------------------

    def add_satellite(
        self, sink: Sink, client: Any, useragent: str, hello: dict[str, Any], session: LinkSession
    ) -> str:
        """Register a satellite under a fresh unique peer name; returns that name."""
        peer = self.peers.claim(
            peer_name(useragent, client.client_id, client.name or "", session.session_id)
        )
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
            )
        )
        self.sinks[peer] = sink
        self.sessions[peer] = session
        self.touch(client)
        if LOG.isEnabledFor(logging.DEBUG):
            LOG.debug("registered %s (site %s)", peer, session.site_id)
        try:
            self.agent.client_connected(peer, session.session_id)
        except Exception:
            self.count("errors")
            LOG.exception("agent.client_connected failed")
        return peer

    def update_session(self, peer: str, session: LinkSession) -> None:
        """A registered satellite sent a new HELLO for the same session."""
        self.sessions[peer] = session
        rlink = self.router.links.get(peer)
        if rlink is not None:
            rlink.site_id = session.site_id

    def remove_satellite(self, peer: str, sink: Sink, client: Any) -> None:
        """Forget a satellite: answer what waited on it, free its name, tell the agent."""
        self.touch(client)
        self.remove_link(peer, sink)
        self.sessions.pop(peer, None)
        self.peers.release(peer)
        try:
            self.agent.client_disconnected(peer)
        except Exception:
            self.count("errors")
            LOG.exception("agent.client_disconnected failed")

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
        """Record ``last_seen`` (once per connect and disconnect, never per message)."""
        touch = getattr(self.db, "touch", None)
        if touch is None:
            return
        try:
            touch(client.client_id, time.time())
        except Exception:
            self.count("errors")
            LOG.debug("could not update last_seen", exc_info=True)

    # -- actions -------------------------------------------------------------------

    def route(self, peer: str, message: HiveMessage) -> None:
        """Hand a message received on link ``peer`` to the router and carry out its decision."""
        self.execute(self.router.handle(peer, message, self.now()))

    def send_to(self, peer: str, message: HiveMessage) -> None:
        """Send ``message`` to ``peer`` through the router (the reply path of handlers)."""
        self.execute(self.router.send_to([peer], message))

    def execute(self, actions: Iterable[Any]) -> None:
        """Carry out router actions. The ONE place every action type is dispatched.

        ``Send`` writes to a link, ``Deliver`` hands a message to this node,
        ``Deny`` answers ``hive.policy.denied`` (closing with 4003 when the
        router says so), ``Drop`` is counted, ``AskLocal`` asks the agent.
        Other action types are looked up in :attr:`action_handlers`, so router
        extensions plug in without touching this method.
        """
        for action in actions:
            try:
                if isinstance(action, Send):
                    sink = self.sinks.get(action.peer)
                    if sink is None:
                        self.count("dropped_no_link")
                    else:
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
        self._arm_router_timer()

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

    def drop(self, drop: Drop) -> None:
        """A message the router refused to pass on: counted (and logged at DEBUG)."""
        self.count("dropped")
        if LOG.isEnabledFor(logging.DEBUG):
            LOG.debug("dropped message from %s: %s", drop.peer, drop.reason)

    def ask_local(self, action: AskLocal) -> None:
        """Ask the agent to answer a QUERY/CASCADE request; feed its answer to the router."""
        qid = action.query_id
        inner = action.message
        payload = inner.payload_dict() if inner.msg_type in (T.BUS, T.SHARED_BUS) else None
        done = False

        def answered(reply: dict[str, Any] | None) -> None:
            nonlocal done
            if done:
                return
            done = True
            now = self.now()
            if reply is None:
                self.execute(self.router.local_decline(qid, now))
            else:
                self.execute(self.router.local_answer(qid, reply, now))

        if payload is None:
            answered(None)
            return
        self.agent.ask(dict(payload), answered)

    def deny(self, deny: Deny) -> None:
        """Answer a denial to its link; close the link when the router says so."""
        self.count("denied")
        sink = self.sinks.get(deny.peer)
        if LOG.isEnabledFor(logging.DEBUG):
            LOG.debug("denied %s from %s: %s", deny.denied_type, deny.peer, deny.reason)
        if sink is None:
            return
        sink.send_message(denial_message(deny))
        if deny.close:
            self.count("kicked")
            LOG.info("closing %s after repeated violations: %s", deny.peer, deny.reason)
            sink.close(CloseCode.PERMISSION, f"permission violations: {deny.reason}")

    def deliver(self, action: Deliver) -> None:
        """A message the router delivered to this node: agent, observers, binary or handlers."""
        message, origin = action.message, action.origin
        mtype = message.msg_type
        if mtype is T.BUS:
            out = self.admit(message.payload_dict(), origin)
            if out is None:
                return
            if origin in self.sessions:
                self.share_up(out)  # first: the agent may answer before inject returns
            self.agent.inject(out)
        elif mtype is T.SHARED_BUS:
            self.count("shared_bus")
            payload = message.payload_dict()
            self.agent.observe(payload, origin or "")
            for observer in self.shared_bus_observers:
                observer(payload, origin)
        elif mtype is T.BINARY:
            peer = origin or ""
            self.binary_handler.handle(message, peer, lambda m: self.send_to(peer, m))
        else:
            handler = self.local_handlers.get(mtype)
            if handler is None:
                self.count("unhandled")
                if LOG.isEnabledFor(logging.DEBUG):
                    LOG.debug("no local handler for %s from %s", mtype.value, origin)
            else:
                handler(message, origin)

    def admit(self, payload: dict[str, Any], origin: str | None) -> dict[str, Any] | None:
        """THE admission step of every BUS message on its way to the agent.

        Returns the dict the agent gets (always a fresh one), or None when the
        message is not for the agent (an answer of the master relayed down).
        A satellite's message carries that satellite's own session, with its
        skill and intent blacklists, and a non-admin may not address another
        live satellite through the agent.
        """
        session = self.sessions.get(origin) if origin is not None else None
        if session is not None and origin is not None:
            rlink = self.router.links.get(origin)
            perms = rlink.permissions if rlink is not None else Permissions()
            out = session.stamp(
                payload, origin, tuple(perms.skill_blacklist), tuple(perms.intent_blacklist)
            )
            if not perms.is_admin:
                self._guard_destination(out["context"], origin)
            return out
        up = self.upstream
        if up is not None and origin is not None and self.sinks.get(origin) is up:
            if up.relay_down(payload):
                return None  # an answer from the master for one of our satellites
        return dict(payload)

    def share_up(self, payload: dict[str, Any]) -> None:
        """With ``upstream.share_bus``, show the master a message of this hub's bus."""
        up = self.upstream
        if up is None or not up.share_bus or not up.connected:
            return
        self.count("shared_up")
        up.send_message(HiveMessage(T.SHARED_BUS, payload))

    def _guard_destination(self, context: dict[str, Any], origin: str) -> None:
        """A non-admin may not address another live satellite through the agent."""
        dest = context.get("destination")
        sinks = self.sinks
        if isinstance(dest, str):
            if dest != origin and dest in sinks:
                context["destination"] = "skills"
                self.count("destination_rewritten")
        elif isinstance(dest, list) and any(
            isinstance(d, str) and d != origin and d in sinks for d in dest
        ):
            context["destination"] = [
                d for d in dest if not (d in sinks and d != origin)
            ] or "skills"
            self.count("destination_rewritten")

    # -- agent side ------------------------------------------------------------------

    def agent_reply(self, message: dict[str, Any]) -> None:
        """Route an agent message to the satellites named in ``context.destination``."""
        try:
            context = message.get("context")
            if not isinstance(context, dict):
                return
            dest = context.get("destination")
            sinks = self.sinks
            if isinstance(dest, str):
                if dest not in sinks:
                    return
                targets = [dest]
            elif isinstance(dest, list):
                targets = [d for d in dest if isinstance(d, str) and d in sinks]
                if not targets:
                    return
            else:
                return
            context = dict(context)
            context["source"] = "hive"
            payload = {"type": message.get("type"), "data": message.get("data"), "context": context}
            self.execute(self.router.send_to(targets, HiveMessage(T.BUS, payload)))
            self.share_up(payload)
        except Exception:
            self.count("errors")
            LOG.exception("routing an agent reply failed")
