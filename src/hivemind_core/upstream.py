"""The hub's link to its master (nested hives): this hub joins another hub as a satellite.

Theory of operation
-------------------
When ``HubConfig.upstream.host`` is set, :class:`UpstreamLink` keeps one
websocket to the master, authenticated like any satellite (``authorization``
query with this hub's access key at the master, then the password or RSA
handshake of a sans-I/O :class:`~hivemind_bus_client.protocol.connection.Connection`
in ``Role.CLIENT``). Its HELLO announces ``is_hub: true`` and this hub's
``node_id``, so the master treats the link as a relay hub (site-targeted
BROADCASTs pass through it; loop checks recognise this hub's route hops).

Once keyed, the link is registered with the hub's router as
``Link(kind=LinkKind.UPSTREAM)`` and with :attr:`HubServer.sinks`, so:

* every message received from the master goes through :meth:`HubServer.route`
  (BROADCAST and PROPAGATE from above reach this hub's satellites, QUERY
  answers travel back down along their bindings);
* whatever the router sends to the master's peer is written here
  (:meth:`UpstreamLink.send_message`): ESCALATE and QUERY going up, floods.

Answers to an ESCALATE
----------------------
The master's agent answers an escalated utterance the OVOS way: a message
whose ``context`` is a copy of the request's, addressed (``destination``) to
the peer that delivered it, which is this relay hub. To send that answer on to
the satellite that asked, this hub writes an opaque per-satellite token into
the context of every ESCALATE(BUS) it forwards (``context["hive_return"]``,
keyed by this hub's node id). A BUS message from the master that carries our
token is sent down to that satellite (:meth:`UpstreamLink.relay_down`)
instead of being injected into this hub's agent, with the satellite's own
session and peer in its context, as if this hub's agent had answered. Tokens, not peer strings,
travel upwards, so the master learns nothing about this hub's satellites.

Failure handling
----------------
When the master goes away the link is removed from the router (and the
actions :meth:`Router.remove_link` returns are executed: QUERYs waiting on
the master are answered ``hive.query.timeout``) and the hub reconnects with
:func:`~hivemind_bus_client.protocol.reconnect.backoff` (first retry within a second,
capped). A refusal of this hub's credentials (HTTP 401/403, a policy close
during the handshake, a wrong password or no common cipher) is fatal: logged
once as an error, no retry loop; the hub itself keeps serving its satellites.
Pointing the upstream at one of this hub's own listeners raises
:class:`UpstreamConfigError` at start.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import logging
import socket
import ssl
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI

from hivemind_bus_client._transport import client_ssl_context
from hivemind_bus_client.exceptions import HandshakeError
from hivemind_bus_client.protocol.connection import (
    CloseRequested,
    Connection,
    HandshakeComplete,
    HelloReceived,
    MessageReceived,
    Role,
    State,
)
from hivemind_bus_client.protocol.message import HiveMessage, HiveMessageType
from hivemind_bus_client.protocol.reconnect import FATAL_CLOSE_CODES, backoff
from hivemind_bus_client.protocol.router import Link, LinkKind, Permissions
from hivemind_core.config import UpstreamConfig
from hivemind_core.errors import UpstreamConfigError, UpstreamRefused
from hivemind_core.session import clone

if TYPE_CHECKING:
    from hivemind_core.node import HubNode

__all__ = [
    "RETURN_KEY",
    "UpstreamConfigError",
    "UpstreamLink",
    "UpstreamRefused",
    "is_own_listener",
]

LOG = logging.getLogger(__name__)

T = HiveMessageType

#: Context key of the return tokens relay hubs add to escalated messages.
RETURN_KEY = "hive_return"
#: Satellite tokens remembered (oldest forgotten first).
_MAX_TOKENS = 4096
#: Default useragent this hub presents to its master.
DEFAULT_USERAGENT = "HiveMind-relay-hub"

_ANY_ADDRESSES = frozenset({"", "0.0.0.0", "::", "*"})


class _Retry(Exception):
    """The attempt failed in a way worth retrying (socket, timeout, restart)."""


def _is_local_host(host: str) -> bool:
    """Whether ``host`` names this machine (loopback, any-address, or our own name)."""
    name = host.strip().strip("[]").lower()
    if name in _ANY_ADDRESSES or name == "localhost" or name.endswith(".localhost"):
        return True
    with contextlib.suppress(ValueError):
        addr = ipaddress.ip_address(name)
        return addr.is_loopback or addr.is_unspecified
    with contextlib.suppress(OSError):
        # gethostname only: getfqdn may wait on DNS, and this runs at start.
        if name == socket.gethostname().lower():
            return True
    return False


def is_own_listener(
    up_host: str, up_port: int, listen_host: str, listen_ports: Iterable[int]
) -> bool:
    """True when ``up_host:up_port`` would reach this hub's own listener.

    Same port, and the upstream host is either the address the listener is
    bound to or (listener on a loopback or any-address) a name for this machine.
    """
    if int(up_port) not in {int(p) for p in listen_ports}:
        return False
    up = up_host.strip().strip("[]").lower()
    own = listen_host.strip().strip("[]").lower()
    if up == own:
        return True
    if own in _ANY_ADDRESSES or _is_local_host(own):
        return _is_local_host(up)
    return False


class UpstreamLink:
    """This hub's connection to its master (see the module docstring).

    Args:
        server: the hub whose router and sinks the link joins.
        config: master address and this hub's credentials there.
        delays: reconnect delays (default: jittered exponential backoff,
            first retry under a second, capped at ``max_delay``).
        max_delay: cap of the default backoff, seconds.
        connect_timeout: seconds for socket + handshake of one attempt.
    """

    def __init__(
        self,
        server: HubNode,
        config: UpstreamConfig,
        *,
        listen_ports: Iterable[int] = (),
        delays: Callable[[], Iterator[float]] | None = None,
        max_delay: float = 10.0,
        connect_timeout: float = 10.0,
    ) -> None:
        self.server = server
        self.config = config
        self.listen_ports = set(listen_ports)
        self.peer = f"upstream::{config.host}:{config.port}"
        self._delays = delays or (lambda: backoff(initial=0.5, max_delay=max_delay))
        self.connect_timeout = connect_timeout
        self.ws: ClientConnection | None = None
        self.conn: Connection | None = None
        #: Set once the router knows the link (keyed and registered).
        self.linked = asyncio.Event()
        #: Why the link stopped for good, if it did.
        self.fatal_error: BaseException | None = None
        #: Successful connections so far.
        self.connects = 0
        #: The master's node id and public key, from its HELLO.
        self.master_node_id: str | None = None
        self.master_pubkey: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._tokens: OrderedDict[str, str] = OrderedDict()  # token -> satellite peer
        self._token_of: dict[str, str] = {}  # satellite peer -> token
        self._backlog: deque[str | bytes] | None = None

    # -- life cycle ---------------------------------------------------------------

    def check(self) -> None:
        """Refuse settings that cannot work.

        Raises:
            UpstreamConfigError: the upstream is this hub's own listener, or has no key.
        """
        cfg = self.config
        listen = self.server.config
        ports = self.listen_ports | {listen.port}
        if listen.http_port:
            ports.add(listen.http_port)
        if is_own_listener(cfg.host, cfg.port, listen.host, ports):
            raise UpstreamConfigError(
                f"upstream {cfg.host}:{cfg.port} is this hub's own listener "
                f"({listen.host}, ports {sorted(ports)}); a hub cannot be its own master"
            )
        if not cfg.key:
            raise UpstreamConfigError("upstream.key (this hub's access key at its master) is empty")

    async def start(self) -> None:
        """Check the settings and start connecting in the background (returns at once)."""
        self.check()
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name="hivemind-upstream-link"
        )

    async def stop(self) -> None:
        """Close the link and stop reconnecting."""
        self._stopping = True
        ws = self.ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(1001, "hub stopping"), 2)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._unlink()

    @property
    def share_bus(self) -> bool:
        """Whether this hub shows its bus to the master (``upstream.share_bus``)."""
        return bool(self.config.share_bus)

    @property
    def connected(self) -> bool:
        """Whether the master link is keyed and registered with the router."""
        return self.linked.is_set()

    # -- the sink the router writes to -----------------------------------------------

    def send_message(self, message: HiveMessage) -> None:
        """Encode ``message`` for the master and write it (never blocks)."""
        from hivemind_bus_client.transport.websocket import send_nowait

        ws, conn = self.ws, self.conn
        if ws is None or conn is None or conn.state is not State.READY:
            self.server.count("upstream_dropped_not_ready")
            return
        if message.msg_type is T.ESCALATE:
            self._add_return_token(message)
        frame = conn.encode(message)
        backlog = self._backlog
        if backlog is not None:
            # The master reads slower than we write: queue (bounded), then give up on the link.
            if len(backlog) >= self.server.config.send_queue:
                self.server.count("upstream_send_overflow")
                self.close(1013, "send queue overflow")
                return
            backlog.append(frame)
            return
        if getattr(ws, "paused", False):
            self._backlog = deque((frame,))
            asyncio.get_running_loop().create_task(self._drain(ws), name="hivemind-upstream-drain")
            return
        if not send_nowait(ws, frame):
            self.server.count("upstream_dropped_not_ready")

    async def _drain(self, ws: ClientConnection) -> None:
        backlog = self._backlog
        try:
            while backlog:
                await ws.send(backlog.popleft())
        except websockets.ConnectionClosed:
            pass
        except Exception:
            LOG.exception("error while draining the send queue to the master")
        finally:
            if self._backlog is backlog:
                self._backlog = None

    def close(self, code: int, reason: str) -> None:
        """Close the current socket (the link reconnects unless it is stopping)."""
        ws = self.ws
        if ws is not None:
            asyncio.get_running_loop().create_task(ws.close(code, reason[:120]))

    # -- ESCALATE answers --------------------------------------------------------------

    def _token(self, peer: str) -> str:
        token = self._token_of.get(peer)
        if token is None:
            token = uuid.uuid4().hex
            self._token_of[peer] = token
            self._tokens[token] = peer
            while len(self._tokens) > _MAX_TOKENS:
                old, old_peer = self._tokens.popitem(last=False)
                if self._token_of.get(old_peer) == old:
                    del self._token_of[old_peer]
        return token

    def _add_return_token(self, message: HiveMessage) -> None:
        """Mark an ESCALATE(BUS) from one of our satellites so its answer can find it."""
        origin = message.source_peer
        link = self.server.router.links.get(origin) if origin else None
        if link is None or link.kind is not LinkKind.SATELLITE:
            return
        inner = message.payload
        if not isinstance(inner, HiveMessage) or inner.msg_type is not T.BUS:
            return
        ovos = inner.payload
        context = getattr(ovos, "context", None)
        if not isinstance(context, dict):
            return
        marks = context.get(RETURN_KEY)
        marks = dict(marks) if isinstance(marks, dict) else {}
        marks[self.server.node_id] = self._token(link.peer)
        context[RETURN_KEY] = marks

    def relay_down(self, payload: dict[str, Any]) -> bool:
        """Send a BUS answer from the master on to the satellite whose request it answers.

        ``payload`` is the OVOS message dict. Returns False when it carries no
        token of ours (the message is for this hub itself, the caller injects
        it); True when it was handled (sent down, or dropped because that
        satellite is gone).
        """
        context = payload.get("context")
        if not isinstance(context, dict):
            return False
        marks = context.get(RETURN_KEY)
        if not isinstance(marks, dict):
            return False
        token = marks.get(self.server.node_id)
        if not isinstance(token, str):
            return False
        server = self.server
        peer = self._tokens.get(token)
        if peer is None or peer not in server.router.links:
            server.count("upstream_answer_unroutable")
            LOG.debug("answer from the master for a satellite that is gone; dropped")
            return True
        context = dict(context)
        rest = {k: v for k, v in marks.items() if k != server.node_id}
        if rest:
            context[RETURN_KEY] = rest
        else:
            del context[RETURN_KEY]
        # The master answered the relay's session; the satellite gets its own
        # back, as if this hub's agent had answered (the master's view of the
        # relay stays upstream).
        context["destination"] = peer
        context["peer"] = peer
        session = server.sessions.get(peer)
        if session is not None:
            context["session"] = clone(session.session)
        out = {"type": payload.get("type"), "data": payload.get("data") or {}, "context": context}
        server.count("upstream_answers_relayed")
        server.execute(server.router.send_to([peer], HiveMessage(T.BUS, out)))
        return True

    # -- connecting ----------------------------------------------------------------------

    def _url(self) -> str:
        cfg = self.config
        useragent = getattr(cfg, "useragent", "") or DEFAULT_USERAGENT
        token = base64.b64encode(f"{useragent}:{cfg.key}".encode()).decode("ascii")
        scheme = "wss" if cfg.ssl else "ws"
        host = f"[{cfg.host}]" if ":" in cfg.host and not cfg.host.startswith("[") else cfg.host
        return f"{scheme}://{host}:{cfg.port}/?authorization={token}"

    def _ssl_context(self) -> ssl.SSLContext | None:
        return client_ssl_context(self.config.ssl, self.config.self_signed)

    def _new_connection(self) -> Connection:
        server = self.server
        cfg = self.config
        from hivemind_bus_client.protocol import crypto

        site_id = getattr(cfg, "site_id", "") or server.router.site_id
        hello = {
            "pubkey": crypto.public_key_pem(server.private_key),
            "session": {"session_id": server.node_id, "site_id": site_id},
            "site_id": site_id,
            "node_id": server.node_id,
            "is_hub": True,
        }
        return Connection(
            Role.CLIENT,
            password=cfg.password or None,
            private_key=server.private_key,
            hello=hello,
            handshake_timeout=self.connect_timeout,
            max_size=server.config.max_frame_size,
        )

    async def _run(self) -> None:
        delays = self._delays()
        where = f"{self.config.host}:{self.config.port}"
        while not self._stopping:
            try:
                await self._session()
                delays = self._delays()  # it worked: the next outage starts from a short delay
            except UpstreamRefused as exc:
                self.fatal_error = exc
                LOG.error(
                    "upstream %s refused this hub: %s; not retrying (fix upstream key/password "
                    "in server.json and restart)",
                    where,
                    exc,
                )
                return
            except _Retry as exc:
                LOG.info("upstream %s unavailable: %s", where, exc)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.server.count("errors")
                LOG.exception("upstream link to %s failed", where)
            finally:
                self._unlink()
            if self._stopping:
                return
            delay = next(delays, None)
            if delay is None:
                LOG.error("upstream %s: giving up reconnecting", where)
                return
            LOG.info("reconnecting to upstream %s in %.2f s", where, delay)
            await asyncio.sleep(delay)

    async def _open(self) -> ClientConnection:
        cfg = self.server.config
        where = f"{self.config.host}:{self.config.port}"
        try:
            return await asyncio.wait_for(
                ws_connect(
                    self._url(),
                    ssl=self._ssl_context(),
                    compression=None,
                    open_timeout=None,
                    ping_interval=cfg.ping_interval or None,
                    ping_timeout=cfg.ping_timeout or None,
                    close_timeout=2,
                    max_size=cfg.max_frame_size,
                    user_agent_header=DEFAULT_USERAGENT,
                ),
                self.connect_timeout,
            )
        except asyncio.TimeoutError:
            raise _Retry(f"no websocket within {self.connect_timeout:g} s") from None
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                raise UpstreamRefused(f"access key refused (HTTP {status})") from None
            raise _Retry(f"HTTP {status} at the upgrade") from None
        except (InvalidHandshake, InvalidURI) as exc:
            raise UpstreamRefused(f"{where} is not a HiveMind websocket: {exc}") from None
        except OSError as exc:
            raise _Retry(exc.strerror or str(exc)) from None

    async def _session(self) -> None:
        """One connection: open, handshake, register, relay until it drops."""
        ws = await self._open()
        conn = self._new_connection()
        self.ws, self.conn = ws, conn
        loop = asyncio.get_running_loop()
        conn.start(loop.time())
        greeted = False
        try:
            while True:
                try:
                    frame = await asyncio.wait_for(ws.recv(), self.connect_timeout)
                except asyncio.TimeoutError:
                    if conn.state is State.HANDSHAKING:
                        raise _Retry("the master did not finish the handshake in time") from None
                    continue
                except websockets.ConnectionClosed as exc:
                    raise self._classify_close(exc, greeted, conn.state) from None
                greeted = True
                conn.receive_frame(frame)
                for event in conn.events():
                    self._on_event(event, conn)
                for out in conn.frames_to_send():
                    await ws.send(out)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2)
            conn.connection_lost(ws.close_code, ws.close_reason or "")

    def _on_event(self, event: Any, conn: Connection) -> None:
        if isinstance(event, MessageReceived):
            if self.connected:
                self.server.route(self.peer, event.message)
        elif isinstance(event, HandshakeComplete):
            self._link(conn)
        elif isinstance(event, HelloReceived):
            self._on_hello(event.payload)
        elif isinstance(event, CloseRequested):
            if not self.connected and isinstance(event.error, HandshakeError):
                raise UpstreamRefused(event.reason or "handshake refused")
            raise _Retry(f"link closed: {event.reason} ({event.code})")

    def _on_hello(self, payload: dict[str, Any]) -> None:
        node_id = payload.get("node_id")
        if isinstance(node_id, str) and node_id:
            self.master_node_id = node_id
            link = self.server.router.links.get(self.peer)
            if link is not None:
                link.node_id = node_id
        pub = payload.get("pubkey")
        if isinstance(pub, str) and pub:
            self.master_pubkey = pub

    def _classify_close(
        self, exc: websockets.ConnectionClosed, greeted: bool, state: State
    ) -> Exception:
        rcvd = exc.rcvd
        code = rcvd.code if rcvd is not None else None
        reason = rcvd.reason if rcvd is not None else ""
        why = f"closed with {code}" + (f" ({reason})" if reason else "")
        if state is State.HANDSHAKING and code is not None:
            if code in FATAL_CLOSE_CODES or (not greeted and code == 1000):
                return UpstreamRefused(f"{why} during the handshake: credentials refused")
        return _Retry(why if code is not None else "connection lost")

    # -- router registration ---------------------------------------------------------------

    def _link(self, conn: Connection) -> None:
        server = self.server
        if self.master_node_id is None and conn.node_id:
            self.master_node_id = conn.node_id
        pub = conn.peer_hello.get("pubkey")
        if isinstance(pub, str) and pub:
            self.master_pubkey = pub
        server.add_link(
            Link(
                self.peer,
                LinkKind.UPSTREAM,
                Permissions(),
                node_id=self.master_node_id,
                pubkey=self.master_pubkey,
            ),
            self,
        )
        self.connects += 1
        self.linked.set()
        LOG.info(
            "linked to master %s at %s:%d (%s handshake)",
            self.master_node_id or "?",
            self.config.host,
            self.config.port,
            conn.mode,
        )

    def _unlink(self) -> None:
        """Forget the master link; answer what was waiting on it."""
        self.ws = None
        self._backlog = None
        if not self.linked.is_set():
            return
        self.linked.clear()
        self.server.remove_link(self.peer, self)
        LOG.warning("link to master %s:%d lost", self.config.host, self.config.port)
