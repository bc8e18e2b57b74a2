"""The hub's HTTP polling listener (the reference's http plugin, HUB.md; CLIENT-REFERENCE.md §7.3).

Theory of operation
-------------------
A small HTTP/1.1 server on ``asyncio.start_server`` (no new dependency)
serves five endpoints, each authenticated by ``?authorization=base64(ua:key)``
(also accepted as a form field, as the reference's argument lookup does):

=============================  ==================================================
``POST /connect``              (re)create the link of this access key
``POST /send_message``         one frame from the client: form field ``message``
                               (text), or ``b64_message`` (binary, base64; ours)
``GET /get_messages``          drain the text frames queued for the client
``GET /get_binary_messages``   drain binary frames, base64, as ``b64_messages``
``POST /disconnect``           close the link
=============================  ==================================================

Links are keyed by access key, as in the reference: one :class:`HTTPLink` per
key, and a new ``/connect`` replaces the old link (a client that restarted
starts a fresh handshake). An :class:`HTTPLink` is a
:class:`~hivemind_core.server.SatelliteLink` whose ``write`` queues frames
instead of writing a socket, so :class:`~hivemind_core.server.HubServer`
drives it exactly like a websocket link: ``_pump`` feeds its connection's
events to the router, ``_register``/``_close_link`` (un)register it, the
permission watcher can revoke it, and the failed-auth throttle is shared.

When the hub closes a link (wrong password, protocol error, revocation,
overflow, idle) the link stays as a *tombstone* until the client polls: the
poll answers 409 with ``error``, the close ``code`` and ``reason``, and the
frames still queued (e.g. a denial sent just before the close), so the client
learns why. Links not polled for ``idle_timeout`` seconds are closed (1001)
and tombstones are forgotten after the same time.

Request parsing is deliberately narrow: request line and headers must fit in
``max_header_size`` bytes, bodies need ``Content-Length`` (no chunked
encoding: 501) and may not exceed ``max_body_size`` (413); keep-alive is the
HTTP/1.1 default. A malformed request gets a 4xx JSON error and the TCP
connection is closed; nothing a peer sends can raise out of the handler.

Status codes: 400 malformed request, missing message, or a frame the protocol
core rejected (the link is then closed, as the websocket path does); 401
unknown/revoked key or bad ``authorization``; 404/405 unknown path/method;
409 no link for this key; 413 body too large; 429 too many failed logins from
this address (``Retry-After``); 431 headers too large; 500 internal error.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import ssl
from collections import deque
from typing import Any
from urllib.parse import parse_qs, urlsplit

from hivemind_bus_client.protocol.connection import Connection
from hivemind_core.server import (
    CLOSE_OVERFLOW,
    HubServer,
    LinkChannel,
    SatelliteLink,
    parse_authorization,
)

__all__ = ["HTTPLink", "HTTPListener", "start_http_listener"]

LOG = logging.getLogger(__name__)

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Payload Too Large",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
}
_ROUTES = {
    "/connect": "POST",
    "/disconnect": "POST",
    "/send_message": "POST",
    "/get_messages": "GET",
    "/get_binary_messages": "GET",
}
_MAX_FORM_FIELDS = 16


class _BadRequest(Exception):
    """A request we answer with ``status`` and then close the TCP connection."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class HTTPLink(SatelliteLink):
    """A satellite connected over HTTP polling: frames queue until the client polls."""

    __slots__ = ("binary_out", "closed_at", "finished", "key", "last_poll", "listener", "text_out")

    def __init__(
        self,
        listener: HTTPListener,
        conn: Connection,
        client: Any,
        useragent: str,
        address: str,
        key: str,
        now: float,
    ) -> None:
        channel = LinkChannel(listener)
        super().__init__(listener.server, channel, conn, client, useragent, address)  # type: ignore[arg-type]
        channel.link = self
        self.listener = listener
        self.key = key
        self.text_out: deque[str] = deque()
        self.binary_out: deque[bytes] = deque()
        self.last_poll = now
        self.closed_at: float | None = None
        self.finished = False

    @property
    def channel(self) -> LinkChannel:
        """The websocket stand-in (close code and reason once closed)."""
        return self.ws  # type: ignore[return-value]

    def write(self, frame: str | bytes) -> None:
        """Queue a frame for the next poll (bounded by ``send_queue``)."""
        if self.closing:
            return
        if len(self.text_out) + len(self.binary_out) >= self.server.config.send_queue:
            self.server._count("send_overflow")
            self.close(CLOSE_OVERFLOW, "send queue overflow (client does not poll)")
            return
        if isinstance(frame, str):
            self.text_out.append(frame)
        else:
            self.binary_out.append(bytes(frame))

    def _shut(self, code: int, reason: str) -> None:
        """The client learns the code and reason on its next poll."""
        self.listener.finish(self, code, reason)


