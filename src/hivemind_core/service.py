"""The hub service: builds database, agent, binary handler and listener from a HubConfig, and runs them.

``hivemind-core listen`` calls :func:`run`, which blocks until SIGINT/SIGTERM.
Programs that already run an event loop use :func:`build_server` and the
returned :class:`~hivemind_core.server.HubServer` directly::

    server = build_server(config, database)
    await server.start()
    ...
    await server.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path
from typing import Any

from hivemind_bus_client.protocol import crypto
from hivemind_core import plugins
from hivemind_core.agents.base import Agent, load_agent
from hivemind_core.binary import BinaryHandler, LoggingBinaryHandler
from hivemind_core.config import HubConfig, data_dir
from hivemind_core.noise_keys import hub_noise_key
from hivemind_core.server import HubServer
from hivemind_core.tls import server_ssl_context

__all__ = [
    "BINARY_GROUP",
    "build_server",
    "hub_private_key",
    "load_binary_handler",
    "run",
    "serve",
]

LOG = logging.getLogger(__name__)

#: Entry-point group of binary data handlers.
BINARY_GROUP = plugins.BINARY_GROUP

KEY_FILE = "hub_rsa.pem"


def _state_dir(config: HubConfig) -> Path:
    if config.db_path:
        return Path(config.db_path).expanduser().resolve().parent
    return data_dir()


def hub_private_key(directory: str | os.PathLike[str]) -> crypto.PrivateKey:
    """The hub's RSA key from ``directory``, created (mode 0600) on first use."""
    path = Path(directory) / KEY_FILE
    if path.exists():
        return crypto.load_private_key(path.read_bytes())
    key = crypto.create_private_key()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(crypto.private_key_pem(key))
    LOG.info("created the hub's RSA key at %s", path)
    return key


def load_binary_handler(name: str | None) -> BinaryHandler:
    """The binary handler ``name`` (entry point or ``module:Class``); ``None`` logs and drops.

    Raises:
        hivemind_core.errors.PluginError: no such handler (a ``ValueError``).
    """
    if not name or name == "log":
        return LoggingBinaryHandler()
    cls: type[BinaryHandler] = plugins.load(
        BINARY_GROUP, name, BinaryHandler, kind="binary handler"
    )
    handler: BinaryHandler = cls()
    return handler


def build_server(
    config: HubConfig,
    database: Any,
    *,
    agent: Agent | None = None,
    binary_handler: BinaryHandler | None = None,
    private_key: crypto.PrivateKey | None = None,
    noise_key: bytes | None = None,
) -> HubServer:
    """A ready-to-start :class:`HubServer` for ``config`` (agent and handler from the config).

    The RSA key (``hub_rsa.pem``) and the v3 static key (``hub_noise.key``) are
    read from the state folder (beside the database), created on first start.
    """
    state = _state_dir(config)
    ssl_context = None
    if config.ssl:
        ssl_context = server_ssl_context(config.cert, config.key, state / "certs")
    return HubServer(
        config,
        database,
        agent or load_agent(config),
        binary_handler or load_binary_handler(config.binary_handler),
        private_key=private_key or hub_private_key(state),
        site_id=config.extra.get("site_id") if isinstance(config.extra, dict) else None,
        ssl_context=ssl_context,
        noise_key=noise_key or hub_noise_key(state),
    )


def started_line(server: HubServer, database: Any) -> str:
    """The one line ``listen`` logs at start: address, transports, agent, database, protocol."""
    cfg = server.config
    transports = [f"{'wss' if server.ssl_context else 'ws'}:{server.port}"]
    if cfg.http_port:
        transports.append(f"{'https' if server.ssl_context else 'http'}:{cfg.http_port}")
    if cfg.mqtt_host:
        transports.append(f"mqtt:{cfg.mqtt_host}:{cfg.mqtt_port}")
    where = getattr(database, "path", None) or getattr(database, "url_redacted", None) or "-"
    backend = getattr(database, "backend_name", type(database).__name__)
    return (
        f"HiveMind hub {server.node_id} listening on {cfg.host} ({', '.join(transports)}); "
        f"agent {server.agent.name}; database {backend} {where}; protocol v0-v1, v3 (min {cfg.min_protocol_version})"
    )


async def serve(config: HubConfig, database: Any | None = None) -> None:
    """Run a hub until cancelled or until SIGINT/SIGTERM."""
    own_db = database is None
    if database is None:
        from hivemind_core.database import open_database

        database = open_database(config)
    server = build_server(config, database)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    http_listener = None
    mqtt_listener = None
    try:
        await server.start()
        if config.http_port:
            from hivemind_core.http_listener import start_http_listener

            http_listener = await start_http_listener(server, config.host, config.http_port)
        if config.mqtt_host:
            from hivemind_core.mqtt_listener import start_mqtt_listener

            mqtt_listener = await start_mqtt_listener(server)
        LOG.info("%s", started_line(server, database))
        await stop.wait()
        LOG.info("stopping the hub")
    finally:
        # HTTP and MQTT links are not the server's: close them first.
        if mqtt_listener is not None:
            await mqtt_listener.close()
        if http_listener is not None:
            await http_listener.close()
        await server.stop()
        with contextlib.suppress(Exception):  # the last leaves' last_seen
            await asyncio.to_thread(server.node.last_seen.flush)
        if own_db:
            with contextlib.suppress(Exception):
                database.close()


def run(config: HubConfig) -> None:
    """Run a hub for ``config`` in the calling thread until SIGINT/SIGTERM (blocking).

    Raises:
        hivemind_core.agents.AgentError: the agent cannot start (e.g. no OVOS bus).
        OSError: the listener cannot bind its address.
    """
    asyncio.run(serve(config))
