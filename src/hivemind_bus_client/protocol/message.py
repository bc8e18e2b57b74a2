"""HiveMessage: the unit every HiveMind link carries.

A HiveMessage has a routing type (:class:`HiveMessageType`) and a payload
whose shape depends on that type:

* BUS and SHARED_BUS carry an OVOS ``Message`` (``{type, data, context}`` on the wire);
* the transport types (BROADCAST, PROPAGATE, ESCALATE, QUERY, CASCADE) carry a
  nested HiveMessage;
* BINARY carries raw bytes plus a 4-bit :class:`HiveMindBinaryPayloadType`;
* every other type carries a JSON object.

The JSON form (protocol v0, also the plaintext of every encrypted text frame)
has exactly eight keys in a fixed order, ``msg_type, payload, metadata, route,
node, target_site_id, target_pubkey, source_peer``, and is byte-compatible
with the reference client 0.4.4. The binary form (protocol v1) lives in
:mod:`hivemind_bus_client.protocol.serialization`; the type enums in
:mod:`hivemind_bus_client.protocol.msgtypes` (re-exported here).
"""

from __future__ import annotations

import json
from typing import Any

from ovos_bus_client.message import Message

from hivemind_bus_client.exceptions import InvalidMessage
from hivemind_bus_client.protocol.limits import short_repr
from hivemind_bus_client.protocol.msgtypes import (
    OVOS_TYPES,
    TRANSPORT_TYPES,
    HiveMessageType,
    HiveMindBinaryPayloadType,
)

__all__ = [
    "OVOS_TYPES",
    "TRANSPORT_TYPES",
    "HiveMessage",
    "HiveMessageType",
    "HiveMindBinaryPayloadType",
    "dumps_unicode",
]


_OVOS_TYPES = OVOS_TYPES

#: ``json.dumps(x, ensure_ascii=False)`` builds a new encoder on every call;
#: one shared encoder writes the same text in about half the time.
dumps_unicode = json.JSONEncoder(ensure_ascii=False).encode
_dumps_unicode = dumps_unicode
_BY_VALUE: dict[str, HiveMessageType] = {m.value: m for m in HiveMessageType}


def _message_type(value: Any) -> HiveMessageType:
    if isinstance(value, HiveMessageType):
        return value
    try:
        return _BY_VALUE[value]
    except (KeyError, TypeError):
        raise InvalidMessage(f"Unknown HiveMessage.msg_type: {short_repr(value)}") from None


def ovos_to_dict(message: Message) -> dict[str, Any]:
    """The wire dict of an OVOS Message: ``{type, data, context}``."""
    return {"type": message.msg_type, "data": message.data, "context": message.context}


def dict_to_ovos(data: dict[str, Any]) -> Message:
    """Build an OVOS Message from its wire dict."""
    return Message(data.get("type", ""), data.get("data") or {}, data.get("context") or {})