class HTTPListener:
    """The HTTP polling front end of a :class:`HubServer`.

    Args:
        server: the running hub (router, database, agent, throttle).
        host: address to bind.
        port: TCP port (0: any free port, see :attr:`port`).
        ssl_context: serve HTTPS with this context.
        idle_timeout: seconds without a poll before a link is closed (1001).
        max_header_size: bytes allowed for the request line plus headers.
        max_body_size: bytes allowed for a body (default: room for one
            ``max_frame_size`` frame, form-encoded).
        read_timeout: seconds a client has to send a whole request once started,
            and an idle keep-alive connection is kept open.
    """

    def __init__(
        self,
        server: HubServer,
        host: str = "0.0.0.0",
        port: int = 5679,
        *,
        ssl_context: ssl.SSLContext | None = None,
        idle_timeout: float = 30.0,
        max_header_size: int = 16 * 1024,
        max_body_size: int | None = None,
        read_timeout: float = 30.0,
    ) -> None:
        self.server = server
        self.host = host
        self.requested_port = port
        self.ssl_context = ssl_context
        self.idle_timeout = idle_timeout
        self.max_header_size = max_header_size
        # Form encoding can triple a frame (percent escapes).
        self.max_body_size = max_body_size or 3 * server.config.max_frame_size + 1024
        self.read_timeout = read_timeout
        #: Links (live or tombstones) by access key.
        self.links: dict[str, HTTPLink] = {}
        self._tcp: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._sweeper: asyncio.Task[None] | None = None

    # -- life cycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Bind and start serving; returns once the socket is bound."""
        self._tcp = await asyncio.start_server(
            self._serve_tcp,
            self.host,
            self.requested_port,
            limit=self.max_header_size,
            ssl=self.ssl_context,
        )
        if self.idle_timeout and self.idle_timeout > 0:
            self._sweeper = asyncio.get_running_loop().create_task(
                self._sweep(), name="hivemind-http-idle-sweep"
            )
        LOG.info(
            "HiveMind http listener on %s://%s:%d",
            "https" if self.ssl_context else "http",
            self.host,
            self.port,
        )

    @property
    def port(self) -> int:
        """The bound TCP port."""
        if self._tcp is not None:
            for sock in self._tcp.sockets:
                return int(sock.getsockname()[1])
        return self.requested_port

    async def close(self) -> None:
        """Stop listening and close every link (1001) and TCP connection."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._sweeper
            self._sweeper = None
        if self._tcp is not None:
            self._tcp.close()
        for link in list(self.links.values()):
            link.close(CLOSE_GOING_AWAY, "hub stopping")
            self._release(link)
        self.links.clear()
        for writer in list(self._writers):
            writer.close()
        if self._tcp is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._tcp.wait_closed(), 5)
            self._tcp = None

    # -- links ----------------------------------------------------------------------

    def finish(self, link: HTTPLink, code: int, reason: str) -> None:
        """The link ended: keep it as a tombstone and unregister it from the hub (once)."""
        if link.finished:
            return
        link.finished = True
        link.closing = True
        channel = link.channel
        channel.close_code = code
        channel.close_reason = reason
        link.closed_at = asyncio.get_running_loop().time()
        LOG.info("http link %s closed: %s (%d)", link.peer or link.base_name, reason, code)
        # After the current pump/route finishes, as a websocket task would.
        asyncio.get_running_loop().call_soon(self.server._close_link, link)

    def _release(self, link: HTTPLink) -> None:
        """Forget ``link`` (and make sure the server did too)."""
        if self.links.get(link.key) is link:
            del self.links[link.key]
        if link in self.server.connections:
            self.server._close_link(link)

    def _open(self, client: Any, useragent: str, address: str, key: str) -> HTTPLink:
        """A new link for ``client``, set up as ``HubServer._open_link`` sets up a websocket one."""
        server = self.server
        conn = server.new_connection(client)
        now = asyncio.get_running_loop().time()
        link = HTTPLink(self, conn, client, useragent, address, key, now)
        conn.peer = link.base_name
        server.connections.add(link)
        server._count("connections")
        server._count("http_connections")
        link.last_rx = now
        conn.start(now)
        self.links[key] = link
        server._pump(link)
        return link

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        idle = self.idle_timeout
        while True:
            await asyncio.sleep(min(max(idle / 4, 0.05), 5.0))
            horizon = loop.time() - idle
            for link in list(self.links.values()):
                if link.finished:
                    if link.closed_at is not None and link.closed_at < horizon:
                        self._release(link)
                elif link.last_poll < horizon:
                    self.server._count("http_idle_closed")
                    link.close(CLOSE_GOING_AWAY, "idle timeout: not polled")

    # -- HTTP -----------------------------------------------------------------------

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        address = str(peername[0]) if isinstance(peername, tuple) and peername else "unknown"
        self._writers.add(writer)
        try:
            while True:
                try:
                    keep_alive = await self._one_request(reader, writer, address)
                except _BadRequest as exc:
                    self.server._count("http_bad_requests")
                    LOG.debug("bad HTTP request from %s: %s", address, exc)
                    await self._respond(writer, exc.status, {"error": str(exc)}, keep_alive=False)
                    return
                if not keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError):
            pass
        except Exception:
            self.server._count("errors")
            LOG.exception("HTTP connection from %s failed", address)
            with contextlib.suppress(Exception):
                await self._respond(writer, 500, {"error": "internal error"}, keep_alive=False)
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, address: str
    ) -> bool:
        """Read, handle and answer one request; False when the connection must close."""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.read_timeout)
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                raise _BadRequest(400, "incomplete request") from None
            return False
        except asyncio.LimitOverrunError:
            raise _BadRequest(431, "request headers too large") from None
        method, target, version, headers = _parse_head(head)
        keep_alive = version == "HTTP/1.1"
        conn_tokens = headers.get("connection", "").lower()
        if "close" in conn_tokens:
            keep_alive = False
        elif "keep-alive" in conn_tokens:
            keep_alive = True
        if "transfer-encoding" in headers:
            raise _BadRequest(501, "only Content-Length bodies are supported")
        length_text = headers.get("content-length", "0").strip()
        if not length_text.isdigit():
            raise _BadRequest(400, "bad Content-Length")
        length = int(length_text)
        if length > self.max_body_size:
            raise _BadRequest(413, f"body larger than {self.max_body_size} bytes")
        body = b""
        if length:
            body = await asyncio.wait_for(reader.readexactly(length), self.read_timeout)
        status, payload, extra = self._handle(method, target, headers, body, address)
        await self._respond(writer, status, payload, keep_alive=keep_alive, extra=extra)
        return keep_alive

    async def _respond(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        payload: dict[str, Any],
        *,
        keep_alive: bool,
        extra: dict[str, str] | None = None,
    ) -> None:
        body = json.dumps(payload).encode("utf-8")
        lines = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            "Server: HiveMind",
            "Connection: " + ("keep-alive" if keep_alive else "close"),
        ]
        for name, value in (extra or {}).items():
            lines.append(f"{name}: {value}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()

    def _handle(
        self, method: str, target: str, headers: dict[str, str], body: bytes, address: str
    ) -> tuple[int, dict[str, Any], dict[str, str] | None]:
        """Route one parsed request; returns (status, JSON body, extra headers)."""
        try:
            parts = urlsplit(target)
        except ValueError:
            raise _BadRequest(400, "bad request target") from None
        path = parts.path.rstrip("/") or "/"
        expected = _ROUTES.get(path)
        if expected is None:
            return 404, {"error": f"no such endpoint {path}"}, None
        if method != expected:
            return 405, {"error": f"{path} takes {expected}"}, {"Allow": expected}
        form = _parse_form(body, headers) if body else {}
        # A raw "+" of base64 would read back as a space: keep it a plus.
        query = parts.query.replace("+", "%2B")
        creds = parse_authorization("/?" + query)
        if creds is None and "authorization" in form:
            token = form["authorization"].replace(" ", "+")
            creds = parse_authorization("/?authorization=" + token.replace("+", "%2B"))
        loop = asyncio.get_running_loop()
        now = loop.time()
        server = self.server
        if creds is None:
            if server.throttle.blocked(address, now):
                return self._throttled(address, now)
            server._auth_failed(None, address, "missing or malformed authorization")
            return 401, {"error": "missing or malformed authorization"}, None
        useragent, key = creds
        link = self.links.get(key)
        if path == "/connect" or link is None:
            if server.throttle.blocked(address, now):
                return self._throttled(address, now)
            try:
                client = server._lookup(key)
            except Exception:
                server._count("errors")
                LOG.exception("client database lookup failed")
                return 500, {"error": "client database unavailable"}, None
            if client is None:
                server._auth_failed(None, address, "invalid access key")
                return 401, {"error": "Invalid access key"}, None
            if path == "/connect":
                if link is not None:
                    link.close(CLOSE_NORMAL, "replaced by a new /connect")
                    self._release(link)
                self._open(client, useragent, address, key)
                return 200, {"status": "Connected"}, None
        if link is None:
            if path == "/disconnect":
                return 409, {"error": "Already Disconnected"}, None
            return 409, {"error": "Client is not connected"}, None
        if path == "/disconnect":
            if link.finished:
                self._release(link)
                return 409, {"error": "Already Disconnected"}, None
            link.close(CLOSE_NORMAL, "client disconnected")
            self._release(link)
            return 200, {"status": "Disconnected"}, None
        if path == "/send_message":
            return self._receive(link, form, now)
        link.last_poll = now
        if path == "/get_messages":
            key_name = "messages"
            drained: list[str] = list(link.text_out)
            link.text_out.clear()
        else:
            key_name = "b64_messages"
            drained = [base64.b64encode(b).decode("ascii") for b in link.binary_out]
            link.binary_out.clear()
        if link.finished:
            return 409, self._not_connected(link, {key_name: drained}), None
        return 200, {"status": "messages retrieved", key_name: drained}, None

    @staticmethod
    def _not_connected(link: HTTPLink, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        channel = link.channel
        data: dict[str, Any] = {
            "error": "Client is not connected",
            "code": channel.close_code,
            "reason": channel.close_reason,
        }
        data.update(extra or {})
        return data

    def _throttled(self, address: str, now: float) -> tuple[int, dict[str, Any], dict[str, str]]:
        self.server._count("auth_throttled")
        retry = int(self.server.throttle.retry_after(address, now)) + 1
        return 429, {"error": "too many failed authentications"}, {"Retry-After": str(retry)}

    def _receive(
        self, link: HTTPLink, form: dict[str, str], now: float
    ) -> tuple[int, dict[str, Any], None]:
        """``/send_message``: feed the frame to the link's connection and pump."""
        if link.finished:
            return 409, self._not_connected(link), None
        frame: str | bytes
        if "message" in form:
            frame = form["message"]
        elif "b64_message" in form:
            try:
                frame = base64.b64decode(form["b64_message"], validate=True)
            except (binascii.Error, ValueError):
                return 400, {"error": "b64_message is not base64"}, None
        else:
            return 400, {"error": "Missing message"}, None
        link.last_rx = now
        link.last_poll = now
        try:
            link.conn.receive_frame(frame)
            self.server._pump(link)
        except Exception:
            # A bug on our side, not the peer's: drop this frame, keep the link.
            self.server._count("errors")
            LOG.exception("error handling a frame from %s", link.peer or link.address)
            return 500, {"error": "internal error"}, None
        if link.closing:
            if link.conn.close_code is not None and not link.finished:
                self.finish(link, link.conn.close_code, link.conn.close_reason or "")
            return 400, self._not_connected(link), None
        return 200, {"status": "message sent"}, None


