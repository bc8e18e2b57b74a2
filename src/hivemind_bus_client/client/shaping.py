"""What the client does to a message before it leaves, and the built-in receivers.

Every BUS payload (also one nested in a transport message) gets ``source`` and
``platform`` (the user agent) and ``destination`` (``HiveMind``) when missing,
and ``session.session_id`` / ``session.site_id`` set to ours, so a hub never
sees the ``default`` session (docs/client.md, "Compared with the reference client").
"""

from __future__ import annotations

import logging

from ovos_bus_client.message import Message

from hivemind_bus_client.client.config import ClientConfig
from hivemind_bus_client.protocol.cascade import new_query_id, query_id_of
from hivemind_bus_client.protocol.message import (
    TRANSPORT_TYPES,
    HiveMessage,
    HiveMessageType,
    HiveMindBinaryPayloadType,
)

__all__ = ["BinaryDataCallbacks", "fill_context", "prepare", "wrap_request"]

LOG = logging.getLogger(__name__)
_T = HiveMessageType
_MAX_NESTING = 8


class BinaryDataCallbacks:
    """Receivers for binary payloads the hub sends (override the methods you need).

    The default implementation logs and ignores, as the reference does.
    """

    def handle_receive_tts(
        self, bin_data: bytes, utterance: str, lang: str, file_name: str
    ) -> None:
        """Synthesized speech for ``utterance`` (``TTS_AUDIO``)."""
        LOG.warning("TTS audio for %r received and ignored (%d bytes)", utterance, len(bin_data))

    def handle_receive_file(self, bin_data: bytes, file_name: str) -> None:
        """A file pushed by the hub (``FILE``)."""
        LOG.warning("file %r received and ignored (%d bytes)", file_name, len(bin_data))


def prepare(
    message: HiveMessage | Message,
    config: ClientConfig,
    binary_type: HiveMindBinaryPayloadType | int = HiveMindBinaryPayloadType.UNDEFINED,
) -> HiveMessage:
    """The HiveMessage ``emit`` sends: OVOS messages wrapped as BUS, contexts filled."""
    if isinstance(message, Message):
        message = HiveMessage(_T.BUS, message)
    if not isinstance(message, HiveMessage):
        raise TypeError(f"emit takes a HiveMessage or an OVOS Message, not {type(message)}")
    if message.msg_type is _T.BINARY and binary_type:
        message.bin_type = HiveMindBinaryPayloadType(int(binary_type))
    fill_context(message, config)
    return message


def fill_context(msg: HiveMessage, config: ClientConfig, depth: int = 0) -> None:
    """Stamp our source, platform, destination and session on every BUS payload in ``msg``."""
    if depth > _MAX_NESTING:
        return
    if msg.msg_type in (_T.BUS, _T.SHARED_BUS):
        payload = msg.payload
        if isinstance(payload, Message):
            ctx = payload.context
            if ctx is None:
                ctx = payload.context = {}
            ua = config.useragent
            ctx.setdefault("source", ua)
            ctx.setdefault("platform", ua)
            ctx.setdefault("destination", "HiveMind")
            session = ctx.get("session")
            if not isinstance(session, dict):
                session = ctx["session"] = {}
            session["session_id"] = config.session_id
            session["site_id"] = config.site_id
    elif msg.msg_type in TRANSPORT_TYPES:
        inner = msg.payload
        if isinstance(inner, HiveMessage):
            fill_context(inner, config, depth + 1)


def wrap_request(mtype: HiveMessageType, message: HiveMessage | Message) -> tuple[str, HiveMessage]:
    """``message`` as a ``mtype`` (QUERY or CASCADE) request with a query id: (id, request)."""
    if isinstance(message, Message):
        message = HiveMessage(_T.BUS, message)
    request = message if message.msg_type is mtype else HiveMessage(mtype, payload=message)
    qid = query_id_of(request) or new_query_id()
    request.metadata["query_id"] = qid
    return qid, request