class HiveMessage:
    """A HiveMind protocol message.

    Args:
        msg_type: a :class:`HiveMessageType` or its wire string.
        payload: an OVOS ``Message`` or its dict (BUS, SHARED_BUS); a HiveMessage or
            its dict (transport types); ``bytes`` (BINARY); a dict or JSON text otherwise.
        node: id of the node that created the message (informational).
        source_peer: peer string of the link the message came from; hubs stamp it.
        route: hops travelled, a list of ``{"source": peer, "targets": [peers]}``.
        target_peers: peers this message is meant for (not serialized).
        target_site_id: only nodes of this site should act on a BROADCAST.
        target_pubkey: public key of the INTERCOM recipient.
        bin_type: what a BINARY payload is.
        metadata: free-form dict; travels in the binary frame header (max 255 bytes there).

    Raises:
        InvalidMessage: unknown type, wrong payload for the type, or ``bin_type``
            on a non-BINARY message. (``InvalidMessage`` is a ``ValueError``.)
    """

    __slots__ = (
        "_msg_type",
        "_payload",
        "bin_type",
        "metadata",
        "node",
        "route",
        "source_peer",
        "target_peers",
        "target_pubkey",
        "target_site_id",
    )

    def __init__(
        self,
        msg_type: HiveMessageType | str,
        payload: Any = None,
        node: str | None = None,
        source_peer: str | None = None,
        route: list[dict[str, Any]] | None = None,
        target_peers: list[str] | None = None,
        target_site_id: str | None = None,
        target_pubkey: str | None = None,
        bin_type: HiveMindBinaryPayloadType | int = HiveMindBinaryPayloadType.UNDEFINED,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        mtype = _message_type(msg_type)
        self._msg_type = mtype
        if mtype is HiveMessageType.BINARY:
            if isinstance(payload, (bytearray, memoryview)):
                payload = bytes(payload)
            if not isinstance(payload, bytes):
                raise InvalidMessage("a BINARY HiveMessage needs a bytes payload")
            try:
                self.bin_type = HiveMindBinaryPayloadType(bin_type)
            except ValueError:
                if not isinstance(bin_type, int) or not 0 <= bin_type <= 15:
                    raise InvalidMessage(f"bin_type out of range: {short_repr(bin_type)}") from None
                self.bin_type = bin_type  # type: ignore[assignment]
        else:
            if bin_type:
                raise InvalidMessage("bin_type is only valid for BINARY messages")
            self.bin_type = HiveMindBinaryPayloadType.UNDEFINED
            payload = self._normalise(mtype, payload)
        self._payload = payload
        self.node = node
        self.source_peer = source_peer
        self.route: list[dict[str, Any]] = route if route is not None else []
        self.target_peers: list[str] = target_peers if target_peers is not None else []
        self.target_site_id = target_site_id
        self.target_pubkey = target_pubkey
        if metadata is not None and not isinstance(metadata, dict):
            raise InvalidMessage("metadata must be a dict")
        self.metadata: dict[str, Any] = metadata if metadata is not None else {}

    @staticmethod
    def _normalise(mtype: HiveMessageType, payload: Any) -> Any:
        if isinstance(payload, (str, bytes, bytearray)):
            if not payload:
                return {}
            try:
                payload = json.loads(payload)
            except ValueError as exc:
                raise InvalidMessage(f"payload is not JSON: {exc}") from None
            except RecursionError:
                raise InvalidMessage("payload is nested too deeply") from None
        if not payload:
            return {}
        if isinstance(payload, Message):
            if mtype in TRANSPORT_TYPES:
                # A transport carrying an OVOS message wraps it as BUS (what the
                # reference CLI's escalate/propagate commands effectively send).
                return HiveMessage(HiveMessageType.BUS, payload)
            return payload
        if isinstance(payload, HiveMessage):
            return payload
        if not isinstance(payload, dict):
            raise InvalidMessage(f"unsupported payload type for {mtype.value}: {type(payload)}")
        return payload

    # -- typed views -------------------------------------------------------

    @property
    def msg_type(self) -> HiveMessageType:
        """The routing type."""
        return self._msg_type

    @property
    def payload(self) -> Any:
        """The payload as its type wants it.

        An OVOS ``Message`` for BUS/SHARED_BUS, a nested :class:`HiveMessage`
        for transport types, ``bytes`` for BINARY, a dict otherwise. The view is
        built once, so changes made to it are kept.
        """
        p = self._payload
        mtype = self._msg_type
        if mtype in _OVOS_TYPES and isinstance(p, dict):
            p = self._payload = dict_to_ovos(p)
        elif mtype in TRANSPORT_TYPES and isinstance(p, dict) and "msg_type" in p:
            p = self._payload = HiveMessage.from_dict(p)
        return p

    @payload.setter
    def payload(self, value: Any) -> None:
        if self._msg_type is HiveMessageType.BINARY:
            if not isinstance(value, (bytes, bytearray)):
                raise InvalidMessage("a BINARY HiveMessage needs a bytes payload")
            self._payload = bytes(value)
        else:
            self._payload = self._normalise(self._msg_type, value)

    @property
    def raw_payload(self) -> Any:
        """The payload as stored, without building a view.

        The wire dict for a received message whose :attr:`payload` was never
        asked for, else what :attr:`payload` returned. Routing code reads it to
        look at a type without converting the message.
        """
        return self._payload

    @property
    def target_public_key(self) -> str | None:
        """Alias of ``target_pubkey`` (the reference client's property name)."""
        return self.target_pubkey

    @property
    def node_id(self) -> str | None:
        """Alias of ``node``."""
        return self.node

    # -- dict / JSON form --------------------------------------------------

    def payload_dict(self) -> Any:
        """The payload as plain JSON-ready data (dicts all the way down)."""
        p = self._payload
        if isinstance(p, dict):
            return p
        if isinstance(p, Message):
            return ovos_to_dict(p)
        if isinstance(p, HiveMessage):
            return p.as_dict
        raise InvalidMessage("a BINARY payload has no JSON form")

    @property
    def as_dict(self) -> dict[str, Any]:
        """The JSON envelope as a dict, keys in wire order.

        Raises:
            InvalidMessage: for BINARY, which only has a binary form.
        """
        return {
            "msg_type": self._msg_type.value,
            "payload": self.payload_dict(),
            "metadata": self.metadata,
            "route": self.route,
            "node": self.node,
            "target_site_id": self.target_site_id,
            "target_pubkey": self.target_pubkey,
            "source_peer": self.source_peer,
        }

    @property
    def as_json(self) -> str:
        """The JSON envelope as text (``ensure_ascii=False``, as the reference)."""
        return _dumps_unicode(self.as_dict)

    def serialize(self) -> str:
        """The protocol v0 JSON text of this message."""
        return _dumps_unicode(self.as_dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HiveMessage:
        """Build from a JSON envelope dict, keeping every envelope key.

        Raises:
            InvalidMessage: when the dict is not a valid envelope.
        """
        if not isinstance(data, dict):
            raise InvalidMessage("a HiveMessage envelope must be a JSON object")
        route = data.get("route")
        metadata = data.get("metadata")
        if route is not None and not isinstance(route, list):
            raise InvalidMessage("route must be a list")
        if metadata is not None and not isinstance(metadata, dict):
            raise InvalidMessage("metadata must be an object")
        for key in ("node", "source_peer", "target_site_id", "target_pubkey"):
            value = data.get(key)
            if value is not None and not isinstance(value, str):
                raise InvalidMessage(f"{key} must be a string")
        mtype = _message_type(data.get("msg_type"))
        if mtype is HiveMessageType.BINARY:
            raise InvalidMessage("a BINARY message cannot travel as JSON")
        return cls(
            mtype,
            payload=data.get("payload"),
            node=data.get("node"),
            source_peer=data.get("source_peer"),
            route=route,
            target_site_id=data.get("target_site_id"),
            target_pubkey=data.get("target_pubkey"),
            metadata=metadata,
        )

    @staticmethod
    def deserialize(data: str | bytes | dict[str, Any]) -> HiveMessage:
        """Parse JSON text or a dict.

        A dict with ``msg_type`` is an envelope; one with ``type`` is a bare OVOS
        message (wrapped as BUS); anything else becomes a THIRDPRTY payload.

        Raises:
            DecodingError: text that is not JSON.
            InvalidMessage: JSON that is not a valid message.
        """
        if isinstance(data, (str, bytes, bytearray)):
            try:
                data = json.loads(data)
            except (ValueError, UnicodeDecodeError) as exc:
                raise InvalidMessage(f"not JSON: {exc}") from None
            except RecursionError:
                raise InvalidMessage("JSON nested too deeply") from None
        if not isinstance(data, dict):
            raise InvalidMessage("a HiveMessage must be a JSON object")
        if "msg_type" in data:
            return HiveMessage.from_dict(data)
        if "type" in data:
            return HiveMessage(HiveMessageType.BUS, payload=data)
        return HiveMessage(HiveMessageType.THIRDPRTY, payload=data)

    # -- helpers used by routers ------------------------------------------

    def __getitem__(self, key: str) -> Any:
        p = self._payload
        if not isinstance(p, dict):
            raise TypeError(f"{self._msg_type.value} payload is not a dict")
        return p[key]

    def __setitem__(self, key: str, value: Any) -> None:
        p = self._payload
        if not isinstance(p, dict):
            raise TypeError(f"{self._msg_type.value} payload is not a dict")
        p[key] = value

    def update_hop_data(self, data: dict[str, Any] | None = None, **kwargs: Any) -> None:
        """Append a hop to ``route`` unless the last hop already has the same source."""
        hop = data if data is not None else kwargs
        if not hop:
            return
        if self.route and self.route[-1].get("source") == hop.get("source"):
            return
        self.route.append(hop)

    def replace_route(self, route: list[dict[str, Any]]) -> None:
        """Replace the whole route."""
        self.route = route

    def update_source_peer(self, peer: str) -> HiveMessage:
        """Set ``source_peer`` and return self."""
        self.source_peer = peer
        return self

    def add_target_peer(self, peer: str) -> None:
        """Add a peer to ``target_peers`` once."""
        if peer not in self.target_peers:
            self.target_peers.append(peer)

    def remove_target_peer(self, peer: str) -> None:
        """Remove a peer from ``target_peers`` if present."""
        if peer in self.target_peers:
            self.target_peers.remove(peer)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HiveMessage):
            return NotImplemented
        if self._msg_type is HiveMessageType.BINARY or other._msg_type is HiveMessageType.BINARY:
            return (
                self._msg_type == other._msg_type
                and self._payload == other._payload
                and int(self.bin_type) == int(other.bin_type)
                and self.metadata == other.metadata
            )
        return self.as_dict == other.as_dict

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        if self._msg_type is HiveMessageType.BINARY:
            return f"HiveMessage(BINARY:{len(self._payload)}, bin_type={int(self.bin_type)})"
        return f"HiveMessage({self.serialize()})"

    def __str__(self) -> str:
        if self._msg_type is HiveMessageType.BINARY:
            return f"HiveMessage(BINARY:{len(self._payload)})"
        return self.serialize()
