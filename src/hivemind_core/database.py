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
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

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

ENTRY_POINT_GROUP = "hivemind.databases"

#: Built-in backends, used when the package's entry points are not installed
#: (e.g. running from a source tree).
_BUILTIN = {
    "sqlite": "hivemind_core.db.sqlite_db:SQLiteDatabase",
    "redis": "hivemind_core.db.redis_db:RedisDatabase",
    "json": "hivemind_core.db.json_db:JsonDatabase",
}

#: The reference hub's database plugin names (hub notes §2.3).
_ALIASES = {
    "hivemind-sqlite-db-plugin": "sqlite",
    "hivemind-redis-db-plugin": "redis",
    "hivemind-json-db-plugin": "json",
}


def available_backends() -> list[str]:
    """Names accepted by :func:`open_database` (entry points plus built-ins)."""
    names = set(_BUILTIN)
    names.update(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
    return sorted(names)


def _load_backend(name: str) -> type[ClientDatabase]:
    name = _ALIASES.get(name, name)
    target: str | None = None
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            target = ep.value
            break
    if target is None:
        target = _BUILTIN.get(name)
    if target is None:
        raise BackendUnavailable(
            f"unknown database backend {name!r} (available: {', '.join(available_backends())})"
        )
    module_name, _, attr = target.partition(":")
    try:
        module = __import__(module_name, fromlist=[attr])
        cls = getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise BackendUnavailable(f"database backend {name!r} cannot be loaded: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, ClientDatabase)):
        raise BackendUnavailable(f"database backend {name!r} is not a ClientDatabase")
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
