"""Sans-I/O routing core: who may send what, and where each message goes.

Theory of operation
-------------------
Every node of a hive (a top hub, a relay hub, a satellite) keeps one
:class:`Router`. Its links are :class:`Link` records of three kinds:

* ``LinkKind.SATELLITE``: a client connected to this node's listener, with the
  :class:`Permissions` of its client record. Everything it originates is checked.
* ``LinkKind.UPSTREAM``: this node's master (at most one is used for ESCALATE
  and QUERY). Messages from it are not permission-checked: we chose to connect.
* ``LinkKind.PEER``: a cross link to another node that is neither master nor
  satellite (a second outgoing connection, as in a mesh with cycles). Only
  floods (PROPAGATE, CASCADE, BROADCAST already travelling down) and the replies
  routed along them (PONG, CASCADE responses) use it; ESCALATE and QUERY never do.

For every message that arrives on a link the I/O layer calls
:meth:`Router.handle` with the current time, and carries out the returned
actions **in order**. The router never touches sockets, threads or clocks; its
only deadlines (QUERY/CASCADE local answers and binding lifetimes) are
published by :meth:`Router.get_timer` and applied by :meth:`Router.handle_timer`.

What the service driving the router does with each action, and what else it
owes the router, is :class:`~hivemind_bus_client.protocol.router.actions.NodeHost`.
The package is split by concern: ``actions`` (links, permissions, actions,
the host contract), ``floods`` (loop and duplicate protection), ``requests``
(QUERY/CASCADE bindings and their timers) and ``core`` (the :class:`Router`
and its dispatch table); PING/PONG formats are :mod:`hivemind_bus_client.protocol.ping`.


Routing rules (``docs/hub.md``, routing of each message type):

* BUS from a satellite: checked against ``allowed_types``, then delivered.
* ESCALATE goes up only: a relay forwards it to its master; the top node
  delivers the inner message. Needs ``can_escalate`` on a satellite link.
* BROADCAST goes down only: admins with ``can_broadcast`` and the master may
  send it; each node delivers it when ``target_site_id`` is unset or its own
  site, and sends it to its satellites (only those of ``target_site_id`` when
  set, plus relay hubs, which pass it on).
* PROPAGATE floods every direction. Needs ``can_propagate``.
* QUERY (request up, one answer down): needs ``can_escalate``. The node asks
  its local agent (``AskLocal``); on decline or timeout it forwards upstream;
  the top node with no answer replies ``hive.query.timeout``. The first answer
  wins and travels back along the bindings ``query_id -> link it came from``.
* CASCADE (scatter/gather): needs ``can_propagate``. Floods like PROPAGATE;
  every node asks its agent; every answer travels back along the bindings.
* PING travels inside PROPAGATE. Every node that sees a PING flood the first
  time answers a PONG carrying the route the PING travelled; PONGs go back
  along the flood's spanning tree (``flood_id -> link it came from``). Since
  one PING makes every node answer, a satellite link may start at most
  ``ping_rate`` PING floods a second (after a burst of ``ping_burst``); more
  are dropped and counted (``ping_rate_limited``).
* INTERCOM (see :mod:`hivemind_bus_client.protocol.intercom`) rides inside a transport.
  Each node it reaches tries to open it with its own key; the recipient
  delivers the inner message (ESCALATE stops there), the others pass it on
  unread. Tampered, unsigned or untrusted ones are dropped and counted.
* Trust: an inner BUS of a PROPAGATE is injected only when the link it came on
  is trusted (``Link.trusted``, or its ``pubkey`` in ``trusted_keys``); the
  flood itself still goes on.

Loops and duplicates: every transport hop appends
``{"source": node_id, "targets": [...]}`` to ``route``; a node never forwards a
"""

from hivemind_bus_client.protocol.router.actions import (
    Action,
    AskLocal,
    Deliver,
    Deny,
    Drop,
    Link,
    LinkKind,
    NodeHost,
    Permissions,
    RequestKind,
    Send,
    denial_message,
)
from hivemind_bus_client.protocol.router.bindings import TimerKind
from hivemind_bus_client.protocol.router.core import Router
from hivemind_bus_client.protocol.router.floods import FloodCache, bus_type

__all__ = [
    "Action",
    "AskLocal",
    "Deliver",
    "Deny",
    "Drop",
    "FloodCache",
    "Link",
    "LinkKind",
    "NodeHost",
    "Permissions",
    "RequestKind",
    "Router",
    "Send",
    "TimerKind",
    "bus_type",
    "denial_message",
]
