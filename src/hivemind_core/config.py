"""Hub configuration: one dataclass, mapped onto ``server.json``.

Every limit and timeout of the hub is a field here with a safe default. The
file lives at ``$XDG_CONFIG_HOME/hivemind-core/server.json`` (default
``~/.config/hivemind-core/server.json``); missing keys take their defaults,
unknown keys are kept in ``extra`` and logged once. The reference hub's
``server.json`` layout (``network_protocol``/``agent_protocol``/``database``
sections) is read too, so an existing install keeps its settings.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import logging
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "HubConfig",
    "UpstreamConfig",
    "config_dir",
    "data_dir",
    "default_config_path",
    "is_own_listener",
    "load_config",
    "save_config",
]

LOG = logging.getLogger(__name__)


def config_dir() -> Path:
    """``$XDG_CONFIG_HOME/hivemind-core`` (default ``~/.config/hivemind-core``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "hivemind-core"


def data_dir() -> Path:
    """``$XDG_DATA_HOME/hivemind-core`` (default ``~/.local/share/hivemind-core``)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "hivemind-core"


def default_config_path() -> Path:
    """Where ``server.json`` is read from unless told otherwise."""
    return config_dir() / "server.json"


def _hub_defaults() -> tuple[list[str], list[str]]:
    """The hub's encoding and cipher preference orders (imported late: the
    connection module loads the OVOS message classes, which CLI commands that
    only touch the database do not need)."""
    from hivemind_bus_client.protocol.connection import HUB_CIPHERS, HUB_ENCODINGS

    return [e.value for e in HUB_ENCODINGS], [c.value for c in HUB_CIPHERS]


@dataclass
class UpstreamConfig:
    """The master hub this hub joins as a satellite (nested hives). Off when ``host`` is empty."""

    #: The master's address; empty = this hub has no master.
    host: str = ""
    port: int = 5678
    #: This hub's access key and password at the master (``hivemind-core add-client`` there).
    key: str = field(default="", repr=False)
    password: str = field(default="", repr=False)
    #: Connect with ``wss://``; ``self_signed`` skips certificate verification.
    ssl: bool = False
    self_signed: bool = True
    #: Useragent presented to the master (part of this hub's peer string there).
    useragent: str = "HiveMind-relay-hub"
    #: Site announced to the master (default: this hub's own ``site_id``).
    site_id: str = ""
    #: Let the master watch this hub's bus (docs/hub.md, "Nested hives"): what
    #: satellites inject here, and the agent's answers to them, are also sent
    #: up as SHARED_BUS. Off by default: sharing must be asked for.
    share_bus: bool = False
    #: Seconds for TCP, TLS and the websocket upgrade of one connection attempt.
    connect_timeout: float = 10.0
    #: Seconds the HiveMind handshake may take once the socket is open.
    handshake_timeout: float = 10.0


@dataclass
class HubConfig:
    """Everything a hub needs to run. Field docs are the reference for ``server.json``."""

    #: Address the websocket listener binds.
    host: str = "0.0.0.0"
    #: Websocket listener port.
    port: int = 5678
    #: Serve ``wss://``; uses ``cert``/``key`` or generates a self-signed pair in ``data_dir()``.
    ssl: bool = False
    cert: str | None = None
    key: str | None = None
    #: Optional HTTP polling listener port (the reference's http plugin); 0 = off.
    http_port: int = 0
    #: MQTT broker the hub joins to serve satellites over MQTT
    #: (``hivemind_core.mqtt_listener``); None = no MQTT.
    mqtt_host: str | None = None
    #: The broker's port.
    mqtt_port: int = 1883
    #: First topic level(s): satellites use ``<prefix>/<access_key>/in|out|status``.
    mqtt_prefix: str = "hivemind"
    #: The hub's login at the broker, when the broker wants one.
    mqtt_username: str | None = None
    mqtt_password: str | None = None
    #: Connect to the broker with TLS (system trust store).
    mqtt_tls: bool = False

    #: Client database backend: ``sqlite`` (default), ``redis``, ``json``, or an
    #: entry-point name of group ``hivemind.databases``.
    database: str = "sqlite"
    #: SQLite file (default ``data_dir()/clients.db``) or JSON file path.
    db_path: str | None = None
    #: Redis URL for the redis backend.
    redis_url: str = "redis://127.0.0.1:6379/0"
    #: Key prefix in Redis, so several hubs can share one server.
    redis_prefix: str = "hivemind"

    #: What answers satellites: ``embedded`` (default when no OVOS bus is
    #: configured), ``ovos``, or an entry-point name of group ``hivemind.agents``.
    agent: str = "embedded"
    #: OVOS message bus for the ``ovos`` agent.
    ovos_host: str = "127.0.0.1"
    ovos_port: int = 8181
    ovos_route: str = "/core"
    #: Seconds to wait for the OVOS bus at start before failing with a clear error.
    ovos_connect_timeout: float = 10.0
    #: Binary data handler entry point (group ``hivemind.binary_handlers``); None logs and drops.
    binary_handler: str | None = None

    #: Encodings accepted, in the hub's order of preference.
    allowed_encodings: list[str] = field(default_factory=lambda: _hub_defaults()[0])
    #: Ciphers accepted, in the hub's order of preference.
    allowed_ciphers: list[str] = field(default_factory=lambda: _hub_defaults()[1])
    #: Choose by the hub's order (fast encodings first) rather than the client's.
    prefer_hub_order: bool = True
    #: Offer binary framing to clients.
    binarize: bool = False
    #: Protocol v0 (HiveMind-js and other old clients): a client whose row has
    #: a ``crypto_key`` may skip the handshake and seal its frames under that
    #: pre-shared key (docs/hub.md, "Protocol v0 clients"). False: every client
    #: must handshake.
    allow_v0: bool = True
    #: Lowest protocol a client may use: 1 (v1 and v3) or 3 (v3, Noise, only);
    #: a client row's ``min_protocol_version`` may raise it for that client.
    min_protocol_version: int = 1

    #: Largest websocket frame accepted, bytes (close 1009 above it).
    max_frame_size: int = 16 * 1024 * 1024
    #: Bytes a compressed binary frame may inflate to (close 1009 above it):
    #: far below ``max_frame_size``, so 15 KB of zlib cannot become 21 MB.
    max_inflated: int = 1024 * 1024
    #: Largest frame the hub writes when it forwards a message (PROPAGATE,
    #: BROADCAST, ESCALATE, any routed message): above it the message is not
    #: forwarded, the sender is told (``hive.policy.denied``, ``too_big``) and
    #: it is counted ``forward_too_big``. Peers' default limit is 16 MiB.
    max_forward_size: int = 4 * 1024 * 1024
    #: Seconds a new connection has to finish its handshake.
    handshake_timeout: float = 20.0
    #: Threads that derive keys (PBKDF2, Argon2id) off the event loop; at most
    #: this many run at once (an Argon2id holds 64 MiB while it runs).
    key_workers: int = 2
    #: Key derivations queued or running before a new handshake is refused (1013).
    key_queue: int = 32
    #: Handshakes one link may make (the opening and its re-keys) per second,
    #: after a burst of ``rekey_burst``; past it the link closes 1008. The stock
    #: client repeats its HANDSHAKE every 5 s until answered. 0 = no limit.
    rekey_rate: float = 0.5
    rekey_burst: int = 4
    #: Handshakes one access key may make across all its links per second,
    #: after a burst of ``key_handshake_burst`` (size it to the satellites that
    #: share one key and reconnect together after a restart); past it the link
    #: closes 1013 (try again later). Neither refusal counts against the
    #: address. 0 = no limit.
    key_handshake_rate: float = 4.0
    key_handshake_burst: int = 64
    #: Seconds between the ticks that measure how long the event loop was
    #: blocked (stats ``loop_lag_max_ms``, ``loop_stalls``); 0 = off.
    loop_watch: float = 0.0
    #: A tick later than this many milliseconds is a stall: counted and logged.
    loop_stall_ms: float = 50.0
    #: Websocket ping interval and the time a pong may take, seconds (dead-peer detection).
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    #: Close a link that sent nothing for this long, seconds; 0 = never.
    idle_timeout: float = 0.0
    #: Failed authentications allowed per source address per ``auth_window`` seconds.
    failed_auth_budget: int = 10
    auth_window: float = 60.0
    #: Permission violations (origination attempts) tolerated before closing with 4003.
    max_violations: int = 3
    #: Frames queued per link before the hub drops the slowest consumer.
    send_queue: int = 1024

    #: Transport messages carry at most this many route hops.
    hop_limit: int = 16
    #: PROPAGATE flood ids remembered for duplicate suppression.
    flood_cache_size: int = 4096
    #: Seconds a hub waits for its local agent before forwarding a QUERY upstream.
    query_timeout: float = 8.0
    #: PING floods per second one satellite link may start (each one makes
    #: every node answer), after a burst of ``ping_burst``; 0 = no limit.
    ping_rate: float = 1.0
    ping_burst: int = 5
    #: ``alias -> PEM`` public keys of nodes whose PROPAGATE(BUS) this hub
    #: injects and whose INTERCOM it opens (docs/hub.md, "Trusted keys"); the
    #: hub also trusts the keys of its identity file (``NodeIdentity.trusted_keys``).
    trusted_keys: dict[str, str] = field(default_factory=dict)
    #: Also trust the keys of the identity file (off: only ``trusted_keys``).
    identity_trust: bool = True

    #: The master hub this hub joins (nested hives).
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)

    # -- client addresses (failed-auth throttle) --------------------------------
    #: CIDRs of reverse proxies whose ``X-Forwarded-For`` names the client's
    #: address (the throttle then counts that address, not the proxy's); from
    #: any other peer the header is ignored. Default: none trusted.
    trusted_proxies: list[str] = field(default_factory=list)
    #: Bytes of body the HTTP listener reads before it knows the access key
    #: (``/connect``, a form-borne ``authorization``); a larger body is refused
    #: (413) unread, so unauthenticated uploads cost the hub nothing.
    http_preauth_body: int = 4096

    # -- resource bounds --
    #: Bytes of frames queued for one link (websocket backlog, HTTP poll queue,
    #: the master link) before the hub closes it with 1013: a satellite that
    #: stops reading costs at most this much memory.
    send_queue_bytes: int = 4 * 1024 * 1024
    #: Websocket connections open at once, in total and from one address;
    #: past either the new socket is closed with 1013 and a reason. 0 = no cap.
    max_connections: int = 1024
    max_connections_per_address: int = 128
    #: Seconds a ``last_seen`` time waits before it is written (in a worker
    #: thread, batched): a locked database never stalls live links.
    last_seen_delay: float = 1.0
    #: Seconds a ``last_seen`` write waits for another process's sqlite lock
    #: before it is skipped (it can wait for the next connect or leave).
    last_seen_busy_timeout: float = 0.25

    #: Unknown keys found in the file, kept so a save does not lose them.
    extra: dict[str, Any] = field(default_factory=dict)

    # -- admission hardening ----------------------------------------------------------
    #: Open QUERY + CASCADE bindings of requests from one satellite link (of
    #: the 1,024 the hub keeps in all); over it that link's new requests are
    #: dropped and counted ``pending_quota``, so one satellite cannot starve
    #: the others' QUERYs.
    max_pending_per_link: int = 64
    #: Messages per second one satellite may put into the agent (BUS, wrapped
    #: or plain, and local asks of QUERY/CASCADE), after a burst of
    #: ``agent_burst``; over it each one is answered ``hive.policy.denied``
    #: (``rate_limited``) and counted. 0 = no limit.
    agent_rate: float = 50.0
    agent_burst: int = 100
    #: PROPAGATE messages per second a non-admin satellite may send (each
    #: one reaches every other link), after a burst of ``propagate_burst``;
    #: denied and counted like ``agent_rate``. 0 = no limit.
    propagate_rate: float = 2.0
    propagate_burst: int = 10

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what ``server.json`` holds)."""
        data = dataclasses.asdict(self)
        extra = data.pop("extra")
        data.update(extra)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HubConfig:
        """Build from a ``server.json`` dict (ours, or the reference's layout)."""
        data = dict(data)
        data.update(_from_reference_layout(data))
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in data.items():
            if key == "upstream" and isinstance(value, dict):
                up = {k: v for k, v in value.items() if k in UpstreamConfig.__dataclass_fields__}
                kwargs["upstream"] = UpstreamConfig(**up)
            elif key in names and key != "extra":
                kwargs[key] = value
            else:
                extra[key] = value
        cfg = cls(**kwargs)
        cfg.extra = extra
        return cfg


