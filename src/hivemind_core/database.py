"""The hub's client database: public surface.

Usage::

    from hivemind_core.database import open_database

    with open_database(config) as db:           # backend from config.database
        client = db.add_client("kitchen")        # key and password generated
        db.get_client_by_api_key(client.api_key)

Backends are plugins of the entry-point group ``hivemind.databases``; the
built-in ones are ``sqlite`` (default, one file, safe for the hub and the CLI
as separate processes), ``redis`` (several hubs sharing one server) and
``json`` (the reference's ``clients.json`` layout). The reference's plugin
names (``hivemind-sqlite-db-plugin`` etc.) are accepted as aliases so an old
``server.json`` keeps working.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from hivemind_core import plugins
from hivemind_core.db.model import (
    DEFAULT_ALLOWED_TYPES,
    BackendUnavailable,
    Client,
    ClientDatabase,
    DatabaseError,
    DuplicateClientError,
    InvalidClientError,
)

if TYPE_CHECKING:
    from hivemind_core.config import HubConfig

__all__ = [
    "DEFAULT_ALLOWED_TYPES",
    "BackendUnavailable",
    "Client",
    "ClientDatabase",
    "DatabaseError",
    "DuplicateClientError",
    "InvalidClientError",
    "available_backends",
    "open_database",
]

LOG = logging.getLogger(__name__)

ENTRY_POINT_GROUP = plugins.DATABASE_GROUP

#: Built-in backends, used when the package's entry points are not installed
#: (e.g. running from a source tree).
_BUILTIN = {
    "sqlite": "hivemind_core.db.sqlite_db:SQLiteDatabase",
    "redis": "hivemind_core.db.redis_db:RedisDatabase",
    "json": "hivemind_core.db.json_db:JsonDatabase",
}

#: The reference hub's database plugin names (see docs/hub.md, plugins).
_ALIASES = {
    "hivemind-sqlite-db-plugin": "sqlite",
    "hivemind-redis-db-plugin": "redis",
    "hivemind-json-db-plugin": "json",
}


def available_backends() -> list[str]:
    """Names accepted by :func:`open_database` (entry points plus built-ins)."""
    return plugins.available(ENTRY_POINT_GROUP, _BUILTIN)


def _load_backend(name: str) -> type[ClientDatabase]:
    cls: type[ClientDatabase] = plugins.load(
        ENTRY_POINT_GROUP,
        name,
        ClientDatabase,
        _BUILTIN,
        _ALIASES,
        kind="database backend",
        error=BackendUnavailable,
    )
    return cls


def open_database(
    config: HubConfig | None = None,
    *,
    backend: str | None = None,
    path: str | None = None,
    url: str | None = None,
) -> ClientDatabase:
    """Open the client database described by ``config`` (defaults when None).

    Args:
        config: the hub configuration; its ``database``, ``db_path``,
            ``redis_url`` and ``redis_prefix`` fields are used.
        backend: overrides ``config.database``.
        path: overrides ``config.db_path`` (sqlite file or json file).
        url: overrides ``config.redis_url``.

    The sqlite backend imports the reference's ``clients.json`` found next to
    a database file that does not exist yet (first start after an upgrade).

    Raises:
        BackendUnavailable: unknown backend, missing package, server or file unusable.
    """
    if config is None:
        from hivemind_core.config import HubConfig

        config = HubConfig()
    name = backend or config.database or "sqlite"
    cls = _load_backend(name)
    LOG.debug("opening client database %s", name)
    return cls.from_config(config, path=path, url=url)
