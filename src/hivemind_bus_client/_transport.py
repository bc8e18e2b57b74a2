"""The websocket I/O layer shared by the sync and the asyncio client.

:class:`LinkEngine` moves frames between one ``websockets`` connection and one
sans-I/O :class:`~hivemind_bus_client.protocol.connection.Connection`, and owns what a
client does on its own: answering PINGs, opening INTERCOMs, gathering CASCADE
answers, and reconnecting. It runs entirely on one asyncio event loop (the
caller's for the asyncio client, a background thread's for the sync client);
how handler calls are run is left to the ``dispatch`` callable it is given.

Opening a link (:meth:`LinkEngine.open_link`) means: socket, HTTP upgrade with
the ``authorization`` query, the hub's HELLO and HANDSHAKE, our answer, our
encrypted HELLO. Failures are translated here, once, into the exception
hierarchy (:mod:`hivemind_bus_client.exceptions`):

=============================================  =================================
what happened                                  raised
=============================================  =================================
TCP refused / name does not resolve            ``HiveMindEntryPointNotFound``
TLS failure                                    ``SecureConnectionFailed``
HTTP 401/403, or closed before the hub's HELLO ``UnauthorizedKeyError``
hub envelope does not match our password       ``AuthenticationFailed``
no common cipher/encoding, no usable mode      ``NegotiationFailed``
hub closed during the handshake (1008)         ``AuthenticationFailed``
no completed handshake within the timeout      ``ConnectTimeout``
=============================================  =================================

A dropped link is reopened with a fresh ``Connection`` (no crypto state
survives) after jittered exponential backoff (:mod:`hivemind_bus_client.protocol.reconnect`);
credential refusals stop the loop and are kept in :attr:`LinkEngine.fatal_error`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import socket
import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI

from hivemind_bus_client._config import ClientConfig
from hivemind_bus_client._handlers import Call, HandlerRegistry
from hivemind_bus_client.exceptions import (
    AuthenticationFailed,
    ConnectionClosedError,
    ConnectionClosedOK,
    ConnectTimeout,
    HandshakeError,
    HiveMindConnectionError,
    HiveMindEntryPointNotFound,
    HiveMindError,
    InvalidState,
    SecureConnectionFailed,
    UnauthorizedKeyError,
)
from hivemind_bus_client.identity import NodeIdentity
from hivemind_bus_client.protocol import crypto
from hivemind_bus_client.protocol.cascade import (
    CascadeAggregator,
    CascadeResult,
    is_response,
    query_id_of,
)
from hivemind_bus_client.protocol.connection import (
    CloseRequested,
    Connection,
    HandshakeComplete,
    HelloReceived,
    MessageReceived,
    Role,
)
from hivemind_bus_client.protocol.message import TRANSPORT_TYPES, HiveMessage, HiveMessageType
from hivemind_bus_client.protocol.reconnect import backoff, is_fatal
from hivemind_bus_client.transport.tls import client_context

__all__ = ["LinkEngine", "build_session"]

LOG = logging.getLogger(__name__)

#: Close codes a hub uses to say "come back later"; never a credential refusal.
_RETRY_CODES = frozenset({1001, 1006, 1011, 1012, 1013})
_MAX_TRACKED_PINGS = 256


def build_session(session_id: str, site_id: str) -> dict[str, Any]:
    """The OVOS session dict sent in our HELLO (a real id, never ``default``)."""
    try:
        from ovos_bus_client.session import Session

        data = Session(session_id=session_id).serialize()
    except Exception:  # ovos config unreadable: the two keys a hub needs
        LOG.debug("could not build a full OVOS session", exc_info=True)
        data = {"session_id": session_id}
    data["session_id"] = session_id
    data["site_id"] = site_id
    return data


def _close_code(exc: websockets.ConnectionClosed) -> tuple[int | None, str]:
    rcvd = exc.rcvd
    if rcvd is not None:
        return rcvd.code, rcvd.reason
    sent = exc.sent
    if sent is not None:
        return sent.code, sent.reason
    return 1006, ""


#: Kept for callers of the old name; the one builder is transport.tls.client_context.
client_ssl_context = client_context


class LinkEngine:
    """One client's link to its hub, with reconnects (see the module docstring).

    Args:
        config: merged client settings.
        identity: the node identity (public key for HELLO, trusted keys, RSA key).
        registry: handlers and waiters to feed.
        dispatch: runs a batch of handler calls; called on the engine's loop.
    """

    def __init__(
        self,
        config: ClientConfig,
        identity: NodeIdentity,
        registry: HandlerRegistry,
        dispatch: Callable[[list[Call]], None],
    ) -> None:
        self.config = config
        self.identity = identity
        self.registry = registry
        self.dispatch = dispatch
        self.loop: asyncio.AbstractEventLoop | None = None
        self.ws: ClientConnection | None = None
        self.conn: Connection | None = None
        self.ready: asyncio.Event | None = None
        #: Why the engine stopped for good (credential refusal, gave up), if it did.
        self.fatal_error: BaseException | None = None
        self.closing = False
        #: What the hub told us.
        self.peer: str | None = None
        self.node_id: str | None = None
        self.hub_pubkey: str | None = None
        self.handshake: HandshakeComplete | None = None
        self.connects = 0
        self.stats: dict[str, int] = {
            "pings_answered": 0,
            "intercom_opened": 0,
            "intercom_dropped": 0,
            "messages_in": 0,
            "messages_out": 0,
        }
        self.cascade = CascadeAggregator(config.cascade_timeout)
        self._cascade_waiters: dict[str, Callable[[CascadeResult], None]] = {}
        self._cascade_timer: asyncio.TimerHandle | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._private_key: crypto.PrivateKey | None = None
        self._key_loaded = False
        self._session: dict[str, Any] | None = None
        self._own_pings: dict[str, float] = {}
        #: Called (on the loop) with True when a link is keyed, False when it is lost.
        self.on_state: Callable[[bool, BaseException | None], None] | None = None

    # -- seed-doc attributes (``proto.cascade_select_callback = ...``) -------------

    @property
    def cascade_select_callback(self) -> Any:
        """Picks one CASCADE response out of the gathered list (seed doc 001)."""
        return self.cascade.cascade_select_callback

    @cascade_select_callback.setter
    def cascade_select_callback(self, fn: Any) -> None:
        self.cascade.cascade_select_callback = fn

    @property
    def hive_mapper(self) -> Any:
        """Topology source that lets a CASCADE resolve once every node answered."""
        return self.cascade.hive_mapper

    @hive_mapper.setter
    def hive_mapper(self, mapper: Any) -> None:
        self.cascade.hive_mapper = mapper

    @property
    def cascade_timeout(self) -> float:
        """Seconds a CASCADE gathers answers."""
        return self.cascade.cascade_timeout

    @cascade_timeout.setter
    def cascade_timeout(self, value: float) -> None:
        self.cascade.cascade_timeout = float(value)

    # -- keys and session ----------------------------------------------------------

    @property
    def private_key(self) -> crypto.PrivateKey | None:
        """Our RSA key: the identity's, or a throwaway one when RSA mode needs it."""
        if not self._key_loaded:
            self._key_loaded = True
            self._private_key = self.identity.load_private_key()
            if self._private_key is None and not self.config.password:
                # No password: the RSA handshake is the only way in. A per-process
                # key is as good as any for link encryption.
                LOG.info("no RSA key in the identity; using a throwaway key for this process")
                self._private_key = crypto.create_private_key()
        return self._private_key

    @property
    def public_key_pem(self) -> str | None:
        """PEM of our public key, as HELLO and INTERCOM senders use it."""
        if self.identity.public_key:
            return self.identity.public_key
        key = self.private_key
        return crypto.public_key_pem(key) if key is not None else None

    def session_dict(self) -> dict[str, Any]:
        """Our OVOS session (built once; its id survives reconnects)."""
        if self._session is None:
            self._session = build_session(self.config.session_id, self.config.site_id)
        self._session["site_id"] = self.config.site_id
        return self._session

    def _new_connection(self) -> Connection:
        cfg = self.config
        hello = {
            "pubkey": self.identity.public_key,
            "session": self.session_dict(),
            "site_id": cfg.site_id,
        }
        return Connection(
            Role.CLIENT,
            password=cfg.password,
            crypto_key=cfg.crypto_key,
            private_key=self.private_key,
            encodings=cfg.encodings,
            ciphers=cfg.ciphers,
            binarize=cfg.binarize,
            compress=cfg.compress,
            hello=hello,
            handshake_timeout=cfg.handshake_timeout,
            max_size=cfg.max_size,
        )

    # -- opening a link ------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext | None:
        return client_ssl_context(self.config.secure, self.config.self_signed)

    async def open_link(self) -> None:
        """Open the socket and complete the handshake, or raise (see the table above)."""
        loop = asyncio.get_running_loop()
        self.loop = loop
        if self.ready is None:
            self.ready = asyncio.Event()
        deadline = loop.time() + self.config.connect_timeout
        ws = await self._open_socket()
        conn = self._new_connection()
        try:
            early = await self._handshake(ws, conn, deadline)
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2)
            raise
        self.ws, self.conn = ws, conn
        self.connects += 1
        assert self.ready is not None
        self.ready.set()
        LOG.info(
            "connected to %s: %s handshake, cipher=%s encoding=%s binarize=%s",
            self.config.redacted(),
            self.handshake.mode if self.handshake else "?",
            self.handshake.cipher if self.handshake else "?",
            self.handshake.encoding if self.handshake else "?",
            self.handshake.binarize if self.handshake else "?",
        )
        if self.on_state is not None:
            self.on_state(True, None)
        for msg in early:
            self._on_message(msg)

    async def _open_socket(self) -> ClientConnection:
        """The transport under the link: here the websocket (other transports override this)."""
        cfg = self.config
        where = f"{cfg.host}:{cfg.port}"
        try:
            ws = await asyncio.wait_for(
                ws_connect(
                    cfg.url,
                    ssl=self._ssl_context(),
                    compression=None,
                    open_timeout=None,
                    ping_interval=cfg.ping_interval,
                    ping_timeout=cfg.ping_timeout,
                    close_timeout=2,
                    max_size=cfg.max_size,
                    max_queue=None,
                    user_agent_header=cfg.useragent,
                ),
                timeout=cfg.connect_timeout,
            )
        except asyncio.TimeoutError:
            raise ConnectTimeout(
                f"no websocket from {where} within {cfg.connect_timeout:g} s"
            ) from None
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                raise UnauthorizedKeyError(
                    f"hub at {where} refused the access key (HTTP {status})"
                ) from None
            raise HiveMindConnectionError(f"hub at {where} answered HTTP {status}") from None
        except ssl.SSLError as exc:
            raise SecureConnectionFailed(f"TLS with {where} failed: {exc.reason or exc}") from None
        except socket.gaierror as exc:
            raise HiveMindEntryPointNotFound(
                f"cannot resolve {cfg.host!r}: {exc.strerror}"
            ) from None
        except ConnectionRefusedError:
            raise HiveMindEntryPointNotFound(
                f"no hub listening at {where} (connection refused)"
            ) from None
        except (InvalidHandshake, InvalidURI) as exc:
            raise HiveMindConnectionError(f"{where} is not a HiveMind websocket: {exc}") from None
        except OSError as exc:
            raise HiveMindEntryPointNotFound(
                f"cannot reach {where}: {exc.strerror or exc}"
            ) from None
        return ws

    async def _handshake(
        self, ws: ClientConnection, conn: Connection, deadline: float
    ) -> list[HiveMessage]:
        """Drive ``conn`` until it is keyed; returns messages that came along."""
        loop = asyncio.get_running_loop()
        cfg = self.config
        where = f"{cfg.host}:{cfg.port}"
        conn.start(loop.time())
        greeted = False
        early: list[HiveMessage] = []
        try:
            await self._flush(ws, conn)
        except websockets.ConnectionClosed as exc:
            raise self._refusal(exc, greeted, conn) from None
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ConnectTimeout(
                    f"hub at {where} did not complete the handshake within "
                    f"{cfg.connect_timeout:g} s"
                )
            try:
                frame = await asyncio.wait_for(ws.recv(), remaining)
            except asyncio.TimeoutError:
                continue
            except websockets.ConnectionClosed as exc:
                raise self._refusal(exc, greeted, conn) from None
            greeted = True
            conn.receive_frame(frame)
            keyed, refused = self._handshake_events(conn, early)
            if refused is not None:
                with contextlib.suppress(Exception):
                    await ws.close(refused.code, refused.reason)
                raise refused.error or HandshakeError(refused.reason or "handshake failed")
            try:
                await self._flush(ws, conn)
            except websockets.ConnectionClosed as exc:
                raise self._refusal(exc, greeted, conn) from None
            if keyed:
                return early

    def _handshake_events(
        self, conn: Connection, early: list[HiveMessage]
    ) -> tuple[bool, CloseRequested | None]:
        """Take the events of one handshake frame: (keyed now?, the refusal if any).

        Messages that arrive with the keying frame go to ``early``, for the
        caller to dispatch once the link is registered.
        """
        keyed = False
        for event in conn.events():
            if isinstance(event, HandshakeComplete):
                self.handshake = event
                keyed = True
            elif isinstance(event, HelloReceived):
                self._on_hello(event.payload)
            elif isinstance(event, MessageReceived):
                early.append(event.message)
            elif isinstance(event, CloseRequested):
                return keyed, event
        return keyed, None

    def _refusal(
        self, exc: websockets.ConnectionClosed, greeted: bool, conn: Connection
    ) -> HiveMindError:
        """Translate a close during the handshake into the error the user sees."""
        code, reason = _close_code(exc)
        where = f"{self.config.host}:{self.config.port}"
        why = f" ({reason})" if reason else ""
        if code in _RETRY_CODES or code == 4003:
            return ConnectionClosedError(code, f"hub at {where} closed during the handshake{why}")
        if not greeted:
            # The reference hub upgrades, then closes without a word when the
            # access key is unknown; our hub closes with 1008 and a reason.
            return UnauthorizedKeyError(
                f"hub at {where} closed the link before greeting us (code {code}){why}: "
                "the access key was refused"
            )
        if conn.mode == "password" or code == 1008:
            return AuthenticationFailed(
                f"hub at {where} closed the link during the {conn.mode or ''} handshake "
                f"(code {code}){why}: credentials or offer refused"
            )
        return HandshakeError(
            f"hub at {where} closed the link during the handshake (code {code}){why}"
        )

    def _on_hello(self, payload: dict[str, Any]) -> None:
        peer = payload.get("peer")
        if isinstance(peer, str) and peer:
            # The reference hub announces the peer before it knows our session:
            # its real routing peer ends with our session id.
            if peer.endswith("::default"):
                peer = peer[: -len("default")] + self.config.session_id
            self.peer = peer
        node_id = payload.get("node_id")
        if isinstance(node_id, str) and node_id:
            self.node_id = node_id
        pub = payload.get("pubkey")
        if isinstance(pub, str) and pub:
            self.hub_pubkey = pub

    async def _flush(self, ws: ClientConnection, conn: Connection) -> None:
        frames = conn.frames_to_send()
        for frame in frames:
            await ws.send(frame)

    # -- running ---------------------------------------------------------------------

    def start_supervisor(self) -> None:
        """Run the reader (and reconnects) in a named background task."""
        assert self.loop is not None
        self._supervisor = self.loop.create_task(self._supervise(), name="hivemind-client-link")

    def _dispatch_events(self, conn: Connection) -> CloseRequested | None:
        """Handle the events of a ready link; the close request, if one came, is returned
        for the transport to act on (each transport closes its own way)."""
        for event in conn.events():
            if isinstance(event, MessageReceived):
                self._on_message(event.message)
            elif isinstance(event, HelloReceived):
                self._on_hello(event.payload)
            elif isinstance(event, HandshakeComplete):
                self.handshake = event
            elif isinstance(event, CloseRequested):
                LOG.warning("closing link: %s (code %s)", event.reason, event.code)
                return event
        return None

    async def _read(self) -> BaseException:
        """Read frames until the link drops; returns why it dropped."""
        ws, conn = self.ws, self.conn
        assert ws is not None and conn is not None
        try:
            async for frame in ws:
                conn.receive_frame(frame)
                close = self._dispatch_events(conn)
                if close is not None:
                    with contextlib.suppress(Exception):
                        await ws.close(close.code, close.reason)
                    return close.error or ConnectionClosedError(close.code, close.reason)
                await self._flush(ws, conn)
        except websockets.ConnectionClosed as exc:
            code, reason = _close_code(exc)
            cls = ConnectionClosedOK if code in (1000, 1001) else ConnectionClosedError
            return cls(code, reason)
        except Exception as exc:  # a bug in a handler path must not kill the reader silently
            LOG.exception("link reader failed")
            return exc
        code, reason = _close_code(ws.close_exc) if ws.close_exc else (1000, "")
        cls = ConnectionClosedOK if code in (1000, 1001) else ConnectionClosedError
        return cls(code, reason)

    def _delays(self) -> Iterator[float]:
        delays = self.config.reconnect_delays
        if delays is None:
            return backoff(initial=0.5, max_delay=self.config.max_reconnect_delay)
        if callable(delays):
            return iter(delays())
        return iter(delays)

    async def _supervise(self) -> None:
        while True:
            reason = await self._read()
            assert self.ready is not None
            self.ready.clear()
            if self.conn is not None:
                code = getattr(reason, "code", None)
                self.conn.connection_lost(code if isinstance(code, int) else None, str(reason))
            self.ws = None
            if self.closing:
                return
            LOG.warning("link to %s lost: %s", self.config.redacted(), reason)
            if self.on_state is not None:
                self.on_state(False, reason)
            if not self.config.reconnect or is_fatal(reason):
                self._stop(reason)
                return
            if not await self._reconnect():
                return

    async def _reconnect(self) -> bool:
        attempt = 0
        for delay in self._delays():
            attempt += 1
            await asyncio.sleep(delay)
            if self.closing:
                return False
            try:
                await self.open_link()
                LOG.info("reconnected after %d attempt(s)", attempt)
                return True
            except HiveMindError as exc:
                if is_fatal(exc):
                    LOG.error("hub refused us on reconnect, giving up: %s", exc)
                    self._stop(exc)
                    return False
                LOG.info("reconnect attempt %d failed: %s", attempt, exc)
            except Exception as exc:
                LOG.warning("reconnect attempt %d failed: %r", attempt, exc)
        self._stop(ConnectionClosedError(None, f"gave up reconnecting after {attempt} attempts"))
        return False

    def _stop(self, reason: BaseException) -> None:
        self.fatal_error = reason
        LOG.error("client stopped: %s", reason)
        if self.on_state is not None:
            self.on_state(False, reason)

    async def close(self) -> None:
        """Close the link and stop reconnecting."""
        self.closing = True
        sup, self._supervisor = self._supervisor, None
        ws = self.ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(1000, "client closing"), 3)
        if sup is not None and sup is not asyncio.current_task():
            sup.cancel()
            with contextlib.suppress(BaseException):
                await sup
        if self._cascade_timer is not None:
            self._cascade_timer.cancel()
        if self.ready is not None:
            self.ready.clear()

    # -- sending ---------------------------------------------------------------------

    async def wait_ready(self, timeout: float) -> None:
        """Wait until a keyed link exists; raise if the client stopped or time ran out."""
        if self.ready is None:
            raise InvalidState("not connected: call connect() first")
        if self.ready.is_set():
            return
        if self.fatal_error is not None:
            raise ConnectionClosedError(None, f"client stopped: {self.fatal_error}")
        if self.closing:
            raise InvalidState("the client is closed")
        try:
            await asyncio.wait_for(self.ready.wait(), timeout)
        except asyncio.TimeoutError:
            raise ConnectionClosedError(
                None, f"no link to the hub (reconnecting) after {timeout:g} s"
            ) from None

    async def send(self, message: HiveMessage) -> None:
        """Encode and write one message, waiting for a link if one is being reopened."""
        await self.wait_ready(self.config.send_timeout)
        ws, conn = self.ws, self.conn
        assert ws is not None and conn is not None
        conn.send(message)
        self.stats["messages_out"] += 1
        try:
            await self._flush(ws, conn)
        except websockets.ConnectionClosed as exc:
            code, reason = _close_code(exc)
            raise ConnectionClosedError(code, reason or "link lost while sending") from None

    # -- receiving -------------------------------------------------------------------

    def _on_message(self, msg: HiveMessage) -> None:
        self.stats["messages_in"] += 1
        mtype = msg.msg_type
        try:
            if mtype is HiveMessageType.CASCADE and is_response(msg):
                if self._cascade_response(msg):
                    return
            elif mtype is HiveMessageType.INTERCOM:
                self._on_intercom(msg)
                return
            elif mtype in (HiveMessageType.PROPAGATE, HiveMessageType.PING):
                self._maybe_answer_ping(msg)
        except Exception:
            LOG.exception("internal handling of %s failed", mtype.value)
        self._deliver(msg)

    def _deliver(self, msg: HiveMessage) -> None:
        calls = self.registry.collect(msg, self.config.site_id)
        if calls:
            self.dispatch(calls)

    # PING / PONG ----------------------------------------------------------------------

    def _ping_of(self, msg: HiveMessage) -> HiveMessage | None:
        if msg.msg_type is HiveMessageType.PING:
            return msg
        inner = msg.payload
        if isinstance(inner, HiveMessage) and inner.msg_type is HiveMessageType.PING:
            return inner
        return None

    def note_own_ping(self, ping_id: str) -> None:
        """Remember a PING we sent, so we do not answer our own flood."""
        self._own_pings[ping_id] = time.monotonic()
        while len(self._own_pings) > _MAX_TRACKED_PINGS:
            self._own_pings.pop(next(iter(self._own_pings)))

    def _maybe_answer_ping(self, msg: HiveMessage) -> None:
        """Answer a PING (bare or inside PROPAGATE) with a PONG carrying the route it took."""
        ping = self._ping_of(msg)
        if ping is None or not self.config.answer_pings:
            return
        data = ping.payload if isinstance(ping.payload, dict) else {}
        ping_id = data.get("ping_id") or data.get("flood_id")
        if ping_id in self._own_pings or (self.peer and data.get("peer") == self.peer):
            return
        route = list(msg.route or ping.route)
        pong = HiveMessage(
            HiveMessageType.PONG,
            payload={
                "ping_id": ping_id,
                "peer": self.peer,
                "node_id": self.node_id,
                "site_id": self.config.site_id,
                "session_id": self.config.session_id,
                "public_key": self.public_key_pem,
                "timestamp": data.get("timestamp"),
                "pong_timestamp": time.time(),
                "hops": len(route),
                "origin_peer": data.get("peer"),
            },
            route=route,
            target_peers=[data["peer"]] if isinstance(data.get("peer"), str) else None,
        )
        self.stats["pings_answered"] += 1
        assert self.loop is not None
        self.loop.create_task(self._send_quietly(pong), name="hivemind-client-pong")

    async def _send_quietly(self, msg: HiveMessage) -> None:
        try:
            await self.send(msg)
        except HiveMindError as exc:
            LOG.debug("could not send %s: %s", msg.msg_type.value, exc)

    # INTERCOM -------------------------------------------------------------------------

    def _on_intercom(self, msg: HiveMessage) -> None:
        """Open an INTERCOM addressed to us; trusted senders' BUS reaches OVOS handlers."""
        own = self.public_key_pem
        target = msg.target_pubkey
        if target and (not own or "".join(target.split()) != "".join(own.split())):
            LOG.debug("INTERCOM for another node; ignored")
            return
        payload = msg.payload if isinstance(msg.payload, dict) else {}
        key = self.private_key
        if "encrypted_key" not in payload or key is None:
            self.stats["intercom_dropped"] += 1
            LOG.warning("INTERCOM we cannot open (no hybrid envelope or no private key); dropped")
            return
        sender_alias = self._trusted_sender(payload)
        try:
            plain = crypto.hybrid_decrypt(payload, key)
            inner = HiveMessage.deserialize(plain.decode("utf-8"))
        except (HiveMindError, UnicodeDecodeError) as exc:
            self.stats["intercom_dropped"] += 1
            LOG.warning("INTERCOM dropped: %s", exc)
            return
        self.stats["intercom_opened"] += 1
        opened = HiveMessage(
            HiveMessageType.INTERCOM,
            payload={
                "decrypted": inner.as_dict if inner.msg_type is not HiveMessageType.BINARY else {},
                "trusted": sender_alias is not None,
                "sender_alias": sender_alias,
            },
            route=msg.route,
            source_peer=msg.source_peer,
            target_pubkey=msg.target_pubkey,
            metadata=msg.metadata,
        )
        calls = self.registry.collect(opened, self.config.site_id)
        if sender_alias is None:
            if inner.msg_type is HiveMessageType.BUS or inner.msg_type in TRANSPORT_TYPES:
                self.stats["intercom_dropped"] += 1
                LOG.warning("INTERCOM from an untrusted sender: not injected")
        else:
            calls += self.registry.collect(inner, self.config.site_id)
        if calls:
            self.dispatch(calls)

    def _trusted_sender(self, payload: dict[str, Any]) -> str | None:
        """Alias of the trusted key whose signature covers the INTERCOM ciphertext."""
        try:
            signature = base64.b64decode(payload.get("signature") or "", validate=True)
            ciphertext = base64.b64decode(payload.get("ciphertext") or "", validate=True)
        except (binascii.Error, ValueError, TypeError):
            return None
        if not signature:
            return None
        for alias, pem in self.identity.trusted_keys.items():
            try:
                if crypto.rsa_verify(crypto.load_public_key(pem), signature, ciphertext):
                    return alias
            except HiveMindError:
                continue
        return None

    def make_intercom(self, message: HiveMessage, pubkey: str) -> HiveMessage:
        """Seal ``message`` for the node owning ``pubkey`` (hybrid, signed when we can)."""
        recipient = crypto.load_public_key(pubkey)
        sealed = crypto.hybrid_encrypt(
            message.serialize().encode("utf-8"), recipient, self.private_key
        )
        return HiveMessage(HiveMessageType.INTERCOM, payload=sealed, target_pubkey=pubkey)

    # QUERY / CASCADE ------------------------------------------------------------------

    def begin_cascade(
        self,
        query_id: str,
        on_done: Callable[[CascadeResult], None],
        expected: int | None = None,
        timeout: float | None = None,
    ) -> None:
        """Start gathering answers to a CASCADE we are about to send."""
        assert self.loop is not None
        self.cascade.start(query_id, self.loop.time(), expected, timeout)
        self._cascade_waiters[query_id] = on_done
        self._arm_cascade_timer()

    def _arm_cascade_timer(self) -> None:
        assert self.loop is not None
        if self._cascade_timer is not None:
            self._cascade_timer.cancel()
            self._cascade_timer = None
        deadline = self.cascade.next_deadline()
        if deadline is not None:
            self._cascade_timer = self.loop.call_at(deadline, self._cascade_tick)

    def _cascade_tick(self) -> None:
        assert self.loop is not None
        self._cascade_timer = None
        self._cascade_done(self.cascade.poll(self.loop.time()))

    def _cascade_response(self, msg: HiveMessage) -> bool:
        qid = query_id_of(msg)
        if not qid or not self.cascade.is_pending(qid):
            return False
        assert self.loop is not None
        self._cascade_done(self.cascade.add(msg, self.loop.time()))
        return True

    def _cascade_done(self, results: list[CascadeResult]) -> None:
        for result in results:
            done = self._cascade_waiters.pop(result.query_id, None)
            if done is not None:
                try:
                    done(result)
                except Exception:
                    LOG.exception("cascade completion callback failed")
            if result.selected is not None:
                self._deliver(result.selected)
        self._arm_cascade_timer()


def new_query_id() -> str:
    """A fresh QUERY/CASCADE correlation id."""
    return str(uuid.uuid4())
