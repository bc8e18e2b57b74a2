"""What the router works on and what it returns: links, permissions, actions.

The router's input is a :class:`Link` (with its :class:`Permissions`) and a
message; its output is a list of actions (:class:`Deliver`, :class:`Send`,
:class:`Deny`, :class:`Drop`, :class:`AskLocal`) that the service driving it
carries out in order. :class:`NodeHost` states that service's side of the
contract.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from ovos_bus_client.message import Message

from hivemind_bus_client.protocol.message import HiveMessage, HiveMessageType
from hivemind_bus_client.protocol.ping import PingBucket

__all__ = [
    "Action",
    "AskLocal",
    "Deliver",
    "Deny",
    "Drop",
    "Link",
    "LinkKind",
    "NodeHost",
    "Permissions",
    "RequestKind",
    "Send",
    "denial_message",
]

T = HiveMessageType


class LinkKind(Enum):
    """Where a link sits relative to this node.

    ``SATELLITE``: a client of this node's listener; everything it originates
    is checked against its :class:`Permissions`. ``UPSTREAM``: this node's
    master; not checked (we chose to connect). ``PEER``: a cross link that is
    neither; only floods and the replies routed along them use it.
    """

    SATELLITE = "satellite"
    UPSTREAM = "upstream"
    PEER = "peer"


class RequestKind(str, Enum):
    """Which kind of request an :class:`AskLocal` (or a pending binding) is.

    A ``str`` enum: ``RequestKind.QUERY == "query"`` holds, so code that
    compared the former string kinds keeps working.
    """

    QUERY = "query"
    CASCADE = "cascade"

    def __str__(self) -> str:
        return self.value


@dataclass
class Permissions:
    """What a link may originate, from its client record.

    ``allowed_types=None`` allows every BUS type (used for the upstream link).
    """

    is_admin: bool = False
    allowed_types: frozenset[str] | None = None
    message_blacklist: frozenset[str] = frozenset()
    skill_blacklist: tuple[str, ...] = ()
    intent_blacklist: tuple[str, ...] = ()
    can_broadcast: bool = True
    can_escalate: bool = True
    can_propagate: bool = True

    @classmethod
    def from_record(cls, record: Any) -> Permissions:
        """Build from any object with the client record's attribute names."""
        allowed = getattr(record, "allowed_types", None)
        return cls(
            is_admin=bool(getattr(record, "is_admin", False)),
            allowed_types=frozenset(allowed) if allowed is not None else None,
            message_blacklist=frozenset(getattr(record, "message_blacklist", None) or ()),
            skill_blacklist=tuple(getattr(record, "skill_blacklist", None) or ()),
            intent_blacklist=tuple(getattr(record, "intent_blacklist", None) or ()),
            can_broadcast=bool(getattr(record, "can_broadcast", True)),
            can_escalate=bool(getattr(record, "can_escalate", True)),
            can_propagate=bool(getattr(record, "can_propagate", True)),
        )


@dataclass
class Link:
    """One link of this node, as the router sees it.

    ``peer`` is the key the I/O layer uses for the link; ``node_id`` is the id
    the node at the other end writes into routes (defaults to ``public``, then
    ``peer``), which is what loop checks compare. ``public`` is the name other
    links are told instead of ``peer`` when ``peer`` must stay private (a hub's
    satellite peers end in their session ids): messages from the link are
    rewritten to it as they come in (:mod:`~hivemind_bus_client.protocol.router.names`).
    """

    peer: str
    kind: LinkKind = LinkKind.SATELLITE
    permissions: Permissions = field(default_factory=Permissions)
    site_id: str | None = None
    session_id: str | None = None
    pubkey: str | None = None
    #: The link is a relay hub (it announced itself as one in its HELLO), so
    #: site-targeted broadcasts pass through it.
    is_hub: bool = False
    #: Origination attempts refused so far.
    violations: int = 0
    #: Route id of the node at the other end, when it differs from ``peer``.
    node_id: str | None = None
    #: The operator trusts this link: inner BUS of its PROPAGATEs is injected.
    trusted: bool = False
    #: PING floods this link may still start (see ``Router.ping_rate``);
    #: created by the router on the link's first PING.
    ping_bucket: PingBucket | None = field(default=None, repr=False)
    #: The name other links see for this one (None: ``peer`` is not private).
    public: str | None = None

    @property
    def ident(self) -> str:
        """The id this link's node uses in routes (and others are told it has)."""
        return self.node_id or self.public or self.peer


