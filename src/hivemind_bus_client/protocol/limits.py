"""The core's bounds on what a peer may make it inflate, parse or quote.

A frame's raw size is bounded by the connection's ``max_size``; these bounds
apply inside a frame, where a small frame could cost far more than its size:

* :data:`DEFAULT_MAX_INFLATED`: what a compressed binary frame may inflate to
  (metadata and payload together). zlib inflates up to about 1000 times, so
  a raw limit of 16 MiB alone would let a 16 KiB frame become 16 MiB of JSON,
  parsed and then forwarded. Only binarized links compress JSON; one that
  carries bigger JSON messages (base64 audio of more than about 20 s) raises
  ``max_inflated`` on both ends, or sends the audio as BINARY (never compressed).
* :data:`DEFAULT_MAX_HANDSHAKE_FRAME`: the largest frame read before the
  handshake completes (the opening's frames are a few KiB even with 8192-bit
  RSA keys); binary frames are refused unopened then.
* :data:`MAX_WRAP_DEPTH`: how many transport messages (PROPAGATE, ESCALATE,
  ...) may wrap one another. Code that walks a message recursively (routing,
  re-encoding) then stays far from Python's recursion limit.

:func:`short_repr` quotes peer input in error messages, bounded.
"""

from __future__ import annotations

from typing import Any

from hivemind_bus_client.exceptions import InvalidMessage
from hivemind_bus_client.protocol.msgtypes import TRANSPORT_TYPES

__all__ = [
    "DEFAULT_MAX_HANDSHAKE_FRAME",
    "DEFAULT_MAX_INFLATED",
    "DEFAULT_MAX_SIZE",
    "MAX_WRAP_DEPTH",
    "check_wrap_depth",
    "short_repr",
]

#: Default bound on one frame once the handshake is done (16 MiB, as websockets').
DEFAULT_MAX_SIZE = 16 * 1024 * 1024
#: Default bound on the inflated size of one compressed binary frame (1 MiB).
DEFAULT_MAX_INFLATED = 1024 * 1024
#: Default bound on one frame before the handshake completes (16 KiB).
DEFAULT_MAX_HANDSHAKE_FRAME = 16 * 1024
#: Transport messages nested deeper than this are refused (close 1002).
MAX_WRAP_DEPTH = 32

_TRANSPORT_WIRE = frozenset(t.value for t in TRANSPORT_TYPES)


def check_wrap_depth(msg_type: Any, payload: Any, limit: int = MAX_WRAP_DEPTH) -> None:
    """Refuse a message whose transport wrappers nest deeper than ``limit``.

    Walks the wire dicts (no message objects are built), so it costs one step
    per wrapper. A payload given as JSON text ends the walk: each level of
    JSON in a string doubles its escapes, so those cannot nest deep in a frame.

    Raises:
        InvalidMessage: more than ``limit`` wrappers.
    """
    depth = 0
    # HiveMessageType members hash as their names: compare wire strings.
    mtype = getattr(msg_type, "value", msg_type)
    while mtype in _TRANSPORT_WIRE and isinstance(payload, dict):
        inner = payload.get("msg_type")
        if not isinstance(inner, str):
            return
        depth += 1
        if depth > limit:
            raise InvalidMessage(f"transport messages nested deeper than {limit}")
        mtype, payload = inner, payload.get("payload")


def short_repr(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for error messages about peer input.

    A peer controls the values it sends; an error message quoting one whole
    could be megabytes, and would be logged.
    """
    if isinstance(value, (str, bytes)):
        value = value[:limit]
    elif isinstance(value, (dict, list)) and len(value) > 16:
        return f"<{type(value).__name__} of {len(value)} items>"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
