"""The states of a :class:`~hivemind_bus_client.protocol.connection.Connection`, in two tables.

``TRANSITIONS`` maps (state, trigger) to the next state: it is the only way a
connection's state changes. ``ACCEPTS`` maps (role, state) to the kinds of
message that may arrive; anything else is a protocol error. Both are read by
the connection and nothing else decides a transition.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["ACCEPTS", "TRANSITIONS", "Inbound", "Role", "State", "Trigger"]


class Role(Enum):
    """Which end of the link this connection is."""

    CLIENT = "client"
    HUB = "hub"


class State(Enum):
    """Link states; see the module docstring."""

    HANDSHAKING = "handshaking"
    READY = "ready"
    CLOSING = "closing"
    CLOSED = "closed"


class Trigger(Enum):
    """What can move a connection from one state to another."""

    KEYED = "keyed"  #: a key was agreed (again, for a re-handshake)
    CLOSE = "close"  #: this end asked to close, or a deadline passed
    FAULT = "fault"  #: the peer broke the protocol
    LOST = "lost"  #: the transport is gone


_H, _R, _CG, _CD = State.HANDSHAKING, State.READY, State.CLOSING, State.CLOSED

#: (state, trigger) -> next state. The only transitions there are: a pair not
#: listed leaves the state as it is (closing twice, a fault while closing).
TRANSITIONS: dict[tuple[State, Trigger], State] = {
    (_H, Trigger.KEYED): _R,
    (_R, Trigger.KEYED): _R,
    (_H, Trigger.CLOSE): _CG,
    (_R, Trigger.CLOSE): _CG,
    (_H, Trigger.FAULT): _CG,
    (_R, Trigger.FAULT): _CG,
    (_H, Trigger.LOST): _CD,
    (_R, Trigger.LOST): _CD,
    (_CG, Trigger.LOST): _CD,
    (_CD, Trigger.LOST): _CD,
}


class Inbound(Enum):
    """The kinds of message a peer can send, as the state machine sees them."""

    HANDSHAKE = "handshake"
    HELLO = "hello"
    APPLICATION = "application"


#: (role, state) -> what may arrive. Anything else is a ProtocolError; a
#: closing or closed connection reads nothing at all. A client may see the
#: hub's plaintext HELLO before the handshake; the hub reads the client's only
#: once keyed (it comes encrypted).
ACCEPTS: dict[tuple[Role, State], frozenset[Inbound]] = {
    (Role.HUB, _H): frozenset({Inbound.HANDSHAKE}),
    (Role.CLIENT, _H): frozenset({Inbound.HANDSHAKE, Inbound.HELLO}),
    (Role.HUB, _R): frozenset(Inbound),
    (Role.CLIENT, _R): frozenset(Inbound),
}
