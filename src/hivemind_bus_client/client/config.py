"""Client settings: constructor arguments merged with the identity file.

Shared by the websocket clients (sync and asyncio) and the HTTP client, so
they resolve host, port, credentials and site the same way
(docs/client.md, "Configuration"): an explicit argument wins, then the identity file,
then the default.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from hivemind_bus_client.exceptions import ConfigurationError
from hivemind_bus_client.identity import NodeIdentity
from hivemind_bus_client.protocol.reconnect import backoff

__all__ = [
    "DEFAULT_PING_INTERVAL",
    "DEFAULT_PING_TIMEOUT",
    "DEFAULT_PORT",
    "DEFAULT_USERAGENT",
    "MAX_PROTOCOL_VERSION",
    "ClientConfig",
    "authorization",
    "has_port",
    "resolve",
    "split_host",
]

#: Port of the hub's websocket listener when nothing else says.
DEFAULT_PORT = 5678
#: The reference client's user agent; hubs show it in the peer name.
DEFAULT_USERAGENT = "HiveMessageBusClientV0.0.1"
#: Websocket keepalive defaults (the websockets library's own): tolerant of a
#: hub that answers pings late because it is busy.
DEFAULT_PING_INTERVAL = 20.0
DEFAULT_PING_TIMEOUT = 20.0
#: Highest protocol version a client may be told to speak.
MAX_PROTOCOL_VERSION = 3


def split_host(host: str) -> tuple[str, str]:
    """``(scheme, bare host)`` from ``ws://h``, ``wss://h``, ``http(s)://h`` or ``h``.

    The scheme is ``""`` when none was given. A trailing slash is dropped.
    """
    host = host.strip()
    scheme = ""
    if "://" in host:
        scheme, host = host.split("://", 1)
        scheme = scheme.lower()
    return scheme, host.rstrip("/")


def has_port(host: str) -> bool:
    """True when ``host`` (with or without scheme) ends in ``:port``."""
    _, bare = split_host(host)
    if bare.startswith("["):
        return "]:" in bare
    return bare.count(":") == 1 and bare.rsplit(":", 1)[1].isdigit()


def authorization(useragent: str, key: str) -> str:
    """The ``authorization`` query value: standard Base64 of ``useragent:key``.

    Not URL-encoded: the reference hub splits the raw request line.
    """
    return base64.b64encode(f"{useragent}:{key}".encode()).decode("ascii")


@dataclass
class ClientConfig:
    """Everything a client needs to open a link, after merging with the identity.

    Limits and timeouts are keyword arguments of the client constructors with
    these defaults.
    """

    host: str
    """Bare host name or address (no scheme)."""
    port: int
    """Hub port."""
    key: str = field(repr=False)
    """Access key (never in ``repr``)."""
    password: str | None = field(default=None, repr=False)
    """Handshake password (password handshake; never in ``repr``)."""
    crypto_key: str | None = field(default=None, repr=False)
    """Legacy pre-shared key (16 characters)."""
    useragent: str = DEFAULT_USERAGENT
    """Sent with the access key; hubs use it in the peer name."""
    site_id: str = "unknown"
    """Where this node is; sent in HELLO and in every BUS context."""
    session_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    """OVOS session of this client, kept across reconnects."""
    secure: bool = False
    """``wss://`` (TLS) instead of ``ws://``."""
    self_signed: bool = True
    """Accept any TLS certificate (the reference's default, for self-signed hubs)."""
    compress: bool = True
    """zlib-compress binary frames (reference hubs can only read compressed ones)."""
    binarize: bool = True
    """Use binary frames when the hub offers them."""
    share_bus: bool = False
    """Forward every message of the local OVOS bus as SHARED_BUS."""
    encodings: Sequence[str] | None = None
    """Text encodings to offer, in order (``None``: all, fastest first)."""
    ciphers: Sequence[str] | None = None
    """Ciphers to offer, in order (``None``: AES-GCM, then ChaCha20-Poly1305)."""
    connect_timeout: float = 15.0
    """Seconds for opening the socket and completing the handshake."""
    handshake_timeout: float = 10.0
    """Seconds from the socket opening until the link is keyed."""
    reconnect: bool = True
    """Reconnect after a dropped link (never after a credential refusal)."""
    reconnect_delays: Iterable[float] | Callable[[], Iterable[float]] | None = None
    """Delays between reconnect attempts; a finite iterable bounds the attempts.
    ``None``: jittered exponential backoff starting under a second."""
    max_reconnect_delay: float = 30.0
    """Cap of the default backoff, in seconds."""
    ping_interval: float | None = DEFAULT_PING_INTERVAL
    """Websocket keepalive: seconds between pings (``None`` disables); the
    constructor also takes it as ``websocket_ping_interval``."""
    ping_timeout: float | None = DEFAULT_PING_TIMEOUT
    """Seconds to wait for a pong before the link is declared dead (``None``: for
    ever). A busy hub answers pings only after the work queued before them (the
    reference hub 4.0.0 does), so a short timeout drops a healthy link."""
    websocket_connect_timeout: float = 30.0
    """Seconds for opening the websocket (TCP, TLS, HTTP upgrade); the whole
    ``connect()`` stays bounded by ``connect_timeout``."""
    max_protocol_version: int = MAX_PROTOCOL_VERSION
    """Highest HiveMind protocol version to speak (1 to 3). At 3, with a password,
    the client runs protocol v3 (Noise) when the hub offers it, else v1; 1 and 2
    mean v1 only."""
    send_timeout: float = 10.0
    """How long ``emit`` waits for a link that is reconnecting."""
    max_size: int = 16 * 1024 * 1024
    """Largest frame accepted, in bytes."""
    max_inflated: int = 1024 * 1024
    """Bytes a compressed binary frame may inflate to (1009 above it): far
    below ``max_size``, so a small zlib bomb cannot become a huge message.
    Raise it on both ends for big binarized messages (audio goes as BINARY,
    never compressed, and is not bound by it)."""
    answer_pings: bool = True
    """Answer a PING flood with a PONG (topology discovery)."""
    cascade_timeout: float = 5.0
    """Seconds a CASCADE request gathers answers before the select callback runs."""

    def delays(self) -> Iterator[float]:
        """Delays between connect attempts: ``reconnect_delays``, else jittered backoff."""
        delays = self.reconnect_delays
        if delays is None:
            return backoff(initial=0.5, max_delay=self.max_reconnect_delay)
        if callable(delays):
            return iter(delays())
        return iter(delays)

    @property
    def url(self) -> str:
        """Websocket URL with the ``authorization`` query, as the reference builds it."""
        scheme = "wss" if self.secure else "ws"
        host = self.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # IPv6 literal
        return f"{scheme}://{host}:{self.port}/?authorization={authorization(self.useragent, self.key)}"

    @property
    def where(self) -> str:
        """``host:port``, for messages."""
        return f"{self.host}:{self.port}"

    def redacted(self) -> str:
        """Loggable summary (no key, no password)."""
        return (
            f"{'wss' if self.secure else 'ws'}://{self.host}:{self.port} as {self.useragent!r} "
            f"site={self.site_id!r} session={self.session_id}"
        )


