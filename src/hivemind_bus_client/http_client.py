"""HiveMind over HTTP polling: :class:`HiveMindHTTPClient` (seed doc 000, "HTTP client").

For places where a long-lived websocket is not possible. The wire protocol is
the reference http plugin's (CLIENT-REFERENCE.md §7.3):

==========================  ====================================================
``POST /connect``           create the hub-side link for our access key
``POST /send_message``      one frame, form field ``message`` (text frames)
``GET /get_messages``       drain the text frames queued for us
``GET /get_binary_messages`` drain binary frames (``b64_messages``, base64)
``POST /disconnect``        drop the hub-side link
==========================  ====================================================

Every call carries ``?authorization=base64(useragent:key)``. The handshake and
every later frame are exactly the websocket ones, produced by the same
sans-I/O :class:`~hivemind_bus_client.protocol.connection.Connection`; only the way
frames move differs. This module is therefore thin: :class:`HTTPLinkEngine`
replaces the websocket parts of
:class:`~hivemind_bus_client._transport.LinkEngine` (open, read, send, close)
and inherits the rest (PING answers, INTERCOM, CASCADE, reconnect policy), and
:class:`HiveMindHTTPClient` is the sync client with that engine, so handlers,
``emit``, ``wait_for_*`` and ``close`` behave the same.

Polling: back to back (with a short backoff) during the handshake; after
something was sent or received the client polls again at once and backs off
(``min_poll_interval`` doubling) up to ``poll_interval``, so a request/answer
round trip takes tens of milliseconds, not a whole interval.

HTTP: one keep-alive :class:`http.client.HTTPConnection` per worker thread
(one thread polls, one sends, so frames keep their order); no extra dependency.

Differences from the reference, on purpose:

* the ``authorization`` value is percent-encoded (a raw ``+`` of base64 would
  be read back as a space by a standard query parser);
* binary frames (only BINARY messages: binarize is always off over HTTP) are
  posted as field ``b64_message``, which our hub accepts and the reference's
  form decoding would have mangled anyway;
* errors are the exception hierarchy, not ``RuntimeError``.
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
import socket
import ssl
import threading
from typing import Any
from urllib.parse import quote, urlencode

from hivemind_bus_client._config import authorization, split_host
from hivemind_bus_client._transport import LinkEngine
from hivemind_bus_client.client import BinaryDataCallbacks, HiveMessageBusClient
from hivemind_bus_client.exceptions import (
    AuthenticationFailed,
    ConnectionClosedError,
    ConnectionClosedOK,
    ConnectTimeout,
    HandshakeError,
    HiveMindConnectionError,
    HiveMindEntryPointNotFound,
    HiveMindError,
    SecureConnectionFailed,
    UnauthorizedKeyError,
)
from hivemind_bus_client.identity import NodeIdentity
from hivemind_bus_client.protocol.connection import (
    CloseRequested,
    Connection,
)
from hivemind_bus_client.protocol.message import HiveMessage

__all__ = ["DEFAULT_HTTP_PORT", "DEFAULT_HTTP_USERAGENT", "HTTPLinkEngine", "HiveMindHTTPClient"]

LOG = logging.getLogger(__name__)

#: Port of the hub's http listener (the reference server.json's).
DEFAULT_HTTP_PORT = 5679
#: The reference HTTP client's user agent.
DEFAULT_HTTP_USERAGENT = "HiveMindHTTPClientV1.0"

#: Errors on a reused keep-alive socket that mean "the server closed it while idle".
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)
_HANDSHAKE_POLL_MAX = 0.2


class _Channel:
    """One keep-alive HTTP connection to the hub, used by one thread only.

    Translates socket and HTTP failures into the exception hierarchy.
    """

    def __init__(self, engine: HTTPLinkEngine) -> None:
        self.engine = engine
        self._conn: http.client.HTTPConnection | None = None
        self._used = False

    def _open(self) -> http.client.HTTPConnection:
        cfg = self.engine.config
        timeout = self.engine.request_timeout
        if cfg.secure:
            ctx = ssl.create_default_context()
            if cfg.self_signed:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            return http.client.HTTPSConnection(cfg.host, cfg.port, timeout=timeout, context=ctx)
        return http.client.HTTPConnection(cfg.host, cfg.port, timeout=timeout)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def request(
        self, method: str, endpoint: str, form: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """``(status, JSON object)`` of one call; retried once on a stale keep-alive socket."""
        cfg = self.engine.config
        token = quote(authorization(cfg.useragent, cfg.key), safe="")
        path = f"/{endpoint}?authorization={token}"
        body = urlencode(form).encode("ascii") if form is not None else None
        headers = {"User-Agent": cfg.useragent, "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        where = f"{cfg.host}:{cfg.port}"
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = self._open()
                self._used = False
            conn = self._conn
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                raw = response.read()
                status = response.status
                if response.will_close:
                    self.close()
                else:
                    self._used = True
                break
            except _STALE as exc:
                reused = self._used
                self.close()
                if reused and attempt == 0:
                    continue
                raise HiveMindConnectionError(
                    f"hub at {where} dropped the connection: {exc}"
                ) from None
            except ssl.SSLError as exc:
                self.close()
                raise SecureConnectionFailed(
                    f"TLS with {where} failed: {exc.reason or exc}"
                ) from None
            except socket.gaierror as exc:
                self.close()
                raise HiveMindEntryPointNotFound(
                    f"cannot resolve {cfg.host!r}: {exc.strerror}"
                ) from None
            except ConnectionRefusedError:
                self.close()
                raise HiveMindEntryPointNotFound(
                    f"no hub listening at {where} (connection refused)"
                ) from None
            except TimeoutError:
                self.close()
                raise HiveMindConnectionError(
                    f"hub at {where} did not answer {endpoint} in time"
                ) from None
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise HiveMindConnectionError(
                    f"HTTP {endpoint} to {where} failed: {exc!r}"
                ) from None
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise HiveMindConnectionError(
                f"{where} answered {endpoint} with HTTP {status} and no JSON object: "
                "is it a HiveMind http listener?"
            )
        return status, data


class HTTPLinkEngine(LinkEngine):
    """The client link engine over HTTP polling (see the module docstring).

    Args:
        poll_interval: seconds between polls when nothing happens.
        min_poll_interval: first re-poll delay after traffic; doubles up to ``poll_interval``.
        request_timeout: seconds one HTTP call may take.
        Other arguments: as :class:`~hivemind_bus_client._transport.LinkEngine`.
    """

    def __init__(
        self,
        *args: Any,
        poll_interval: float = 1.0,
        min_poll_interval: float = 0.05,
        request_timeout: float = 10.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if poll_interval <= 0 or min_poll_interval <= 0:
            raise ValueError("poll intervals must be positive")
        self.poll_interval = poll_interval
        self.min_poll_interval = min(min_poll_interval, poll_interval)
        self.request_timeout = request_timeout
        self.linked = False
        self._pools: dict[str, concurrent.futures.ThreadPoolExecutor] = {}
        self._channels: dict[str, _Channel] = {}
        self._pool_lock = threading.Lock()
        self._wake: asyncio.Event | None = None
        self._send_lock: asyncio.Lock | None = None

    # -- HTTP calls on worker threads --------------------------------------------

    async def _call(
        self, lane: str, method: str, endpoint: str, form: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """Run one HTTP call on the ``lane`` thread ("poll" or "send")."""
        with self._pool_lock:
            pool = self._pools.get(lane)
            if pool is None:
                pool = self._pools[lane] = concurrent.futures.ThreadPoolExecutor(
                    1, thread_name_prefix=f"hivemind-http-{lane}"
                )
                self._channels[lane] = _Channel(self)
            channel = self._channels[lane]
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(pool, channel.request, method, endpoint, form)

    def _shutdown_pools(self) -> None:
        with self._pool_lock:
            pools, self._pools = self._pools, {}
            channels, self._channels = self._channels, {}
        for lane, pool in pools.items():
            channel = channels.get(lane)
            if channel is not None:
                pool.submit(channel.close)
            pool.shutdown(wait=False, cancel_futures=False)

    def _where(self) -> str:
        return f"{self.config.host}:{self.config.port}"

    def _closed_error(self, status: int, data: dict[str, Any], handshaking: bool) -> HiveMindError:
        """The exception for an error answer to a poll or a send."""
        where = self._where()
        error = str(data.get("error") or f"HTTP {status}")
        if status == 401:
            return UnauthorizedKeyError(f"hub at {where} refused the access key: {error}")
        code = data.get("code")
        code = code if isinstance(code, int) else None
        reason = str(data.get("reason") or error)
        if handshaking and code == 1008:
            return AuthenticationFailed(
                f"hub at {where} closed the link during the handshake (code 1008): {reason}"
            )
        if code in (1000, 1001):
            return ConnectionClosedOK(code, reason)
        return ConnectionClosedError(code, f"hub at {where}: {reason}")

    async def _post_frames(self, conn: Connection) -> None:
        """Send every frame the connection queued, in order."""
        for frame in conn.frames_to_send():
            if isinstance(frame, str):
                form = {"message": frame}
            else:
                form = {"b64_message": base64.b64encode(frame).decode("ascii")}
            status, data = await self._call("send", "POST", "send_message", form)
            if status >= 400 or "error" in data:
                raise self._closed_error(status, data, not self.ready_set)
            if self._wake is not None:
                self._wake.set()

    @property
    def ready_set(self) -> bool:
        """True once a keyed link exists."""
        return self.ready is not None and self.ready.is_set()

    async def _poll_once(self, handshaking: bool) -> tuple[list[str | bytes], HiveMindError | None]:
        """One poll of both queues: frames, and the error that ended the link if any."""
        frames: list[str | bytes] = []
        error: HiveMindError | None = None
        status, data = await self._call("poll", "GET", "get_messages")
        texts = data.get("messages") or []
        frames.extend(t for t in texts if isinstance(t, str))
        if status >= 400 or "error" in data:
            return frames, self._closed_error(status, data, handshaking)
        status, data = await self._call("poll", "GET", "get_binary_messages")
        blobs = data.get("b64_messages")
        if blobs is None:  # later reference servers use "messages" here
            blobs = data.get("messages") or []
        for blob in blobs:
            if not isinstance(blob, str):
                continue
            try:
                frames.append(base64.b64decode(blob, validate=True))
            except (binascii.Error, ValueError):
                LOG.warning("dropped a binary frame that is not base64")
        if status >= 400 or "error" in data:
            error = self._closed_error(status, data, handshaking)
        return frames, error

    # -- opening a link ------------------------------------------------------------

    async def open_link(self) -> None:
        """``POST /connect``, then the handshake over polls; raises like the websocket engine."""
        loop = asyncio.get_running_loop()
        self.loop = loop
        if self.ready is None:
            self.ready = asyncio.Event()
        self._wake = asyncio.Event()
        self._send_lock = asyncio.Lock()
        cfg = self.config
        deadline = loop.time() + cfg.connect_timeout
        where = self._where()
        try:
            status, data = await asyncio.wait_for(
                self._call("send", "POST", "connect"), cfg.connect_timeout
            )
        except asyncio.TimeoutError:
            raise ConnectTimeout(
                f"no answer to /connect from {where} within {cfg.connect_timeout:g} s"
            ) from None
        if status == 401:
            raise UnauthorizedKeyError(
                f"hub at {where} refused the access key: {data.get('error', '')}"
            )
        if status >= 400 or "error" in data:
            raise HiveMindConnectionError(
                f"hub at {where} refused /connect (HTTP {status}): {data.get('error', '')}"
            )
        self.linked = True
        conn = self._new_connection()
        try:
            early = await self._handshake_http(conn, deadline)
        except BaseException:
            await self._disconnect_quietly()
            raise
        self.conn = conn
        self.connects += 1
        self.ready.set()
        hs = self.handshake
        LOG.info(
            "connected over HTTP to %s: %s handshake, cipher=%s encoding=%s",
            cfg.redacted(),
            hs.mode if hs else "?",
            hs.cipher if hs else "?",
            hs.encoding if hs else "?",
        )
        if self.on_state is not None:
            self.on_state(True, None)
        for msg in early:
            self._on_message(msg)

    async def _handshake_http(self, conn: Connection, deadline: float) -> list[HiveMessage]:
        """Poll back to back (short backoff) until ``conn`` is keyed."""
        loop = asyncio.get_running_loop()
        conn.start(loop.time())
        await self._post_frames(conn)
        early: list[HiveMessage] = []
        delay = 0.01
        while True:
            now = loop.time()
            if now >= deadline:
                raise ConnectTimeout(
                    f"hub at {self._where()} did not complete the handshake within "
                    f"{self.config.connect_timeout:g} s"
                )
            timer = conn.get_timer()
            if timer is not None and now >= timer:
                conn.handle_timer(now)
            frames, error = await self._poll_once(handshaking=True)
            keyed = False
            for frame in frames:
                conn.receive_frame(frame)
                now_keyed, refused = self._handshake_events(conn, early)
                if refused is not None:
                    raise refused.error or HandshakeError(refused.reason or "handshake failed")
                keyed = keyed or now_keyed
            for event in conn.events():  # timer-driven (handshake timeout)
                if isinstance(event, CloseRequested):
                    raise ConnectTimeout(
                        f"handshake with {self._where()} timed out: {event.reason}"
                    )
            await self._post_frames(conn)
            if keyed:
                return early
            if error is not None:
                raise error
            if frames:
                delay = 0.01
            else:
                await asyncio.sleep(delay)
                delay = min(delay * 2, _HANDSHAKE_POLL_MAX)

    async def _disconnect_quietly(self) -> None:
        if not self.linked:
            return
        self.linked = False
        try:
            await asyncio.wait_for(self._call("send", "POST", "disconnect"), 3)
        except (HiveMindError, asyncio.TimeoutError, RuntimeError):
            LOG.debug("disconnect did not reach the hub", exc_info=True)

    # -- running ---------------------------------------------------------------------

    async def _read(self) -> BaseException:
        """The poll loop; returns why the link ended (the supervisor decides on reconnects)."""
        conn, wake = self.conn, self._wake
        assert conn is not None and wake is not None
        delay = self.min_poll_interval
        try:
            while not self.closing:
                wake.clear()
                frames, error = await self._poll_once(handshaking=False)
                for frame in frames:
                    conn.receive_frame(frame)
                    close = self._dispatch_events(conn)
                    if close is not None:
                        await self._disconnect_quietly()
                        return close.error or ConnectionClosedError(close.code, close.reason)
                if error is not None:
                    self.linked = False
                    return error
                async with self._lock():
                    await self._post_frames(conn)
                delay = self.min_poll_interval if frames else min(delay * 2, self.poll_interval)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(wake.wait(), delay)
                if wake.is_set():
                    delay = self.min_poll_interval
        except HiveMindError as exc:
            return exc
        except Exception as exc:  # a bug in a handler path must not kill the poller silently
            LOG.exception("HTTP poll loop failed")
            return exc
        return ConnectionClosedOK(1000, "client closing")

    def _lock(self) -> asyncio.Lock:
        if self._send_lock is None:
            self._send_lock = asyncio.Lock()
        return self._send_lock

    async def send(self, message: HiveMessage) -> None:
        """Encode and post one message (in order with every other frame), then poll soon."""
        await self.wait_ready(self.config.send_timeout)
        conn = self.conn
        assert conn is not None
        async with self._lock():
            conn.send(message)
            self.stats["messages_out"] += 1
            await self._post_frames(conn)

    async def close(self) -> None:
        """Stop polling, tell the hub (``/disconnect``) and release the HTTP threads."""
        self.closing = True
        sup, self._supervisor = self._supervisor, None
        if sup is not None and sup is not asyncio.current_task():
            sup.cancel()
            with contextlib.suppress(BaseException):
                await sup
        await self._disconnect_quietly()
        if self._cascade_timer is not None:
            self._cascade_timer.cancel()
        if self.ready is not None:
            self.ready.clear()
        self._shutdown_pools()


class HiveMindHTTPClient(HiveMessageBusClient):
    """A HiveMind satellite over HTTP polling (same API as :class:`HiveMessageBusClient`).

    Args:
        key, password, crypto_key, site_id, session_id, identity, internal_bus,
            bin_callbacks, share_bus, compress, self_signed: as the websocket client;
            key and password come from the identity file when not given.
        host: hub address; ``http://``/``https://`` (or ``ws://``/``wss://``,
            mapped to them). Default: the identity file's ``default_master``.
        port: the hub's http listener port; default: a port written in ``host``,
            else 5679 (not the identity file's port, which is the websocket one).
        useragent: default ``HiveMindHTTPClientV1.0``.
        binarize: accepted for compatibility and ignored: frames are text over
            HTTP (the reference's form decoding breaks binary frames).
        poll_interval: seconds between idle polls (default 1, as the reference).
        min_poll_interval: re-poll delay right after traffic (doubles up to
            ``poll_interval``).
        request_timeout: seconds one HTTP call may take.

    Other keyword-only limits as :class:`HiveMessageBusClient` (``ping_*`` unused).

    Raises:
        ConfigurationError: no access key or no host from either source.
    """

    def __init__(
        self,
        key: str | None = None,
        password: str | None = None,
        crypto_key: str | None = None,
        host: str | None = None,
        port: int | None = None,
        useragent: str = DEFAULT_HTTP_USERAGENT,
        self_signed: bool = True,
        share_bus: bool = False,
        compress: bool = True,
        binarize: bool = False,
        identity: NodeIdentity | None = None,
        internal_bus: Any = None,
        bin_callbacks: BinaryDataCallbacks | None = None,
        site_id: str | None = None,
        session_id: str | None = None,
        *,
        poll_interval: float = 1.0,
        min_poll_interval: float = 0.05,
        request_timeout: float = 10.0,
        **limits: Any,
    ) -> None:
        del binarize
        ident = identity if identity is not None else NodeIdentity()
        if port is None and not _has_port(host or ident.default_master or ""):
            port = DEFAULT_HTTP_PORT
        super().__init__(
            key,
            password,
            crypto_key,
            host,
            port,
            useragent or DEFAULT_HTTP_USERAGENT,
            self_signed,
            share_bus,
            compress,
            False,
            ident,
            internal_bus,
            bin_callbacks,
            site_id,
            session_id,
            **limits,
        )
        self.config.binarize = False
        self._engine = HTTPLinkEngine(
            self.config,
            self.identity,
            self._registry,
            self._dispatch,
            poll_interval=poll_interval,
            min_poll_interval=min_poll_interval,
            request_timeout=request_timeout,
        )
        self._engine.on_state = self._on_state

    @property
    def base_url(self) -> str:
        """``http(s)://host:port`` of the hub's http listener."""
        scheme = "https" if self.config.secure else "http"
        host = self.config.host
        if ":" in host:
            host = f"[{host}]"
        return f"{scheme}://{host}:{self.config.port}"


def _has_port(host: str) -> bool:
    """True when ``host`` (with or without scheme) ends in ``:port``."""
    _, bare = split_host(host)
    if bare.startswith("["):
        return "]:" in bare
    return bare.count(":") == 1 and bare.rsplit(":", 1)[1].isdigit()
