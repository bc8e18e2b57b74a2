"""The hub's HTTP polling listener, served by ``aiohttp`` (the wire of the reference's http plugin).

Theory of operation
-------------------
Five endpoints, each authenticated by ``?authorization=base64(ua:key)`` (also
accepted as a form field, as the reference's argument lookup does):

=============================  ==================================================
``POST /connect``              (re)create the link of this access key
``POST /send_message``         one frame from the client: form field ``message``
                               (text), or ``b64_message`` (binary, base64; ours)
``GET /get_messages``          drain the text frames queued for the client
``GET /get_binary_messages``   drain binary frames, base64, as ``b64_messages``
``POST /disconnect``           close the link
=============================  ==================================================

Links are keyed by access key, as in the reference: one
:class:`~hivemind_core.links.SatelliteLink` per key over a
:class:`~hivemind_core.listeners.http_wire.PollChannel`; a new ``/connect``
replaces the old link, unless a client bound it with its link secret
(:mod:`~hivemind_core.listeners.http_guard`: then only that client may poll,
post, disconnect or replace it). ``max_connections`` and
``max_connections_per_address`` cap the live links (503). The link is the
same class a websocket satellite gets: the node registers it, the permission
watcher can revoke it, the idle sweep closes it when it is not polled for
``idle_timeout`` seconds (1001), the failed-auth throttle is the hub's.

When the hub closes a link the link stays as a *tombstone* until the client
polls: the poll answers 409 with ``error``, the close ``code`` and ``reason``,
and the frames still queued (a denial sent just before the close), so the
client learns why. Tombstones are forgotten after ``idle_timeout``.

Limits: the request line and each header must fit in ``max_header_size``
bytes, and all headers together too (431); bodies need ``Content-Length`` (no
chunked encoding: 501) and may not exceed ``max_body_size`` (413). Every
answer is a JSON object; nothing a peer sends can raise out of the handler.
Status codes are listed in docs/hub.md ("HTTP polling wire").
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import ssl
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from hivemind_bus_client.exceptions import CloseCode
from hivemind_core.admission import Admitted, Refusal, parse_authorization, parse_token
from hivemind_core.links import SatelliteLink
from hivemind_core.listeners import Hub
from hivemind_core.listeners.http_guard import (
    LINK_SECRET_HEADER,
    guard,
    new_link_secret,
    not_connected,
    over_cap,
    poll_channel,
    refused,
)
from hivemind_core.listeners.http_wire import (
    HiveWebServer,
    HTTPRefusal,
    PollChannel,
    json_response,
    parse_form,
)

__all__ = ["HTTPListener", "start_http_listener"]

LOG = logging.getLogger(__name__)

_ROUTES = {
    "/connect": "POST",
    "/disconnect": "POST",
    "/send_message": "POST",
    "/get_messages": "GET",
    "/get_binary_messages": "GET",
}


class HTTPListener:
    """The HTTP polling front end of a hub.

    Args:
        server: the hub (node, admission, upkeep), e.g. a running ``HubServer``.
        host: address to bind.
        port: TCP port (0: any free port, see :attr:`port`).
        ssl_context: serve HTTPS with this context.
        idle_timeout: seconds without a poll before a link is closed (1001).
        max_header_size: bytes allowed for the request line, for each header,
            and for all headers together.
        max_body_size: bytes allowed for a body (default: room for one
            ``max_frame_size`` frame, form-encoded).
        read_timeout: seconds a client has to send a body once its request
            started; also aiohttp's keep-alive timeout, which bounds how long a
            connection may take to send a whole request head (on opening and
            after each answer), so a trickling client is cut off.
    """

    def __init__(
        self,
        server: Hub,
        host: str = "0.0.0.0",
        port: int = 5679,
        *,
        ssl_context: ssl.SSLContext | None = None,
        idle_timeout: float = 30.0,
        max_header_size: int = 16 * 1024,
        max_body_size: int | None = None,
        read_timeout: float = 30.0,
    ) -> None:
        self.hub = server
        self.node = server.node
        self.host = host
        self.requested_port = port
        self.ssl_context = ssl_context
        self.idle_timeout = idle_timeout
        self.max_header_size = max_header_size
        # Form encoding can triple a frame (percent escapes).
        self.max_body_size = max_body_size or 3 * self.node.config.max_frame_size + 1024
        self.read_timeout = read_timeout
        #: Bytes of body read before the access key is known (``http_preauth_body``).
        self.preauth_body = max(0, int(getattr(self.node.config, "http_preauth_body", 4096)))
        #: Links (live or tombstones) by access key.
        self.links: dict[str, SatelliteLink] = {}
        self._runner: web.ServerRunner | None = None

    # -- life cycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Bind and start serving; returns once the socket is bound."""
        server = HiveWebServer(
            self._handle,
            on_bad_request=self._bad_request,
            max_line_size=self.max_header_size,
            max_field_size=self.max_header_size,
            keepalive_timeout=self.read_timeout,
            access_log=None,
        )
        runner = web.ServerRunner(server, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.requested_port, ssl_context=self.ssl_context)
        await site.start()
        self._runner = runner
        upkeep = self.hub.upkeep
        if self.idle_timeout and self.idle_timeout > 0:
            upkeep.watch_idle(self.idle_timeout)
            upkeep.also(self._forget_tombstones)
        LOG.info(
            "HiveMind http listener on %s://%s:%d",
            "https" if self.ssl_context else "http",
            self.host,
            self.port,
        )

    @property
    def port(self) -> int:
        """The bound TCP port."""
        if self._runner is not None:
            for address in self._runner.addresses:
                return int(address[1])
        return self.requested_port

    async def close(self) -> None:
        """Stop listening and close every link (1001) and TCP connection."""
        for link in list(self.links.values()):
            await link.aclose(CloseCode.GOING_AWAY, "hub stopping")
        self.links.clear()
        runner, self._runner = self._runner, None
        if runner is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(runner.cleanup(), 5)

    # -- links ----------------------------------------------------------------------

    def _open(self, admitted: Admitted, address: str) -> SatelliteLink:
        node = self.node
        node.count("connections")
        node.count("http_connections")
        channel = PollChannel(address, node.config.send_queue, node.config.send_queue_bytes)
        channel.secret = new_link_secret()
        link = SatelliteLink(
            node,
            self.hub.admission,
            channel,
            admitted,
            address,
            transport="http",
            idle_timeout=self.idle_timeout,
            idle_reason="idle timeout: not polled",
            idle_counter="http_idle_closed",
            on_end=self._ended,
        )
        self.links[admitted.key] = link
        link.spawn()
        return link

    def _ended(self, link: SatelliteLink) -> None:
        channel = link.channel
        LOG.info(
            "http link %s closed: %s (%s)",
            link.peer or link.base_name,
            channel.close_reason,
            channel.close_code,
        )

    async def _release(self, link: SatelliteLink, code: int, reason: str) -> None:
        """Close ``link`` (if it is not yet) and forget it."""
        if self.links.get(link.key) is link:
            del self.links[link.key]
        await link.aclose(code, reason)

    def _forget_tombstones(self, now: float) -> None:
        horizon = now - self.idle_timeout
        for key, link in list(self.links.items()):
            closed_at = poll_channel(link).closed_at
            if closed_at is not None and closed_at < horizon:
                del self.links[key]

    def _bad_request(self, status: int) -> None:
        self.node.count("http_bad_requests")

    # -- HTTP -----------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        forwarded = request.headers.get("X-Forwarded-For")
        address = self.hub.admission.address(request.remote or "unknown", forwarded)
        try:
            return await self._route(request, address)
        except HTTPRefusal as exc:
            self.node.count("http_bad_requests")
            LOG.debug("bad HTTP request from %s: %s", address, exc)
            return json_response(exc.status, {"error": str(exc)}, close=True)
        except (ConnectionError, asyncio.TimeoutError):
            raise
        except Exception:
            self.node.count("errors")
            LOG.exception("HTTP request from %s failed", address)
            return json_response(500, {"error": "internal error"}, close=True)

    def _check_head(self, request: web.BaseRequest) -> int:
        """The body's announced length, once the head is within limits (431, 501, 413)."""
        if sum(len(k) + len(v) + 4 for k, v in request.raw_headers) > self.max_header_size:
            raise HTTPRefusal(431, "request headers too large")
        if "Transfer-Encoding" in request.headers:
            raise HTTPRefusal(501, "only Content-Length bodies are supported")
        length = request.content_length or 0
        if length > self.max_body_size:
            raise HTTPRefusal(413, f"body larger than {self.max_body_size} bytes")
        return length

    async def _read_form(self, request: web.BaseRequest, length: int) -> dict[str, str]:
        if not length:
            return {}
        body = await asyncio.wait_for(request.content.readexactly(length), self.read_timeout)
        return parse_form(body, request.headers.get("Content-Type", ""))

    async def _route(self, request: web.BaseRequest, address: str) -> web.StreamResponse:
        length = self._check_head(request)
        target = urlsplit(request.raw_path)
        path = target.path.rstrip("/") or "/"
        expected = _ROUTES.get(path)
        if expected is None:
            return json_response(404, {"error": f"no such endpoint {path}"}, close=bool(length))
        if request.method != expected:
            headers = {"Allow": expected}
            return json_response(
                405, {"error": f"{path} takes {expected}"}, headers, close=bool(length)
            )
        # A raw "+" of base64 would read back as a space: keep it a plus.
        creds = parse_authorization("/?" + target.query.replace("+", "%2B"))
        node = self.node
        now = node.now()
        form: dict[str, str] | None = None
        if creds is None or path == "/connect":
            # Before authentication only a small body is read (the form may hold it).
            if length > self.preauth_body:
                refusal = self.hub.admission.blocked(address, now)
                if refusal is not None:
                    return refused(refusal)
                node.count("http_preauth_refused")
                raise HTTPRefusal(413, f"body larger than {self.preauth_body} bytes before login")
            form = await self._read_form(request, length)
            if creds is None and "authorization" in form:
                creds = parse_token(form["authorization"].replace(" ", "+"))
        link = self.links.get(creds[1]) if creds is not None else None
        presented = request.headers.get(LINK_SECRET_HEADER)
        if path == "/connect" or link is None:
            verdict = await self.hub.admission.check_off_loop(creds, address, now)
            if isinstance(verdict, Refusal):
                return refused(verdict)
            link = self.links.get(verdict.key)  # the lookup let other requests run
            if path == "/connect":
                return await self._connect(verdict, link, presented, address)
        elif creds is not None:
            throttled = self.hub.admission.blocked(address, now, creds[1])
            if throttled is not None:
                return refused(throttled)
        if link is None:
            if path == "/disconnect":
                return json_response(409, {"error": "Already Disconnected"})
            return json_response(409, {"error": "Client is not connected"})
        answer = guard(link, presented, path)
        if answer is not None:
            return answer
        channel = poll_channel(link)
        if form is None:  # the key names a live link: now the body may be read
            form = await self._read_form(request, length)
        if path == "/disconnect":
            already = channel.closed
            await self._release(link, CloseCode.NORMAL, "client disconnected")
            if already:
                return json_response(409, {"error": "Already Disconnected"})
            return json_response(200, {"status": "Disconnected"})
        if path == "/send_message":
            return await self._receive(link, channel, form, now)
        link.touch(now)
        if path == "/get_messages":
            name, drained = "messages", channel.drain_text()
        else:
            name = "b64_messages"
            drained = [base64.b64encode(b).decode("ascii") for b in channel.drain_binary()]
        if channel.closed:
            return json_response(409, not_connected(channel, {name: drained}))
        return json_response(200, {"status": "messages retrieved", name: drained})

    async def _connect(
        self, admitted: Admitted, link: SatelliteLink | None, presented: str | None, address: str
    ) -> web.Response:
        """``/connect``: a fresh link for the key (guarded, capped), its secret in the answer."""
        answer = guard(link, presented, "/connect") if link is not None else None
        if answer is not None:
            return answer
        reason = over_cap(self.links, admitted.key, address, self.node.config)
        if reason is not None:
            self.node.count("refused_connection_cap")
            LOG.info("refused an http link from %s: %s", address, reason)
            return json_response(503, {"error": reason}, {"Retry-After": "5"})
        if link is not None:
            await self._release(link, CloseCode.NORMAL, "replaced by a new /connect")
        secret = poll_channel(self._open(admitted, address)).secret
        return json_response(200, {"status": "Connected", "link_secret": secret})

    async def _receive(
        self, link: SatelliteLink, channel: PollChannel, form: dict[str, str], now: float
    ) -> web.Response:
        """``/send_message``: hand the frame to the link and wait until it is handled."""
        if channel.closed:
            return json_response(409, not_connected(channel))
        frame: str | bytes
        if "message" in form:
            frame = form["message"]
        elif "b64_message" in form:
            try:
                frame = base64.b64decode(form["b64_message"], validate=True)
            except (binascii.Error, ValueError):
                return json_response(400, {"error": "b64_message is not base64"})
        else:
            return json_response(400, {"error": "Missing message"})
        link.touch(now)
        channel.feed(frame)
        await asyncio.wait_for(channel.settle(), self.read_timeout)
        if link.closing:
            await link.wait_ended(self.read_timeout)
            return json_response(400, not_connected(channel))
        return json_response(200, {"status": "message sent"})


async def start_http_listener(
    server: Hub,
    host: str | None = None,
    port: int | None = None,
    **options: Any,
) -> HTTPListener:
    """Start the HTTP listener of ``server`` (default: its config's host and ``http_port``).

    Stop it with ``await listener.close()`` before ``await server.stop()``.
    """
    cfg = server.node.config
    listener = HTTPListener(
        server,
        host if host is not None else cfg.host,
        port if port is not None else cfg.http_port,
        ssl_context=options.pop("ssl_context", server.ssl_context),
        **options,
    )
    await listener.start()
    return listener
