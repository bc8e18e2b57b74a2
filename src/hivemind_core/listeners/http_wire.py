"""The pieces of the HTTP polling listener that are not endpoints.

* :class:`PollChannel`: the channel under an HTTP satellite link. Frames for
  the satellite wait in two bounded queues (text and binary, drained by
  ``/get_messages`` and ``/get_binary_messages``); frames from it are fed by
  ``/send_message``, which waits (:meth:`PollChannel.settle`) until the link
  has handled them, so its answer can say whether the frame closed the link.
* :func:`parse_form`: the form body of a request, refused when it is not one.
* :class:`HTTPRefusal` and :func:`json_response`: every answer of the
  listener is a JSON object.
* :class:`HiveRequestHandler`: ``aiohttp``'s connection handler, answering
  its own parse errors as JSON too (431 for a header line over the limit).
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import HttpVersion11, RawRequestMessage
from aiohttp.http_exceptions import LineTooLong
from aiohttp.streams import StreamReader

from hivemind_bus_client.exceptions import CloseCode
from hivemind_bus_client.transport.channel import BoundedBacklog, ChannelClosed, Frame, QueueChannel

__all__ = [
    "MAX_FORM_FIELDS",
    "HTTPRefusal",
    "HiveRequestHandler",
    "HiveWebServer",
    "PollChannel",
    "json_response",
    "parse_form",
]

#: Most fields a form body may have.
MAX_FORM_FIELDS = 16


class HTTPRefusal(Exception):
    """A request answered with ``status`` and a JSON ``error``, then the TCP connection closes."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def json_response(
    status: int,
    payload: dict[str, Any],
    headers: dict[str, str] | None = None,
    *,
    close: bool = False,
) -> web.Response:
    """One JSON answer (``close``: end the TCP connection after it)."""
    response = web.Response(
        status=status,
        body=json.dumps(payload).encode("utf-8"),
        content_type="application/json",
        headers=headers,
    )
    response.headers["Server"] = "HiveMind"
    if close:
        response.force_close()
    return response


def parse_form(body: bytes, content_type: str) -> dict[str, str]:
    """Fields of a form-encoded body (first value of each); 400 when it is not one."""
    ctype = (content_type or "application/x-www-form-urlencoded").lower()
    if not ctype.startswith("application/x-www-form-urlencoded"):
        raise HTTPRefusal(400, "body must be application/x-www-form-urlencoded")
    try:
        text = body.decode("utf-8")
        fields = parse_qs(
            text, keep_blank_values=True, strict_parsing=False, max_num_fields=MAX_FORM_FIELDS
        )
    except (UnicodeDecodeError, ValueError):
        raise HTTPRefusal(400, "malformed form body") from None
    return {name: values[0] for name, values in fields.items() if values}


class PollChannel(QueueChannel):
    """The channel of one HTTP satellite (see the module docstring).

    Args:
        peer_address: where the satellite polls from.
        max_frames: frames queued for the satellite (text and binary together)
            before the link closes with ``TRY_AGAIN``.
        max_bytes: bytes queued (UTF-8 length of text frames) before the same close.
    """

    def __init__(
        self, peer_address: str, max_frames: int, max_bytes: int = 4 * 1024 * 1024
    ) -> None:
        super().__init__(peer_address)
        self.max_frames = max(1, max_frames)
        self.max_bytes = max(1, max_bytes)
        #: Bytes of the frames queued now.
        self.nbytes = 0
        self.text_out: deque[str] = deque()
        self.binary_out: deque[bytes] = deque()
        #: Loop time the link ended at (None while open).
        self.closed_at: float | None = None
        #: The link's secret (``/connect`` answers it; see :mod:`.http_guard`).
        self.secret = ""
        #: A request presented the secret / the handshake completed: both bind the link.
        self.claimed = False
        self.keyed = False
        self._fed = 0
        self._handled = 0
        self._taken = 0
        self._progress = asyncio.Event()

    def write_nowait(self, frame: Frame) -> None:
        """Queue a frame for the next poll (bounded)."""
        if self.closed:
            raise ChannelClosed(self.close_code or CloseCode.NORMAL, self.close_reason)
        size = BoundedBacklog.size_of(frame)
        queued = len(self.text_out) + len(self.binary_out)
        if queued >= self.max_frames or self.nbytes + size > self.max_bytes:
            self.text_out.clear()
            self.binary_out.clear()
            self.nbytes = 0
            self.close_nowait(CloseCode.TRY_AGAIN, "send queue overflow (client does not poll)")
            raise ChannelClosed(CloseCode.TRY_AGAIN, self.close_reason, by_peer=False)
        if isinstance(frame, str):
            self.text_out.append(frame)
        else:
            self.binary_out.append(bytes(frame))
        self.nbytes += size

    def drain_text(self) -> list[str]:
        """Every queued text frame, oldest first (the queue is emptied)."""
        out = list(self.text_out)
        self.text_out.clear()
        self.nbytes = sum(len(b) for b in self.binary_out)
        return out

    def drain_binary(self) -> list[bytes]:
        """Every queued binary frame, oldest first (the queue is emptied)."""
        out = list(self.binary_out)
        self.binary_out.clear()
        self.nbytes = sum(BoundedBacklog.size_of(t) for t in self.text_out)
        return out

    def feed(self, frame: Frame) -> None:
        """A frame from ``/send_message``."""
        self._fed += 1
        super().feed(frame)

    async def recv(self) -> Frame:
        # The link asks for the next frame: everything taken so far is handled.
        self._handled = self._taken
        self._progress.set()
        frame = await super().recv()
        self._taken += 1
        return frame

    async def settle(self) -> None:
        """Wait until every fed frame was handled, or the channel closed."""
        upto = self._fed
        while self._handled < upto and not self.closed:
            self._progress.clear()
            await self._progress.wait()

    def close_nowait(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        if not self.closed:
            self.closed_at = asyncio.get_running_loop().time()
        super().close_nowait(code, reason)
        self._progress.set()


class HiveRequestHandler(web.RequestHandler):
    """``aiohttp``'s per-connection handler, with the listener's JSON errors."""

    #: Called with each refused request (the listener counts them).
    on_bad_request: Any = None

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if isinstance(exc, LineTooLong):
            status, text = 431, "request headers too large"
        elif status == 500:
            text = "internal error"
        else:
            text = "malformed request"
        if self.on_bad_request is not None:
            self.on_bad_request(status)
        return json_response(status, {"error": text}, close=True)


class HiveWebServer(web.Server):
    """A low-level ``aiohttp`` server whose connections use :class:`HiveRequestHandler`."""

    def __init__(self, handler: Any, *, on_bad_request: Any = None, **kwargs: Any) -> None:
        super().__init__(handler, request_factory=self._request, **kwargs)
        self.on_bad_request = on_bad_request
        self.handler_options = kwargs

    def _request(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: web.RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        # A request that did not parse has no version of its own: answer in HTTP/1.1.
        if message.method == "UNKNOWN" and message.version < HttpVersion11:
            message = message._replace(version=HttpVersion11)
        return web.BaseRequest(message, payload, protocol, writer, task, asyncio.get_running_loop())

    def __call__(self) -> web.RequestHandler:
        options = {k: v for k, v in self.handler_options.items() if k != "loop"}
        handler = HiveRequestHandler(self, loop=asyncio.get_running_loop(), **options)
        handler.on_bad_request = self.on_bad_request
        return handler
