"""Shared helpers for the mesh tests."""

from __future__ import annotations

from ovos_bus_client.message import Message

from hivemind_bus_client.message import HiveMessage, HiveMessageType

T = HiveMessageType


def bus(msg_type: str = "hello", **data: object) -> HiveMessage:
    """A BUS message carrying one OVOS message."""
    return HiveMessage(T.BUS, Message(msg_type, dict(data), {}))


def wrap(kind: HiveMessageType, inner: HiveMessage, **kw: object) -> HiveMessage:
    """A transport message around ``inner``."""
    return HiveMessage(kind, inner, **kw)  # type: ignore[arg-type]
