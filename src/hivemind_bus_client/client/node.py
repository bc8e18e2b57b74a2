"""The client as a node of the hive: a :class:`~hivemind_bus_client.protocol.router.Router`
whose only link is the hub, as its ``UPSTREAM``.

Every message from the hub goes through the router, and the router decides the
node's duties: answering a PING flood with THE PONG (the one the hubs route
back), opening INTERCOMs meant for us, binding our QUERY and CASCADE requests
to their answers. The client has no copy of that logic; it carries out the
router's actions:

=============  ================================================================
``Send``       write to the hub (a PONG, unless ``answer_pings`` is off)
``Deliver``    an opened INTERCOM: to INTERCOM handlers and, the sender being
               trusted, its inner message to the ordinary handlers; a CASCADE
               answer: to the gathering :class:`CascadeAggregator`
``AskLocal``   declined at once: a satellite has no local agent
``Drop``       nothing (the router counted it)
=============  ================================================================

Every message (but a bare INTERCOM, which only the router may open) also goes
to the handler registry as it arrived, so ``on(...)`` handlers and waiters see
what the hub sent.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Callable
from typing import Any

from hivemind_bus_client.client.config import ClientConfig
from hivemind_bus_client.client.engine import ChannelFactory, LinkEngine
from hivemind_bus_client.client.handlers import Call, HandlerRegistry
from hivemind_bus_client.identity import NodeIdentity
from hivemind_bus_client.protocol import crypto, intercom
from hivemind_bus_client.protocol.cascade import CascadeAggregator, CascadeResult, is_response
from hivemind_bus_client.protocol.connection import Connection
from hivemind_bus_client.protocol.message import HiveMessage, HiveMessageType
from hivemind_bus_client.protocol.router import (
    Action,
    AskLocal,
    Deliver,
    Link,
    LinkKind,
    Router,
    Send,
)

__all__ = ["HUB_LINK", "ClientNode"]

LOG = logging.getLogger(__name__)
_T = HiveMessageType

#: The router's name for the link to the hub.
HUB_LINK = "hub"


def _router_copy(msg: HiveMessage) -> HiveMessage:
    """A copy the router may stamp (route, metadata, source) without touching ``msg``."""
    view = copy.copy(msg)
    view.route = [dict(h) if isinstance(h, dict) else h for h in msg.route]
    view.metadata = dict(msg.metadata)
    return view


class ClientNode:
    """A satellite: a router over one :class:`LinkEngine` (see the module docstring).

    Args:
        config: merged client settings.
        identity: keys and trusted keys.
        registry: handlers and waiters to feed.
        dispatch: runs a batch of handler calls (called on the engine's loop).
        channel_factory: how the engine opens its channel (default: websocket).
    """

    def __init__(
        self,
        config: ClientConfig,
        identity: NodeIdentity,
        registry: HandlerRegistry,
        dispatch: Callable[[list[Call]], None],
        *,
        channel_factory: ChannelFactory | None = None,
    ) -> None:
        self.config = config
        self.identity = identity
        self.registry = registry
        self.dispatch = dispatch
        self.engine = LinkEngine(
            config,
            identity,
            channel_factory=channel_factory,
            on_message=self._on_message,
            on_state=self._on_state,
            on_hello=self._on_hello,
            on_open=self._on_open,
        )
        self.router = Router(
            config.session_id,
            config.site_id,
            trusted_keys=dict(identity.trusted_keys),
            ping_rate=0,
        )
        self.cascade = CascadeAggregator(config.cascade_timeout)
        #: Called (on the loop) with True when a link is keyed, False when it is lost.
        self.on_state: Callable[[bool, BaseException | None], None] | None = None
        #: Called (on the loop) with True when a socket opened, False when it is gone.
        self.on_open: Callable[[bool], None] | None = None
        self.pings_answered = 0
        self._cascade_waiters: dict[str, Callable[[CascadeResult], None]] = {}
        self._cascade_timer: asyncio.TimerHandle | None = None
        self._router_timer: asyncio.TimerHandle | None = None

    # -- what the documented samples reach through ``client.protocol`` -------------------------

    @property
    def cascade_select_callback(self) -> Any:
        """Picks one CASCADE response out of the gathered list (docs/client.md, "Node duties")."""
        return self.cascade.cascade_select_callback

    @cascade_select_callback.setter
    def cascade_select_callback(self, fn: Any) -> None:
        self.cascade.cascade_select_callback = fn

    @property
    def hive_mapper(self) -> Any:
        """Topology source that lets a CASCADE resolve once every node answered."""
        return self.cascade.hive_mapper

    @hive_mapper.setter
    def hive_mapper(self, mapper: Any) -> None:
        self.cascade.hive_mapper = mapper

    @property
    def cascade_timeout(self) -> float:
        """Seconds a CASCADE gathers answers."""
        return self.cascade.cascade_timeout

    @cascade_timeout.setter
    def cascade_timeout(self, value: float) -> None:
        self.cascade.cascade_timeout = float(value)

    @property
    def private_key(self) -> crypto.PrivateKey | None:
        """Our RSA key (see :attr:`LinkEngine.private_key`)."""
        return self.engine.keys.private_key

    @property
    def public_key_pem(self) -> str | None:
        """PEM of our public key."""
        return self.engine.keys.public_key_pem

    @property
    def conn(self) -> Connection | None:
        """The Connection of the current link (a fresh one per link)."""
        return self.engine.conn

    @property
    def stats(self) -> dict[str, int]:
        """Messages in/out, PINGs answered, INTERCOMs opened and dropped, connects."""
        c = self.router.counters
        untrusted = c.get("intercom_untrusted", 0)
        return {
            **self.engine.stats,
            "pings_answered": self.pings_answered,
            "intercom_opened": c.get("intercom_opened", 0) + untrusted,
            "intercom_dropped": untrusted
            + c.get("intercom_tampered", 0)
            + c.get("intercom_malformed", 0),
            "connects": self.engine.connects,
            "pongs_unheard_dropped": self.registry.unheard_evicted,
        }

    # -- link state -------------------------------------------------------------------

    def _loop(self) -> asyncio.AbstractEventLoop:
        assert self.engine.loop is not None
        return self.engine.loop

    def _now(self) -> float:
        return self._loop().time()

    def _on_hello(self, payload: dict[str, Any]) -> None:
        if self.engine.peer:
            self.router.node_id = self.engine.peer
        link = self.router.links.get(HUB_LINK)
        if link is not None:
            link.node_id = self.engine.node_id
            link.pubkey = self.engine.hub_pubkey

    def _on_open(self, up: bool) -> None:
        if self.on_open is not None:
            self.on_open(up)

    def _on_state(self, up: bool, reason: BaseException | None) -> None:
        router = self.router
        if up:
            key = self.engine.keys.private_key
            router.private_key = key
            router.public_key = self.engine.keys.public_key_pem
            router.site_id = self.config.site_id
            router.set_trusted_keys(dict(self.identity.trusted_keys))
            if self.engine.peer:
                router.node_id = self.engine.peer
            router.add_link(
                Link(
                    HUB_LINK,
                    LinkKind.UPSTREAM,
                    node_id=self.engine.node_id,
                    pubkey=self.engine.hub_pubkey,
                    trusted=True,  # we chose this hub
                )
            )
        elif HUB_LINK in router.links:
            self._execute(router.remove_link(HUB_LINK))
        if self.on_state is not None:
            self.on_state(up, reason)

    # -- the router's actions -----------------------------------------------------------

    def _on_message(self, msg: HiveMessage) -> None:
        untrusted = self.router.counters.get("intercom_untrusted", 0)
        actions = self.router.handle(HUB_LINK, _router_copy(msg), self._now())
        consumed = self._execute(actions, msg)
        if msg.msg_type is _T.INTERCOM:
            if self.router.counters.get("intercom_untrusted", 0) > untrusted:
                self._untrusted_intercom(msg)
            return
        if not consumed:
            self._deliver(msg)

    def _execute(self, actions: list[Action], outer: HiveMessage | None = None) -> bool:
        """Carry out router actions; True when one of them consumed the message."""
        consumed = False
        for act in actions:
            if isinstance(act, Send):
                if act.message.msg_type is _T.PONG:
                    if not self.config.answer_pings:
                        continue
                    self.pings_answered += 1
                self.engine.send_nowait(act.message)
            elif isinstance(act, Deliver):
                consumed = self._on_deliver(act, outer) or consumed
            elif isinstance(act, AskLocal):
                self._execute(self.router.local_decline(act.query_id, self._now()))
        self._arm_router_timer()
        return consumed

    def _on_deliver(self, act: Deliver, outer: HiveMessage | None) -> bool:
        msg = act.message
        if act.via is _T.INTERCOM:
            self._opened_intercom(act, outer or msg)
            return False
        if msg.msg_type is _T.CASCADE and is_response(msg):
            return self._cascade_response(msg)
        if outer is None:  # from a timer or a lost link: an answer to our own request
            self._deliver(msg)
        return False

    def _arm_router_timer(self) -> None:
        if self._router_timer is not None:
            self._router_timer.cancel()
            self._router_timer = None
        deadline = self.router.get_timer()
        if deadline is not None:
            self._router_timer = self._loop().call_at(deadline, self._router_tick)

    def _router_tick(self) -> None:
        self._router_timer = None
        self._execute(self.router.handle_timer(self._now()))

    def _deliver(self, msg: HiveMessage) -> None:
        calls = self.registry.collect(msg, self.config.site_id)
        if calls:
            self.dispatch(calls)

    # -- INTERCOM -----------------------------------------------------------------------

    def _opened_intercom(self, act: Deliver, outer: HiveMessage) -> None:
        inner = act.message
        self._intercom_handlers(outer, inner, act.sender)
        calls = self.registry.collect(inner, self.config.site_id)
        if calls:
            self.dispatch(calls)

    def _untrusted_intercom(self, outer: HiveMessage) -> None:
        """INTERCOM handlers hear that an untrusted one came; its content is not delivered."""
        LOG.warning("INTERCOM from an untrusted sender: not injected")
        self._intercom_handlers(outer, None, None)

    def _intercom_handlers(
        self, outer: HiveMessage, inner: HiveMessage | None, sender: str | None
    ) -> None:
        decrypted = inner.as_dict if inner is not None and inner.msg_type is not _T.BINARY else {}
        opened = HiveMessage(
            _T.INTERCOM,
            payload={"decrypted": decrypted, "trusted": sender is not None, "sender_alias": sender},
            route=outer.route,
            source_peer=outer.source_peer,
            target_pubkey=outer.target_pubkey,
            metadata=outer.metadata,
        )
        calls = self.registry.collect(opened, self.config.site_id)
        if calls:
            self.dispatch(calls)

    def make_intercom(self, message: HiveMessage, pubkey: str) -> HiveMessage:
        """Seal ``message`` for the node owning ``pubkey`` (hybrid, signed when we can)."""
        sealed = intercom.seal(message, pubkey, self.engine.keys.private_key)
        sealed.target_pubkey = pubkey
        return sealed

    # -- requests this node originates ----------------------------------------------------

    def originate(self, message: HiveMessage) -> list[HiveMessage]:
        """Route a QUERY, CASCADE, PROPAGATE, ESCALATE or BROADCAST we start; returns
        the messages to send to the hub (the router stamped and bound them)."""
        actions = self.router.originate(message, self._now())
        out = [a.message for a in actions if isinstance(a, Send)]
        self._execute([a for a in actions if not isinstance(a, Send)])
        return out

    def ping(self) -> tuple[str, list[HiveMessage]]:
        """Start a PING flood; its flood id (every PONG echoes it) and what to send."""
        flood, actions = self.router.ping(self._now(), timestamp=time.time())
        self._arm_router_timer()
        return flood, [a.message for a in actions if isinstance(a, Send)]

    def begin_cascade(
        self,
        query_id: str,
        on_done: Callable[[CascadeResult], None],
        expected: int | None = None,
        timeout: float | None = None,
    ) -> None:
        """Start gathering answers to a CASCADE we are about to send."""
        self.cascade.start(query_id, self._now(), expected, timeout)
        self._cascade_waiters[query_id] = on_done
        self._arm_cascade_timer()

    def _arm_cascade_timer(self) -> None:
        if self._cascade_timer is not None:
            self._cascade_timer.cancel()
            self._cascade_timer = None
        deadline = self.cascade.next_deadline()
        if deadline is not None:
            self._cascade_timer = self._loop().call_at(deadline, self._cascade_tick)

    def _cascade_tick(self) -> None:
        self._cascade_timer = None
        self._cascade_done(self.cascade.poll(self._now()))

    def _cascade_response(self, msg: HiveMessage) -> bool:
        qid = msg.metadata.get("query_id")
        if not isinstance(qid, str) or not self.cascade.is_pending(qid):
            return False
        self._cascade_done(self.cascade.add(msg, self._now()))
        return True

    def _cascade_done(self, results: list[CascadeResult]) -> None:
        for result in results:
            done = self._cascade_waiters.pop(result.query_id, None)
            if done is not None:
                try:
                    done(result)
                except Exception:
                    LOG.exception("cascade completion callback failed")
            if result.selected is not None:
                self._deliver(result.selected)
        self._arm_cascade_timer()

    def stop_timers(self) -> None:
        """Cancel the node's timers (the client is closing)."""
        for timer in (self._cascade_timer, self._router_timer):
            if timer is not None:
                timer.cancel()
        self._cascade_timer = self._router_timer = None