@dataclass(frozen=True, slots=True)
class Deliver:
    """Handle ``message`` at this node; ``origin`` is the link it came from.

    ``via`` is the transport type that carried it here (None for a message that
    came as itself); ``sender`` the trusted alias that signed an INTERCOM.
    """

    message: HiveMessage
    origin: str | None
    via: HiveMessageType | None = None
    sender: str | None = None


@dataclass(frozen=True, slots=True)
class Send:
    """Write ``message`` to the link ``peer``."""

    peer: str
    message: HiveMessage


@dataclass(frozen=True, slots=True)
class Deny:
    """Refuse a message from ``peer``: answer, count, and close with 4003 when ``close``."""

    peer: str
    denied_type: str
    code: str
    reason: str
    close: bool = False


@dataclass(frozen=True, slots=True)
class Drop:
    """Discard a message (already counted and logged by the router)."""

    reason: str
    peer: str | None = None


@dataclass(frozen=True, slots=True)
class AskLocal:
    """Ask the local agent to answer ``message`` before ``deadline``.

    ``kind`` says whether it is the inner request of a QUERY or a CASCADE;
    ``origin`` the link the request came from (None when this node originated
    it). Answer with ``Router.local_answer``, decline with ``Router.local_decline``.
    """

    query_id: str
    message: HiveMessage
    deadline: float
    kind: RequestKind = RequestKind.QUERY
    origin: str | None = None


Action = Deliver | Send | Deny | Drop | AskLocal


def denial_message(deny: Deny, source: str = "hivemind-core") -> HiveMessage:
    """The BUS ``hive.policy.denied`` message that tells a client what was refused."""
    return HiveMessage(
        T.BUS,
        Message(
            "hive.policy.denied",
            {"denied_type": deny.denied_type, "code": deny.code, "reason": deny.reason},
            {"source": source, "destination": deny.peer},
        ),
    )


class NodeHost(Protocol):
    """What a service that drives a ``Router`` must do (a hub node, a client engine).

    Besides the two methods below, the host:

    * passes its loop time as ``now`` to ``handle``, ``originate``,
      ``local_answer``, ``local_decline`` and ``handle_timer`` (the router
      reads no clock);
    * executes the actions ``Router.remove_link`` returns when a link goes
      (QUERYs waiting on a lost master are answered ``hive.query.timeout``);
    * sets ``Link.node_id`` to the id the peer stamps into routes when it
      differs from the peer string, ``Link.is_hub`` for relay hubs, and
      ``Link.trusted`` (or the router's ``trusted_keys``) for trust;
    * gives the router its ``private_key`` so INTERCOM meant for this node
      can be opened.
    """

    def execute(self, actions: Iterable[Action]) -> None:
        """Carry out router actions in order.

        ``Deliver``: handle the message at this node. BUS goes to the agent
        (``origin`` is the link it came from, ``via`` the transport that
        carried it, ``sender`` the trusted alias that signed an INTERCOM);
        SHARED_BUS to observers; BINARY to the binary handler; a PING
        (``via`` PROPAGATE) is informational; a PONG or a QUERY/CASCADE
        response answers a request this node originated, so it goes to
        whoever asked. ``Send``: encode the message on link ``peer`` and write
        it. ``Deny``: answer ``peer`` with :func:`denial_message`, then close
        that link with 4003 when ``close`` is set. ``Drop``: nothing to do
        (already counted and logged). ``AskLocal``: ask the local agent; call
        ``Router.local_answer`` or ``Router.local_decline`` with its verdict,
        or do nothing and let the deadline fall back.
        """
        ...

    def arm_router_timer(self, deadline: float | None) -> None:
        """Keep one timer at ``deadline`` (``Router.get_timer()``, re-read after
        every batch of actions); when it fires, execute ``Router.handle_timer(now)``.
        """
        ...
