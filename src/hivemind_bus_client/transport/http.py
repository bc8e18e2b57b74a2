"""HiveMind over HTTP polling: :class:`HTTPPollChannel` (docs/hub.md, "HTTP polling wire").

For places where a long-lived websocket is not possible. The hub's HTTP
listener keeps one link per access key; the frames are exactly the websocket
ones, so the same Connection and the same :class:`~.driver.LinkDriver` run on it:

==========================  ====================================================
``POST /connect``           create the hub-side link for our access key
``POST /send_message``      one frame, form field ``message`` (text) or
                            ``b64_message`` (binary, base64)
``GET /get_messages``       drain the text frames queued for us
``GET /get_binary_messages`` drain binary frames (``b64_messages``, base64)
``POST /disconnect``        drop the hub-side link
==========================  ====================================================

Every call carries ``?authorization=base64(useragent:key)``, percent-encoded
(a raw ``+`` of base64 would be read back as a space by a standard query parser),
and, once ``/connect`` answered one, the link's secret in the
``X-HiveMind-Link-Secret`` header: after the handshake only we may use the link.

Two lanes, one thread each (:class:`http.client.HTTPConnection` keep-alive, no
extra dependency): one polls, one posts, so frames keep their order. Polling
backs off from ``min_poll_interval`` (doubling) to ``poll_interval`` while
nothing moves and starts again at once after traffic, so a request/answer round
trip takes tens of milliseconds. An error answer ends the channel with the
hub's close code and reason (401: ``UnauthorizedKeyError``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import contextlib
import http.client
import json
import logging
from typing import Any
from urllib.parse import quote, urlencode

from hivemind_bus_client.exceptions import (
    CloseCode,
    HiveMindConnectionError,
    HiveMindError,
    UnauthorizedKeyError,
)
from hivemind_bus_client.transport.channel import ChannelClosed, Frame, PumpedChannel
from hivemind_bus_client.transport.errors import map_errors
from hivemind_bus_client.transport.tls import client_context

__all__ = ["LINK_SECRET_HEADER", "HTTPPollChannel"]

LOG = logging.getLogger(__name__)

#: The request header that carries the hub's link secret (docs/hub.md, "Link secrets").
LINK_SECRET_HEADER = "X-HiveMind-Link-Secret"

#: Errors on a reused keep-alive socket that mean "the server closed it while idle".
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class _Lane:
    """One keep-alive HTTP connection, used by one worker thread only."""

    def __init__(self, channel: HTTPPollChannel) -> None:
        self.channel = channel
        self._conn: http.client.HTTPConnection | None = None
        self._used = False

    def _open(self) -> http.client.HTTPConnection:
        ch = self.channel
        ctx = client_context(ch.secure, ch.self_signed)
        if ctx is not None:
            return http.client.HTTPSConnection(
                ch.host, ch.port, timeout=ch.request_timeout, context=ctx
            )
        return http.client.HTTPConnection(ch.host, ch.port, timeout=ch.request_timeout)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def request(
        self, method: str, endpoint: str, form: dict[str, str] | None
    ) -> tuple[int, dict[str, Any]]:
        """``(status, JSON object)`` of one call; retried once on a stale keep-alive socket."""
        ch = self.channel
        path = f"/{endpoint}?authorization={ch.token}"
        body = urlencode(form).encode("ascii") if form is not None else None
        headers = {"User-Agent": ch.useragent, "Accept": "application/json"}
        if ch.link_secret:
            headers[LINK_SECRET_HEADER] = ch.link_secret
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        raw = b""
        status = 0
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = self._open()
                self._used = False
            conn = self._conn
            try:
                with map_errors(ch.peer_address, connecting=not self._used):
                    try:
                        conn.request(method, path, body=body, headers=headers)
                        response = conn.getresponse()
                        raw = response.read()
                    except _STALE:
                        if self._used and attempt == 0:
                            self.close()
                            continue
                        raise
                status = response.status
                if response.will_close:
                    self.close()
                else:
                    self._used = True
                break
            except HiveMindError:
                self.close()
                raise
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise HiveMindConnectionError(
                f"{ch.peer_address} answered {endpoint} with HTTP {status} and no JSON object: "
                "is it a HiveMind http listener?"
            )
        return status, data


class HTTPPollChannel(PumpedChannel):
    """A :class:`~.channel.Channel` over the hub's HTTP polling endpoints.

    Args:
        host, port: the hub's HTTP listener.
        key, useragent: our credentials (the ``authorization`` query).
        secure, self_signed: HTTPS, and whether any certificate is accepted.
        poll_interval: seconds between polls when nothing happens.
        min_poll_interval: first re-poll delay after traffic; doubles up to ``poll_interval``.
        request_timeout: seconds one HTTP call may take.
        max_frames, max_bytes: bounds of the outgoing backlog.
        link_secret: the secret of our previous link to this hub, if any: it lets
            our ``/connect`` replace that link when the hub still holds it bound.
    """

    def __init__(
        self,
        host: str,
        port: int,
        key: str,
        useragent: str,
        *,
        secure: bool = False,
        self_signed: bool = True,
        poll_interval: float = 1.0,
        min_poll_interval: float = 0.05,
        request_timeout: float = 10.0,
        max_frames: int = 4096,
        max_bytes: int = 64 * 1024 * 1024,
        link_secret: str | None = None,
    ) -> None:
        if poll_interval <= 0 or min_poll_interval <= 0:
            raise ValueError("poll intervals must be positive")
        super().__init__(
            f"{host}:{port}",
            max_frames=max_frames,
            max_bytes=max_bytes,
            overflow_reason="send queue overflow (slow hub)",
        )
        self.host, self.port = host, port
        self.useragent = useragent
        self.token = quote(base64.b64encode(f"{useragent}:{key}".encode()).decode("ascii"), safe="")
        self.secure, self.self_signed = secure, self_signed
        self.poll_interval = poll_interval
        self.min_poll_interval = min(min_poll_interval, poll_interval)
        self.request_timeout = request_timeout
        self.linked = False
        #: The hub's secret of our link (sent on every request once known).
        self.link_secret = link_secret
        self._pools: dict[str, concurrent.futures.ThreadPoolExecutor] = {}
        self._lanes: dict[str, _Lane] = {}
        self._wake = asyncio.Event()

    # -- HTTP calls on worker threads -----------------------------------------------

    async def call(
        self, lane: str, method: str, endpoint: str, form: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """Run one HTTP call on the ``lane`` thread ("poll" or "send")."""
        pool = self._pools.get(lane)
        if pool is None:
            pool = self._pools[lane] = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix=f"hivemind-http-{lane}"
            )
            self._lanes[lane] = _Lane(self)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(pool, self._lanes[lane].request, method, endpoint, form)

    def _error_answer(self, status: int, data: dict[str, Any]) -> ChannelClosed:
        error = str(data.get("error") or f"HTTP {status}")
        if status == 401:
            cause = UnauthorizedKeyError(
                f"hub at {self.peer_address} refused the access key: {error}"
            )
            return ChannelClosed(CloseCode.POLICY, error, error=cause)
        code = data.get("code")
        reason = str(data.get("reason") or error)
        return ChannelClosed(code if isinstance(code, int) else CloseCode.ABNORMAL, reason)

    # -- opening ------------------------------------------------------------------------

    async def open(self) -> None:
        """``POST /connect``, then start polling and posting."""
        status, data = await self.call("send", "POST", "connect")
        if status == 401:
            raise UnauthorizedKeyError(
                f"hub at {self.peer_address} refused the access key: {data.get('error', '')}"
            )
        if status >= 400 or "error" in data:
            raise HiveMindConnectionError(
                f"hub at {self.peer_address} refused /connect (HTTP {status}): "
                f"{data.get('error', '')}"
            )
        secret = data.get("link_secret")
        # A hub without link secrets (the reference's) answers none: send none.
        self.link_secret = secret if isinstance(secret, str) and secret.isascii() else None
        self.linked = True
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._poll_loop(), name="hivemind-http-poll"),
            loop.create_task(self._send_loop(), name="hivemind-http-send"),
        ]

    # -- the two loops ------------------------------------------------------------------

    async def _poll_once(self) -> tuple[list[Frame], ChannelClosed | None]:
        frames: list[Frame] = []
        status, data = await self.call("poll", "GET", "get_messages")
        frames.extend(t for t in data.get("messages") or [] if isinstance(t, str))
        if status >= 400 or "error" in data:
            return frames, self._error_answer(status, data)
        status, data = await self.call("poll", "GET", "get_binary_messages")
        blobs = data.get("b64_messages")
        if blobs is None:  # later reference servers use "messages" here
            blobs = data.get("messages") or []
        for blob in blobs:
            if isinstance(blob, str):
                try:
                    frames.append(base64.b64decode(blob, validate=True))
                except (binascii.Error, ValueError):
                    LOG.warning("dropped a binary frame that is not base64")
        if status >= 400 or "error" in data:
            return frames, self._error_answer(status, data)
        return frames, None

    async def _poll_loop(self) -> None:
        delay = self.min_poll_interval
        try:
            while not self.closed:
                self._wake.clear()
                frames, ended = await self._poll_once()
                for frame in frames:
                    self.feed(frame)
                if ended is not None:
                    self.linked = False
                    self.feed_close(ended.code, ended.reason, ended.error)
                    return
                delay = self.min_poll_interval if frames else min(delay * 2, self.poll_interval)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
                if self._wake.is_set():
                    delay = self.min_poll_interval
        except HiveMindError as exc:
            self.feed_close(CloseCode.ABNORMAL, str(exc), exc)

    async def _send_loop(self) -> None:
        try:
            await self._pump(self._post)
        except HiveMindError as exc:
            self.feed_close(CloseCode.ABNORMAL, str(exc), exc)

    async def _post(self, frame: Frame) -> None:
        """Post one frame; an error answer ends the link (and so the send loop)."""
        if isinstance(frame, str):
            form = {"message": frame}
        else:
            form = {"b64_message": base64.b64encode(frame).decode("ascii")}
        status, data = await self.call("send", "POST", "send_message", form)
        if status >= 400 or "error" in data:
            ended = self._error_answer(status, data)
            self.linked = False
            self.feed_close(ended.code, ended.reason, ended.error)
            return
        self._wake.set()

    # -- Channel ----------------------------------------------------------------------------

    async def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Stop polling, tell the hub (``/disconnect``) and release the HTTP threads."""
        self.close_nowait(code, reason)
        await self._stop_tasks()
        if self.linked:
            self.linked = False
            try:
                await asyncio.wait_for(self.call("send", "POST", "disconnect"), 3)
            except (HiveMindError, asyncio.TimeoutError, RuntimeError):
                LOG.debug("disconnect did not reach the hub", exc_info=True)
        pools, self._pools = self._pools, {}
        lanes, self._lanes = self._lanes, {}
        for lane, pool in pools.items():
            pool.submit(lanes[lane].close)
            pool.shutdown(wait=False, cancel_futures=False)