def resolve(
    *,
    identity: NodeIdentity | None,
    key: str | None,
    password: str | None,
    crypto_key: str | None,
    host: str | None,
    port: int | None,
    useragent: str | None,
    site_id: str | None,
    session_id: str | None,
    require_credentials: bool = True,
    **options: Any,
) -> tuple[ClientConfig, NodeIdentity]:
    """Merge arguments with the identity file into a :class:`ClientConfig`.

    Raises:
        ConfigurationError: no access key, or no host, from either source; a
            ``max_protocol_version`` outside 1..3.
    """
    ident = identity if identity is not None else NodeIdentity()
    key = key or ident.access_key
    password = password if password is not None else ident.password
    raw_host = host or ident.default_master
    if require_credentials and not key:
        raise ConfigurationError(
            "no access key: pass key=... or run 'hivemind-client set-identity --key ...'"
        )
    if not raw_host:
        raise ConfigurationError(
            "no hub host: pass host=... or run 'hivemind-client set-identity --host ...'"
        )
    scheme, bare = split_host(raw_host)
    host_port = None
    if bare.startswith("["):  # [IPv6] or [IPv6]:port
        inner, _, rest = bare[1:].partition("]")
        bare = inner
        if rest.startswith(":") and rest[1:].isdigit():
            host_port = int(rest[1:])
    elif bare.count(":") == 1:  # host:port
        name, _, text = bare.partition(":")
        if text.isdigit():
            bare, host_port = name, int(text)
    port = port or host_port or ident.default_port or DEFAULT_PORT
    version = options.get("max_protocol_version", MAX_PROTOCOL_VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= 3:
        raise ConfigurationError(f"max_protocol_version must be 1, 2 or 3, not {version!r}")
    cfg = ClientConfig(
        host=bare,
        port=int(port),
        key=key or "",
        password=password or None,
        crypto_key=crypto_key or None,
        useragent=useragent or DEFAULT_USERAGENT,
        site_id=site_id or ident.site_id or "unknown",
        secure=scheme in ("wss", "https"),
        **options,
    )
    if session_id:
        cfg.session_id = session_id
    return cfg, ident