def _parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    """Request line and headers (names lower-cased) of one request head."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes anything
        raise _BadRequest(400, "undecodable request head") from None
    lines = text.split("\r\n")
    while lines and not lines[0]:  # tolerate stray CRLFs between requests
        lines.pop(0)
    if not lines:
        raise _BadRequest(400, "empty request")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[2] not in ("HTTP/1.1", "HTTP/1.0") or not parts[1].startswith("/"):
        raise _BadRequest(400, "bad request line")
    method, target, version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or line[0] in " \t":
            raise _BadRequest(400, "bad header line")
        lname = name.lower()
        value = value.strip()
        if lname == "content-length" and lname in headers and headers[lname] != value:
            raise _BadRequest(400, "conflicting Content-Length")
        headers[lname] = value
    return method, target, version, headers


def _parse_form(body: bytes, headers: dict[str, str]) -> dict[str, str]:
    """Fields of a form-encoded body (first value of each); 400 when it is not one."""
    ctype = headers.get("content-type", "application/x-www-form-urlencoded").lower()
    if not ctype.startswith("application/x-www-form-urlencoded"):
        raise _BadRequest(400, "body must be application/x-www-form-urlencoded")
    try:
        text = body.decode("utf-8")
        fields = parse_qs(
            text, keep_blank_values=True, strict_parsing=False, max_num_fields=_MAX_FORM_FIELDS
        )
    except (UnicodeDecodeError, ValueError):
        raise _BadRequest(400, "malformed form body") from None
    return {name: values[0] for name, values in fields.items() if values}


async def start_http_listener(
    server: HubServer,
    host: str | None = None,
    port: int | None = None,
    **options: Any,
) -> HTTPListener:
    """Start the HTTP listener of ``server`` (default: its config's host and ``http_port``).

    Stop it with ``await listener.close()`` before ``await server.stop()``.
    """
    cfg = server.config
    listener = HTTPListener(
        server,
        host if host is not None else cfg.host,
        port if port is not None else cfg.http_port,
        ssl_context=options.pop("ssl_context", server.ssl_context),
        **options,
    )
    await listener.start()
    return listener
