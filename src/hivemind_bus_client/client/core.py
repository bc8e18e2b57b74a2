"""What the sync and the asyncio client share: settings, handlers, and every request.

:class:`ClientCore` (on top of the settings, handlers and node of
:class:`~hivemind_bus_client.client.base.ClientBase`) writes each request
(``wait_for_message``, ``wait_for_mycroft``, ``wait_for_payload``,
``wait_for_response``, ``wait_for_payload_response``, ``query``, ``cascade``,
``ping``) once, as a :class:`Request`: what to send, and which message answers.
The faces differ only in how they wait: each implements :meth:`ClientCore._wait`,
:meth:`ClientCore._gather` and :meth:`ClientCore._flood` (the sync face blocks
on its I/O thread, the asyncio face awaits), and ``emit``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ovos_bus_client.message import Message

from hivemind_bus_client.client.base import ClientBase
from hivemind_bus_client.client.handlers import hive_type
from hivemind_bus_client.client.shaping import BinaryDataCallbacks, prepare, wrap_request
from hivemind_bus_client.protocol.cascade import CascadeResult, is_response, query_id_of
from hivemind_bus_client.protocol.message import (
    HiveMessage,
    HiveMessageType,
    HiveMindBinaryPayloadType,
)

__all__ = ["DEFAULT_WAIT", "BinaryDataCallbacks", "ClientCore", "Request"]

LOG = logging.getLogger(__name__)

_T = HiveMessageType
#: Seconds the ``wait_for_*`` methods wait by default.
DEFAULT_WAIT = 3.0


@dataclass
class Request:
    """One request: the message that answers it, and what to send first.

    ``send`` is emitted as it is; ``originate`` goes through the node's router
    first (QUERY: bound to its answer). ``unwrap`` returns the answer's payload
    (the OVOS message of a BUS answer) instead of the HiveMessage.
    """

    msg_type: HiveMessageType
    payload_type: str | None = None
    predicate: Callable[[HiveMessage], bool] | None = None
    send: HiveMessage | None = None
    originate: HiveMessage | None = None
    unwrap: bool = False

    def result(self, msg: HiveMessage | None) -> Any:
        """What the caller gets for the answer ``msg`` (None: timed out)."""
        if msg is None:
            return None
        return msg.payload if self.unwrap else msg


class ClientCore(ClientBase):
    """Message shaping and the requests of both client faces (see the module docstring).

    Not public: use :class:`~hivemind_bus_client.client.sync.HiveMessageBusClient`
    or :class:`~hivemind_bus_client.client.asyncio.AsyncHiveMessageBusClient`.
    """

    # -- sending (the faces implement emit) ----------------------------------------------

    def prepare(
        self,
        message: HiveMessage | Message,
        binary_type: HiveMindBinaryPayloadType | int = HiveMindBinaryPayloadType.UNDEFINED,
    ) -> HiveMessage:
        """The HiveMessage :meth:`emit` sends: OVOS messages wrapped as BUS, contexts filled."""
        return prepare(message, self.config, binary_type)

    def emit(self, message: HiveMessage | Message, binary_type: Any = 0) -> Any:
        raise NotImplementedError  # pragma: no cover - each face sends its own way

    def emit_mycroft(self, message: Message) -> Any:
        """Send an OVOS message to the hub's bus (as BUS)."""
        return self.emit(HiveMessage(_T.BUS, message))

    def emit_intercom(self, message: HiveMessage | Message, pubkey: str) -> Any:
        """Send ``message`` end-to-end encrypted to the node owning ``pubkey`` (INTERCOM)."""
        return self.emit(self._node.make_intercom(self.prepare(message), pubkey))

    async def _send_originated(self, message: HiveMessage) -> None:
        """On the loop: route a request through the node's router and send it."""
        await self._engine.wait_ready(self.config.send_timeout)
        for out in self._node.originate(message):
            await self._engine.send(out)

    async def _start_ping(self, flood: list[str]) -> None:
        """On the loop: start a PING flood; its id goes into ``flood`` before it is sent."""
        await self._engine.wait_ready(self.config.send_timeout)
        flood_id, out = self._node.ping()
        flood.append(flood_id)
        for msg in out:
            await self._engine.send(msg)

    # -- requests, written once (the faces implement _wait, _gather and _flood) ---------

    def _wait(self, request: Request, timeout: float) -> Any:
        raise NotImplementedError  # pragma: no cover

    def _gather(self, qid: str, request: HiveMessage, window: float, expected: int | None) -> Any:
        raise NotImplementedError  # pragma: no cover

    def _flood(self, timeout: float) -> Any:
        raise NotImplementedError  # pragma: no cover

    def wait_for_message(
        self, message_type: HiveMessageType | str, timeout: float = DEFAULT_WAIT
    ) -> Any:
        """The next hive message of ``message_type`` (or, for an OVOS type, the next
        BUS message of that type as an OVOS Message); ``None`` on timeout."""
        htype = hive_type(message_type)
        if htype is None:
            return self.wait_for_mycroft(str(message_type), timeout)
        return self._wait(Request(htype), timeout)

    def wait_for_mycroft(self, mycroft_msg_type: str, timeout: float = DEFAULT_WAIT) -> Any:
        """The next BUS message of OVOS type ``mycroft_msg_type``; ``None`` on timeout."""
        return self._wait(Request(_T.BUS, mycroft_msg_type, unwrap=True), timeout)

    def wait_for_payload(
        self,
        payload_type: str,
        message_type: HiveMessageType | str = _T.THIRDPRTY,
        timeout: float = DEFAULT_WAIT,
    ) -> Any:
        """The next ``message_type`` message whose payload type is ``payload_type``."""
        htype = hive_type(message_type) or _T.THIRDPRTY
        return self._wait(Request(htype, payload_type), timeout)

    def wait_for_response(
        self,
        message: HiveMessage | Message,
        reply_type: str | None = None,
        timeout: float = DEFAULT_WAIT,
    ) -> Any:
        """Send ``message`` and return the reply, or ``None`` after ``timeout`` seconds.

        For an OVOS message (or a BUS HiveMessage) the reply is the next BUS
        message whose OVOS type is ``reply_type`` (default: the message's own
        type). For another HiveMessage it is the next message of that hive type
        (or of ``reply_type``, a hive type).
        """
        msg = self.prepare(message)
        if msg.msg_type is _T.BUS:
            inner = msg.payload
            ptype = reply_type or (inner.msg_type if isinstance(inner, Message) else None)
            return self._wait(Request(_T.BUS, ptype, send=msg), timeout)
        htype = (hive_type(reply_type) if reply_type else None) or msg.msg_type
        return self._wait(Request(htype, send=msg), timeout)

    def wait_for_payload_response(
        self,
        message: HiveMessage | Message,
        payload_type: str,
        reply_type: HiveMessageType | str | None = None,
        timeout: float = DEFAULT_WAIT,
    ) -> Any:
        """Send ``message`` and return the next ``reply_type`` message (default: the
        message's hive type) whose payload type is ``payload_type``."""
        msg = self.prepare(message)
        htype = (hive_type(reply_type) if reply_type else None) or msg.msg_type
        return self._wait(Request(htype, payload_type, send=msg), timeout)

    def query(self, message: HiveMessage | Message, timeout: float = 10.0) -> Any:
        """Send a QUERY wrapping ``message``; the first answer, or ``None`` on timeout."""
        qid, request = wrap_request(_T.QUERY, self.prepare(message))

        def answers(m: HiveMessage) -> bool:
            return is_response(m) and query_id_of(m) == qid

        return self._wait(Request(_T.QUERY, predicate=answers, originate=request), timeout)

    def cascade(
        self,
        message: HiveMessage | Message,
        timeout: float | None = None,
        expected: int | None = None,
    ) -> Any:
        """Send a CASCADE wrapping ``message`` and gather the answers (a CascadeResult).

        Returns after ``timeout`` (default ``cascade_timeout``) or once
        ``expected`` nodes answered; ``selected`` is what
        ``protocol.cascade_select_callback`` chose.
        """
        qid, request = wrap_request(_T.CASCADE, self.prepare(message))
        window = self._node.cascade_timeout if timeout is None else timeout
        return self._gather(qid, request, window, expected)

    def ping(self, timeout: float = 5.0) -> Any:
        """Flood a PING (inside PROPAGATE) and return the PONGs received within ``timeout``."""
        return self._flood(timeout)

    @staticmethod
    def _pong_collector(
        flood: list[str], pongs: list[HiveMessage]
    ) -> Callable[[HiveMessage], None]:
        """A PONG handler keeping the answers to the flood named in ``flood`` (once set)."""

        def collect(msg: HiveMessage) -> None:
            data = msg.payload if isinstance(msg.payload, dict) else {}
            if flood and flood[0] in (data.get("ping_id"), data.get("flood_id")):
                msg.metadata.setdefault("received_at", time.time())
                pongs.append(msg)

        return collect

    @staticmethod
    def _no_answers(qid: str) -> CascadeResult:
        return CascadeResult(qid, [], None, False)