def _from_reference_layout(data: dict[str, Any]) -> dict[str, Any]:
    """Translate the reference hub's plugin sections into our flat fields."""
    out: dict[str, Any] = {}
    net = data.get("network_protocol")
    if isinstance(net, dict):
        ws = net.get("hivemind-websocket-plugin")
        if isinstance(ws, dict):
            for key in ("host", "port", "ssl"):
                if key in ws and key not in data:
                    out[key] = ws[key]
    agent = data.get("agent_protocol")
    if isinstance(agent, dict) and "agent" not in data:
        module = agent.get("module")
        if module == "hivemind-ovos-agent-plugin":
            out["agent"] = "ovos"
            conf = agent.get(module) or {}
            if isinstance(conf, dict):
                if "host" in conf:
                    out["ovos_host"] = conf["host"]
                if "port" in conf:
                    out["ovos_port"] = conf["port"]
    return out


def load_config(path: str | os.PathLike[str] | None = None) -> HubConfig:
    """Read ``server.json`` (defaults when the file does not exist).

    Raises:
        ValueError: the file exists but is not a JSON object.
    """
    p = Path(path) if path else default_config_path()
    if not p.exists():
        return HubConfig()
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{p} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{p} must hold a JSON object")
    return HubConfig.from_dict(data)


def save_config(config: HubConfig, path: str | os.PathLike[str] | None = None) -> Path:
    """Write ``server.json`` atomically and return its path."""
    p = Path(path) if path else default_config_path()
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(config.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, p)
    return p


_ANY_ADDRESSES = frozenset({"", "0.0.0.0", "::", "*"})


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
