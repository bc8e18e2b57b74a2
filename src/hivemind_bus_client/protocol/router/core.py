"""The :class:`Router`: one dispatch table from message type to handler.

Each handler takes the link a message came on and the message, and returns
actions. QUERY and CASCADE handlers come from
:class:`~hivemind_bus_client.protocol.router.requests.RequestRouting`; loop
protection from :mod:`~hivemind_bus_client.protocol.router.floods`; the PING
and PONG formats from :mod:`hivemind_bus_client.protocol.ping`. Every refusal
goes through :meth:`Router._deny` (answer + count + log, and the 4003
decision after ``max_violations``), every discard through :meth:`Router._drop`
(count + log).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from hivemind_bus_client.protocol.intercom import IntercomResult, open_sealed
from hivemind_bus_client.protocol.message import HiveMessage, HiveMessageType
from hivemind_bus_client.protocol.ping import (
    PingBucket,
    ping_message,
    ping_payload,
    pong_flood_id,
    pong_message,
)
from hivemind_bus_client.protocol.router.actions import (
    Action,
    Deliver,
    Deny,
    Drop,
    Link,
    LinkKind,
    Send,
)
from hivemind_bus_client.protocol.router.floods import bus_type, flood_id_of, new_flood_id, visited
from hivemind_bus_client.protocol.router.names import name_inbound
from hivemind_bus_client.protocol.router.requests import RequestRouting

__all__ = ["Router"]

#: One logger for the whole router package, under the name it always had, so
#: logging configuration written for it keeps applying.
LOG = logging.getLogger("hivemind_bus_client.router")

T = HiveMessageType

_INTERCOM_COUNTERS = {
    IntercomResult.TAMPERED: "intercom_tampered",
    IntercomResult.UNTRUSTED: "intercom_untrusted",
}


class Router(RequestRouting):
    """The routing decisions of one node.

    The constructor's arguments are documented on
    :class:`~hivemind_bus_client.protocol.router.state.RouterState`.
    """

    # -- inbound ---------------------------------------------------------------

    def handle(self, peer: str, message: HiveMessage, now: float = 0.0) -> list[Action]:
        """Decide what to do with ``message`` that arrived on link ``peer`` at ``now``."""
        self._now = now
        link = self.links.get(peer)
        if link is None:
            self._count("dropped")
            return [Drop("message from an unknown link", peer)]
        name_inbound(link, message)
        handler = _HANDLERS.get(message.msg_type, Router._on_deliver)
        return handler(self, link, message)

    def _on_bus(self, link: Link, msg: HiveMessage) -> list[Action]:
        if link.kind is LinkKind.SATELLITE:
            allowed = link.permissions.allowed_types
            mtype = bus_type(msg)
            if allowed is not None and mtype not in allowed:
                return [
                    self._deny(
                        link,
                        mtype or "",
                        "acl_disallowed_type",
                        f"message type {mtype!r} is not allowed for this client",
                        violation=False,
                    )
                ]
        return [Deliver(msg, link.peer)]

    def _on_deliver(self, link: Link, msg: HiveMessage) -> list[Action]:
        """SHARED_BUS, BINARY and every type without a rule of its own: handle here."""
        return [Deliver(msg, link.peer)]

    def _on_bare_ping(self, link: Link, msg: HiveMessage) -> list[Action]:
        return [self._drop("PING must travel inside PROPAGATE", link, "malformed")]

    def _on_escalate(self, link: Link, msg: HiveMessage) -> list[Action]:
        if link.kind is not LinkKind.SATELLITE:
            return [self._drop("ESCALATE from above or aside (escalate only goes up)", link)]
        if not link.permissions.can_escalate:
            return [
                self._deny(
                    link, T.ESCALATE.value, "escalate_forbidden", "this client may not escalate"
                )
            ]
        up = self.upstream
        if not self._stamp(msg, [up.peer] if up else []):
            return [self._drop("ESCALATE looped or over the hop limit", link, "loop")]
        inner = msg.payload
        if not isinstance(inner, HiveMessage):
            return [self._drop("ESCALATE without a nested message", link, "malformed")]
        if inner.msg_type is T.INTERCOM:
            opened = self._try_intercom(inner, link)
            if opened is not None:
                return opened  # ours (or refused): the climb ends here
            if up is None:
                return [
                    self._drop("INTERCOM reached the top unopened", link, "intercom_undeliverable")
                ]
            return self._outbound(up, msg)
        if up is not None:
            return self._outbound(up, msg)
        return self._local(inner, link, T.ESCALATE)

    def _on_broadcast(self, link: Link, msg: HiveMessage) -> list[Action]:
        if link.kind is LinkKind.SATELLITE:
            perms = link.permissions
            if not (perms.is_admin and perms.can_broadcast):
                return [
                    self._deny(
                        link,
                        T.BROADCAST.value,
                        "broadcast_forbidden",
                        "only admins with can_broadcast may broadcast",
                    )
                ]
        if not self.floods.check_and_add(flood_id_of(msg)):
            return [self._drop("duplicate BROADCAST", link, "duplicate")]
        return self._fan_down(link, msg)

    def _fan_down(self, link: Link | None, msg: HiveMessage) -> list[Action]:
        peer = link.peer if link else None
        seen = visited(msg)
        target = msg.target_site_id
        down = [
            sat
            for sat in self.satellites()
            if sat.peer != peer
            and sat.ident not in seen
            and (target is None or sat.site_id == target or sat.is_hub)
        ]
        if not self._stamp(msg, [lk.ident for lk in down]):
            return [self._drop("BROADCAST looped or over the hop limit", link, "loop")]
        actions: list[Action] = []
        inner = msg.payload
        if isinstance(inner, HiveMessage) and (target is None or target == self.site_id):
            actions.extend(self._local(inner, link, T.BROADCAST))
        for sat in down:
            actions.extend(self._outbound(sat, msg))
        return actions

    def _on_propagate(self, link: Link, msg: HiveMessage) -> list[Action]:
        if link.kind is LinkKind.SATELLITE and not link.permissions.can_propagate:
            return [
                self._deny(
                    link, T.PROPAGATE.value, "propagate_forbidden", "this client may not propagate"
                )
            ]
        flood = flood_id_of(msg)
        if not self.floods.check_and_add(flood):
            return [self._drop("duplicate PROPAGATE", link, "duplicate")]
        travelled = [dict(hop) for hop in msg.route if isinstance(hop, dict)]
        targets = self._flood_targets(link, msg)
        if not self._stamp(msg, [lk.ident for lk in targets]):
            return [self._drop("PROPAGATE looped or over the hop limit", link, "loop")]
        actions: list[Action] = []
        inner = msg.payload
        if isinstance(inner, HiveMessage):
            if inner.msg_type is T.PING:
                if not self._ping_allowed(link):
                    return [self._drop("PING rate limit", link, "ping_rate_limited")]
                actions.extend(self._answer_ping(link, flood, inner, travelled))
            else:
                actions.extend(self._local(inner, link, T.PROPAGATE))
        for lk in targets:
            actions.extend(self._outbound(lk, msg))
        return actions

    def _local(self, inner: HiveMessage, link: Link | None, via: HiveMessageType) -> list[Action]:
        """What this node does with the inner message of a transport it handles."""
        if inner.msg_type is T.INTERCOM:
            return self._try_intercom(inner, link) or []
        if (
            via is T.PROPAGATE
            and inner.msg_type is T.BUS
            and link is not None
            and self.require_trusted_propagate
            and not self.is_trusted(link)
        ):
            return [
                self._drop(
                    "PROPAGATE(BUS) from an untrusted link is not injected",
                    link,
                    "propagate_untrusted",
                )
            ]
        return [Deliver(inner, link.peer if link else None, via)]

    # -- INTERCOM ------------------------------------------------------------------

    def _try_intercom(self, inner: HiveMessage, link: Link | None) -> list[Action] | None:
        """Open an INTERCOM if it is ours; None when it is not (pass it on)."""
        if self.private_key is None:
            return None
        opened = open_sealed(inner.payload, self.private_key, self.trust)
        result = opened.result
        if result is IntercomResult.NOT_FOR_US:
            return None
        if result is IntercomResult.OPENED and opened.message is not None:
            self._count("intercom_opened")
            origin = link.peer if link else None
            return [Deliver(opened.message, origin, T.INTERCOM, opened.sender)]
        counter = _INTERCOM_COUNTERS.get(result, "intercom_malformed")
        return [self._drop(f"INTERCOM {result.value}", link, counter)]

    def _on_intercom(self, link: Link, msg: HiveMessage) -> list[Action]:
        """A bare INTERCOM is single hop: ours or nobody's."""
        opened = self._try_intercom(msg, link)
        if opened is None:
            return [self._drop("bare INTERCOM not for this node", link, "intercom_undeliverable")]
        return opened

    # -- PING / PONG -------------------------------------------------------------

    def _ping_allowed(self, link: Link) -> bool:
        """Take a token from a satellite link's PING bucket; False when it is empty."""
        if link.kind is not LinkKind.SATELLITE or self.ping_rate <= 0:
            return True
        if link.ping_bucket is None:
            link.ping_bucket = PingBucket(self.ping_rate, self.ping_burst, stamp=self._now)
        return link.ping_bucket.take(self._now)

    def _answer_ping(
        self, link: Link, flood: str, ping: HiveMessage, travelled: list[dict[str, Any]]
    ) -> list[Action]:
        self.pings.remember(flood, link.peer)
        pong = pong_message(
            ping,
            flood_id=flood,
            peer=self.node_id,
            site_id=self.site_id,
            public_key=self.public_key,
            route=travelled,
            **self.pong_fields,
        )
        return [Deliver(ping, link.peer, T.PROPAGATE), *self._outbound(link, pong)]

    def _on_pong(self, link: Link, msg: HiveMessage) -> list[Action]:
        flood = pong_flood_id(msg)
        if flood is None or flood not in self.pings:
            return [self._drop("PONG for a PING this node did not see", link, "unroutable")]
        parent = self.pings.parent(flood)
        if parent is None:
            return [Deliver(msg, link.peer)]
        back = self.links.get(parent)
        if back is None:
            return [self._drop("PONG's way back is gone", link, "unroutable")]
        return self._outbound(back, msg)

    def ping(self, now: float, **fields: Any) -> tuple[str, list[Action]]:
        """Start a PING flood from this node; returns its flood id and the sends.

        ``fields`` are added to the PING payload (e.g. ``lang``).
        """
        flood = new_flood_id()
        payload = ping_payload(flood, self.node_id, self.site_id, now, **fields)
        return flood, self.originate(ping_message(flood, payload), now=now)

    # -- outbound ----------------------------------------------------------------

    def originate(self, message: HiveMessage, now: float = 0.0) -> list[Action]:
        """Route a transport message created at this node (by its agent or client).

        BROADCAST goes to the satellites (a node without satellites hands it
        to its master, as an admin client does), ESCALATE and QUERY to the master,
        PROPAGATE and CASCADE to every link; a bare PING is wrapped in
        PROPAGATE. Answers to a QUERY/CASCADE/PING started here come back as
        ``Deliver`` actions.
        """
        self._now = now
        mtype = message.msg_type
        if mtype is T.BROADCAST:
            up = self.upstream
            if up is not None and not any(True for _ in self.satellites()):
                # A plain satellite (an admin client) asks its hub to broadcast;
                # the hub checks is_admin/can_broadcast on this link.
                self._stamp(message, [up.ident])
                return self._outbound(up, message)
            self.floods.check_and_add(flood_id_of(message))
            return [a for a in self._fan_down(None, message) if not isinstance(a, Deliver)]
        if mtype is T.ESCALATE:
            up = self.upstream
            if up is None:
                return [self._drop("ESCALATE at the top of the hive", None)]
            self._stamp(message, [up.ident])
            return self._outbound(up, message)
        if mtype is T.PING:
            wrapped = HiveMessage(T.PROPAGATE, message, metadata={"flood_id": new_flood_id()})
            return self.originate(wrapped, now)
        if mtype is T.PROPAGATE:
            flood = flood_id_of(message)
            self.floods.check_and_add(flood)
            inner = message.payload
            if isinstance(inner, HiveMessage) and inner.msg_type is T.PING:
                self.pings.remember(flood, None)
                if isinstance(inner.payload, dict):
                    inner.payload.setdefault("timestamp", now)
                    inner.payload.setdefault("flood_id", flood)
            targets = list(self.links.values())
            self._stamp(message, [lk.ident for lk in targets])
            return [a for lk in targets for a in self._outbound(lk, message)]
        if mtype is T.QUERY:
            return self._originate_query(message)
        if mtype is T.CASCADE:
            return self._originate_cascade(message)
        return [self._drop(f"cannot originate {mtype.value}", None)]

    def send_to(self, peers: Iterable[str], message: HiveMessage) -> list[Action]:
        """Send a message to the given links, honouring each one's outbound blacklist."""
        actions: list[Action] = []
        for peer in peers:
            link = self.links.get(peer)
            if link is None:
                actions.append(Drop("no such link", peer))
                continue
            actions.extend(self._outbound(link, message))
        return actions

    def _outbound(self, link: Link, message: HiveMessage) -> list[Action]:
        blacklist = link.permissions.message_blacklist
        if blacklist:
            mtype = bus_type(message)
            if mtype in blacklist or message.msg_type.value in blacklist:
                self._count("filtered")
                what = mtype or message.msg_type.value
                return [Drop(f"{what} is blacklisted for this client", link.peer)]
        self._count("sent")
        return [Send(link.peer, message)]

    # -- the one drop and the one deny -------------------------------------------

    def _drop(self, reason: str, link: Link | None, counter: str = "dropped") -> Drop:
        """The one place a message is discarded: counts and logs."""
        self._count(counter)
        if counter != "dropped":
            self._count("dropped")
        peer = link.peer if link else None
        if LOG.isEnabledFor(logging.DEBUG):
            LOG.debug("%s: drop (%s) from %s: %s", self.node_id, counter, peer, reason)
        return Drop(reason, peer)

    def _deny(
        self, link: Link, denied_type: str, code: str, reason: str, violation: bool = True
    ) -> Deny:
        """The one place a message is refused: counts, logs, and decides whether to close."""
        self._count("denied")
        self._count("denied:" + code)
        close = False
        if violation:
            link.violations += 1
            close = link.violations >= self.max_violations
        LOG.info(
            "%s: denied %s from %s (%s: %s)%s",
            self.node_id,
            denied_type,
            link.peer,
            code,
            reason,
            "; closing with 4003" if close else "",
        )
        return Deny(link.peer, denied_type, code, reason, close)


_Handler = Callable[[Router, Link, HiveMessage], list[Action]]

#: Message type -> handler; a type not listed is handled here (``_on_deliver``).
_HANDLERS: dict[HiveMessageType, _Handler] = {
    T.BUS: Router._on_bus,
    T.SHARED_BUS: Router._on_deliver,
    T.BINARY: Router._on_deliver,
    T.ESCALATE: Router._on_escalate,
    T.BROADCAST: Router._on_broadcast,
    T.PROPAGATE: Router._on_propagate,
    T.QUERY: Router._on_query,
    T.CASCADE: Router._on_cascade,
    T.INTERCOM: Router._on_intercom,
    T.PING: Router._on_bare_ping,
    T.PONG: Router._on_pong,
}
