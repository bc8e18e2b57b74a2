"""What every ``hivemind-core`` command shares: the chosen config and database, output helpers."""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Sequence
from typing import NoReturn

import click

from hivemind_core.config import HubConfig, load_config
from hivemind_core.database import Client, ClientDatabase, open_database

__all__ = ["NODE_ID", "CliState", "current", "fail", "resolve", "save", "table", "when"]

#: The optional client argument (numeric id or access key) of most commands.
NODE_ID = click.argument("node_id", required=False)


# ---- context --------------------------------------------------------------


@dataclasses.dataclass
class CliState:
    """What the global options chose; the database is opened on first use."""

    config_path: str | None
    backend: str | None
    db_path: str | None
    redis_url: str | None
    redis_prefix: str | None
    _config: HubConfig | None = None
    _db: ClientDatabase | None = None

    @property
    def config(self) -> HubConfig:
        if self._config is None:
            self._config = load_config(self.config_path)
            if self.backend:
                self._config.database = self.backend
            if self.db_path:
                self._config.db_path = self.db_path
            if self.redis_url:
                self._config.redis_url = self.redis_url
            if self.redis_prefix:
                self._config.redis_prefix = self.redis_prefix
        return self._config

    @property
    def db(self) -> ClientDatabase:
        if self._db is None:
            self._db = open_database(self.config)
        return self._db

    def use(self, db: ClientDatabase) -> None:
        """Make ``db`` the database of this run (closed with it)."""
        self._db = db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def fail(message: str) -> NoReturn:
    raise click.ClickException(message)


def current() -> CliState:
    return click.get_current_context().find_object(CliState)  # type: ignore[return-value]


# ---- output helpers -------------------------------------------------------


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print a plain-text table (no third-party renderer needed)."""
    cells = [[str(c) for c in headers]] + [
        ["" if v is None else str(v) for v in row] for row in rows
    ]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    sep = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def line(row: list[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) + " |"

    click.echo(title)
    click.echo(sep)
    click.echo(line(cells[0]))
    click.echo(sep)
    for row in cells[1:]:
        click.echo(line(row))
    click.echo(sep)


def when(ts: float) -> str:
    if ts is None or ts < 0:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def resolve(node_id: str | None) -> Client:
    """The client named by ``node_id`` (id or access key); see the module docstring."""
    db = current().db
    if node_id is not None:
        client = db.find(node_id)
        if client is None:
            fail(f"no client with id or access key {node_id!r}")
        return client
    clients = db.list_clients()
    if not clients:
        fail("there are no clients; add one with 'hivemind-core add-client'")
    if len(clients) == 1:
        return clients[0]
    if not sys.stdin.isatty():
        fail("several clients exist: give a client id or access key")
    table(
        "HiveMind clients:",
        ["ID", "Name", "Allowed Msg Types"],
        [(c.client_id, c.name, ", ".join(c.allowed_types)) for c in clients],
    )
    choice = click.prompt("Client id or access key", type=str)
    client = db.find(choice)
    if client is None:
        fail(f"no client with id or access key {choice!r}")
    return client


def save(client: Client) -> None:
    current().db.update_client(client)
