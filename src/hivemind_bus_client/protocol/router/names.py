"""How a link's private names are kept from the other links: one rewrite of what it sends.

A hub knows each satellite by a peer string that ends in the satellite's
OVOS session id (``useragent::client_id::name::session_id``), and a client of
ours names itself by that same string in the routes it stamps, the PINGs it
starts and the PONGs it answers. Floods carry all of that to every other
node. A link with a :attr:`~hivemind_bus_client.protocol.router.actions.Link.public`
name is therefore rewritten as its message comes in (:func:`conceal`): every
string that is its peer becomes its public name, and its session id, where
an id is expected, becomes its public name too. Everything the router then
writes about the link (route targets, ``source_peer``, ``originator_peer``,
``responder_peer``) uses :attr:`Link.ident`, which is the public name for
such a link, so what the router passes on names no session.
"""

from __future__ import annotations

from typing import Any

from ovos_bus_client.message import Message

from hivemind_bus_client.protocol.message import HiveMessage, HiveMessageType
from hivemind_bus_client.protocol.router.actions import Link

__all__ = ["CONCEALED", "ID_KEYS", "conceal", "name_inbound"]

T = HiveMessageType

#: Message types rewritten on the way in: every type a node passes on to others.
CONCEALED = frozenset({T.BROADCAST, T.PROPAGATE, T.ESCALATE, T.QUERY, T.CASCADE, T.PING, T.PONG})

#: Keys whose value (or list items) are ids of a node, peer or session.
ID_KEYS = frozenset(
    {
        "session_id",
        "source",
        "targets",
        "node",
        "peer",
        "destination",
        "originator_peer",
        "responder_peer",
        "source_peer",
        "target_peers",
    }
)

_MAX_DEPTH = 64


class _Renamer:
    """One link's names and what they become."""

    __slots__ = ("peer", "public", "session_id")

    def __init__(self, peer: str, public: str, session_id: str | None) -> None:
        self.peer = peer
        self.public = public
        self.session_id = session_id or None

    def new(self, value: Any, is_id: bool, depth: int) -> Any:
        """``value`` renamed (strings), or rewritten in place (dicts, lists)."""
        if isinstance(value, str):
            if value == self.peer or (is_id and value == self.session_id):
                return self.public
        elif depth > _MAX_DEPTH:
            pass
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(item, (str, dict, list)):
                    value[key] = self.new(item, key in ID_KEYS, depth + 1)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, (str, dict, list)):
                    value[i] = self.new(item, is_id, depth + 1)
        return value

    def message(self, msg: HiveMessage, depth: int) -> None:
        if depth > _MAX_DEPTH:
            return
        msg.node = self.new(msg.node, True, 0)
        msg.source_peer = self.new(msg.source_peer, True, 0)
        self.new(msg.route, True, 0)
        self.new(msg.target_peers, True, 0)
        self.new(msg.metadata, False, 0)
        raw = msg.raw_payload
        if isinstance(raw, HiveMessage):
            self.message(raw, depth + 1)
        elif isinstance(raw, Message):
            self.new(raw.data, False, 0)
            self.new(raw.context, False, 0)
        elif isinstance(raw, dict):
            self.new(raw, False, 0)


def conceal(msg: HiveMessage, peer: str, public: str, session_id: str | None = None) -> None:
    """Rewrite, in place, every mention of link ``peer`` in ``msg`` to ``public``.

    Mentions are strings equal to ``peer`` anywhere in the message (envelope,
    metadata, nested messages, OVOS data and context), and strings equal to
    ``session_id`` under an id key (:data:`ID_KEYS`: route hops, ``node``,
    ``peer``, ``session_id`` ...). BINARY payloads and sealed INTERCOM
    ciphertext are left alone (the latter is opaque to everyone but its
    recipient).
    """
    if msg.msg_type is T.BINARY:
        return
    _Renamer(peer, public, session_id).message(msg, 0)


def name_inbound(link: Link, message: HiveMessage) -> None:
    """Stamp ``source_peer`` on a message that arrived on ``link``, concealing what is private.

    ``source_peer`` is the name others are told for the link: its public
    name when it has one (then the message, if it is of a type passed on to
    others, is rewritten by :func:`conceal` first), else its peer.
    """
    public = link.public
    if public is None:
        message.source_peer = link.peer
        return
    if message.msg_type in CONCEALED:
        conceal(message, link.peer, public, link.session_id)
    message.source_peer = public
