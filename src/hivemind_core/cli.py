"""``hivemind-core``: the hub's admin command line.

Every command of the reference hub 4.0.0 keeps its name, arguments and
options (hub notes §3), so scripts and docs written for it keep working, with
these differences:

* clients are addressed by numeric id **or** access key; when the argument is
  omitted and there is exactly one client, that client is used, and on a
  terminal you are asked;
* ``delete-client`` removes the client for good (no ``revoked`` row);
* ``add-client`` prints the default role the client gets and does not invent
  a pre-shared crypto key;
* errors are one line on stderr with a non-zero exit, never a traceback;
* ``listen`` takes ``--host/--port/--ssl/--cert/--key`` and the database options;
* new: ``allow-broadcast``/``blacklist-broadcast`` and ``migrate-db``.

Global options choose the configuration file and the database; each also
reads an environment variable, so tests and containers can point the CLI at
another database without a ``server.json``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import click

from hivemind_core.config import HubConfig, data_dir, load_config
from hivemind_core.database import Client, ClientDatabase, DatabaseError, open_database

__all__ = ["cli", "main"]

LOG = logging.getLogger(__name__)


# ---- context --------------------------------------------------------------


@dataclasses.dataclass
class _State:
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

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def _fail(message: str) -> NoReturn:
    raise click.ClickException(message)


def _state() -> _State:
    return click.get_current_context().find_object(_State)  # type: ignore[return-value]


# ---- output helpers -------------------------------------------------------


def _table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
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


def _when(ts: float) -> str:
    if ts is None or ts < 0:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _resolve(node_id: str | None) -> Client:
    """The client named by ``node_id`` (id or access key); see the module docstring."""
    db = _state().db
    if node_id is not None:
        client = db.find(node_id)
        if client is None:
            _fail(f"no client with id or access key {node_id!r}")
        return client
    clients = db.list_clients()
    if not clients:
        _fail("there are no clients; add one with 'hivemind-core add-client'")
    if len(clients) == 1:
        return clients[0]
    if not sys.stdin.isatty():
        _fail("several clients exist: give a client id or access key")
    _table(
        "HiveMind clients:",
        ["ID", "Name", "Allowed Msg Types"],
        [(c.client_id, c.name, ", ".join(c.allowed_types)) for c in clients],
    )
    choice = click.prompt("Client id or access key", type=str)
    client = db.find(choice)
    if client is None:
        _fail(f"no client with id or access key {choice!r}")
    return client


def _save(client: Client) -> None:
    _state().db.update_client(client)


# ---- the group ------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    envvar="HIVEMIND_CONFIG",
    help="server.json to read (default: $XDG_CONFIG_HOME/hivemind-core/server.json).",
)
@click.option(
    "--db-backend",
    "backend",
    envvar="HIVEMIND_DB_BACKEND",
    help="Database backend: sqlite (default), redis, json, or a plugin name.",
)
@click.option(
    "--db-path",
    envvar="HIVEMIND_DB_PATH",
    type=click.Path(dir_okay=False),
    help="SQLite or JSON file (default: $XDG_DATA_HOME/hivemind-core/clients.db).",
)
@click.option("--redis-url", envvar="HIVEMIND_REDIS_URL", help="Redis URL for the redis backend.")
@click.option("--redis-prefix", envvar="HIVEMIND_REDIS_PREFIX", help="Key prefix in Redis.")
@click.option("-v", "--verbose", is_flag=True, help="Log what happens (to stderr).")
@click.pass_context
def cli(
    ctx: click.Context,
    config_path: str | None,
    backend: str | None,
    db_path: str | None,
    redis_url: str | None,
    redis_prefix: str | None,
    verbose: bool,
) -> None:
    """Administer a HiveMind hub: its clients, their permissions, and the listener."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    state = _State(config_path, backend, db_path, redis_url, redis_prefix)
    ctx.obj = state
    ctx.call_on_close(state.close)


NODE_ID = click.argument("node_id", required=False)


# ---- clients ----------------------------------------------------------------


@cli.command("add-client")
@click.option("--name", default="", help="Friendly name (default HiveMind-Node-<n>).")
@click.option("--access-key", help="Access key (default: 32 random hex digits).")
@click.option("--password", help="Password for the handshake (default: 32 random hex digits).")
@click.option("--crypto-key", help="Legacy pre-shared key, exactly 16 characters (deprecated).")
@click.option(
    "--admin", type=bool, default=False, show_default=True, help="Give administrator powers."
)
def add_client(
    name: str, access_key: str | None, password: str | None, crypto_key: str | None, admin: bool
) -> None:
    """Register a client and print its credentials and role."""
    if crypto_key is not None:
        if len(crypto_key) != 16:
            _fail("the encryption key needs to be exactly 16 characters")
        click.echo(
            "WARNING: the pre-shared encryption key is deprecated; clients should use the password.",
            err=True,
        )
    state = _state()
    db = state.db
    client = db.add_client(
        name=name or f"HiveMind-Node-{len(db)}",
        api_key=access_key,
        password=password,
        crypto_key=crypto_key,
        is_admin=admin,
    )
    click.echo(f"Database backend: {db.backend_name}")
    click.echo("Credentials added to database!\n")
    click.echo(f"Node ID: {client.client_id}")
    click.echo(f"Admin Privileges: {client.is_admin}")
    click.echo(f"Friendly Name: {client.name}")
    click.echo(f"Access Key: {client.api_key}")
    click.echo(f"Password: {client.password}")
    if client.crypto_key:
        click.echo(f"Encryption Key: {client.crypto_key}")
    click.echo("\nRole (default satellite): may send")
    for msg_type in client.allowed_types:
        click.echo(f"  - {msg_type}")
    click.echo(
        f"Broadcast: {client.can_broadcast and client.is_admin}  "
        f"Escalate: {client.can_escalate}  Propagate: {client.can_propagate}"
    )
    click.echo("Change it with allow-msg / blacklist-msg and the allow-/blacklist- commands.")


@cli.command("delete-client")
@NODE_ID
def delete_client(node_id: str | None) -> None:
    """Delete a client for good: its access key stops working at once."""
    client = _resolve(node_id)
    if not _state().db.delete_client(client.client_id):
        _fail(f"client {client.client_id} was already deleted")
    click.echo("Deleted client, its credentials no longer authenticate:")
    click.echo(f"Node ID: {client.client_id}")
    click.echo(f"Friendly Name: {client.name}")
    click.echo(f"Access Key: {client.api_key}")


@cli.command("list-clients")
def list_clients() -> None:
    """Show every client with its credentials."""
    clients = _state().db.list_clients()
    if not clients:
        click.echo("No clients. Add one with 'hivemind-core add-client'.")
        return
    _table(
        "HiveMind Credentials:",
        ["ID", "Name", "Access Key", "Password", "Crypto Key", "Admin", "Last Seen"],
        [
            (
                c.client_id,
                c.name,
                c.api_key,
                c.password or "",
                c.crypto_key or "",
                "yes" if c.is_admin else "",
                _when(c.last_seen),
            )
            for c in clients
        ],
    )


@cli.command("rename-client")
@NODE_ID
@click.option("--name", required=True, help="The new friendly name.")
def rename_client(node_id: str | None, name: str) -> None:
    """Change a client's friendly name."""
    client = _resolve(node_id)
    old = client.name
    client.name = name
    _save(client)
    click.echo(f"Renamed '{old}' to {name}")


def _flag_command(name: str, field: str, value: bool, done: str, already: str, help_: str) -> None:
    """Register a command that sets one boolean permission."""

    @cli.command(name, help=help_)
    @NODE_ID
    def command(node_id: str | None) -> None:
        client = _resolve(node_id)
        if getattr(client, field) == value:
            click.echo(already.format(name=client.name))
            return
        setattr(client, field, value)
        _save(client)
        click.echo(done.format(name=client.name))


_flag_command(
    "make-admin",
    "is_admin",
    True,
    "Gave administrator powers to {name}",
    "{name} is already an administrator!",
    "Give a client administrator powers.",
)
_flag_command(
    "revoke-admin",
    "is_admin",
    False,
    "Revoked administrator powers for {name}",
    "{name} is not an administrator",
    "Take administrator powers away from a client.",
)
for _verb, _value in (("allow", True), ("blacklist", False)):
    for _what, _field in (
        ("escalate", "can_escalate"),
        ("propagate", "can_propagate"),
        ("broadcast", "can_broadcast"),
    ):
        _flag_command(
            f"{_verb}-{_what}",
            _field,
            _value,
            ("Allowed {name} to " if _value else "Blacklisted {name} from ") + f"{_what} messages",
            "{name} "
            + ("is already allowed to " if _value else "is already blacklisted from ")
            + f"{_what} messages",
            ("Allow a client to " if _value else "Forbid a client to ")
            + f"send {_what.upper()} messages.",
        )


def _list_command(
    name: str, arg: str, field: str, add: bool, done: str, already: str, help_: str
) -> None:
    """Register a command that adds an item to, or removes it from, one list of the record."""

    @cli.command(name, help=help_)
    @click.argument(arg)
    @NODE_ID
    def command(node_id: str | None, **kwargs: str) -> None:
        item = kwargs[arg]
        client = _resolve(node_id)
        items: list[str] = getattr(client, field)
        if (item in items) == add:
            click.echo(already.format(name=client.name, item=item))
            return
        if add:
            items.append(item)
        else:
            items[:] = [i for i in items if i != item]
        _save(client)
        click.echo(done.format(name=client.name, item=item))


_list_command(
    "allow-msg",
    "msg_type",
    "allowed_types",
    True,
    "Allowed '{item}' for {name}",
    "Client {name} already allowed '{item}'",
    "Let a client send a bus message type.",
)
_list_command(
    "blacklist-msg",
    "msg_type",
    "allowed_types",
    False,
    "Blacklisted '{item}' for {name}",
    "Client '{name}' message already blacklisted: '{item}'",
    "Stop a client sending a bus message type (removes it from its allowed types).",
)
_list_command(
    "blacklist-skill",
    "skill_id",
    "skill_blacklist",
    True,
    "Blacklisted '{item}' for {name}",
    "Client {name} already blacklisted '{item}'",
    "Keep a skill from answering a client.",
)
_list_command(
    "allow-skill",
    "skill_id",
    "skill_blacklist",
    False,
    "Allowed '{item}' for {name}",
    "Skill '{item}' is not blacklisted for {name}",
    "Let a blacklisted skill answer a client again.",
)
_list_command(
    "blacklist-intent",
    "intent_id",
    "intent_blacklist",
    True,
    "Blacklisted '{item}' for {name}",
    "Client {name} already blacklisted '{item}'",
    "Keep an intent (skill_id:intent_name) from answering a client.",
)
_list_command(
    "allow-intent",
    "intent_id",
    "intent_blacklist",
    False,
    "Allowed '{item}' for {name}",
    "Intent '{item}' is not blacklisted for {name}",
    "Let a blacklisted intent answer a client again.",
)


@cli.command("export-clients")
@click.option(
    "--path",
    type=click.Path(),
    help="A file, or a directory (gets hivemind_clients.csv); default stdout.",
)
def export_clients(path: str | None) -> None:
    """Export the clients' credentials as CSV (plaintext secrets: keep the file safe)."""
    clients = _state().db.list_clients()
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["client_id", "name", "is_admin", "access_key", "password", "crypto_key"])
    for c in clients:
        writer.writerow(
            [c.client_id, c.name, c.is_admin, c.api_key, c.password or "", c.crypto_key or ""]
        )
    if path is None:
        click.echo(buf.getvalue(), nl=False)
        return
    target = Path(path)
    if target.is_dir():
        target = target / "hivemind_clients.csv"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(buf.getvalue(), encoding="utf-8")
    click.echo(f"Exported {len(clients)} client(s) to {target}")


@cli.command("migrate-db")
@click.option(
    "--from",
    "source_backend",
    default="json",
    show_default=True,
    help="Backend to read: json (the reference's clients.json), sqlite or redis.",
)
@click.option(
    "--from-path",
    type=click.Path(dir_okay=False),
    help="Source file (default for json: $XDG_DATA_HOME/hivemind-core/clients.json).",
)
@click.option("--from-url", help="Source Redis URL.")
@click.option("--from-prefix", help="Source Redis key prefix.")
def migrate_db(
    source_backend: str, from_path: str | None, from_url: str | None, from_prefix: str | None
) -> None:
    """Copy clients into the current database, keeping ids and every field."""
    from hivemind_core.db.migration import copy_clients, import_reference_json

    state = _state()
    config = state.config
    target = _open_target(config)
    state._db = target
    if source_backend in ("json", "hivemind-json-db-plugin"):
        source_path = Path(from_path) if from_path else data_dir() / "clients.json"
        report = import_reference_json(source_path, target)
        source_label = str(source_path)
    else:
        source_config = dataclasses.replace(config, database=source_backend)
        if from_prefix:
            source_config.redis_prefix = from_prefix
        with open_database(source_config, path=from_path, url=from_url) as source:
            if source.backend_name == target.backend_name and _same_location(
                source_config, config, from_path, from_url
            ):
                _fail("source and target are the same database")
            report = copy_clients(source, target)
        source_label = source_backend
    click.echo(
        f"Migrated from {source_label} into {target.backend_name}: "
        f"{report.imported} imported, {report.updated} updated, {len(report.skipped)} skipped"
    )
    for client_id, reason in report.skipped:
        click.echo(f"  skipped client {client_id}: {reason}")
    if report.tombstones:
        click.echo(
            f"  {len(report.tombstones)} deleted (revoked) record(s) not imported; their ids stay unused"
        )
    if report.skipped:
        sys.exit(1)


def _open_target(config: HubConfig) -> ClientDatabase:
    """The target database, without the sqlite backend's automatic import (we import explicitly)."""
    if config.database in ("sqlite", "hivemind-sqlite-db-plugin"):
        from hivemind_core.db.sqlite_db import SQLiteDatabase, default_sqlite_path

        return SQLiteDatabase(config.db_path or default_sqlite_path(), import_legacy=False)
    return open_database(config)


def _same_location(
    source: HubConfig, target: HubConfig, from_path: str | None, from_url: str | None
) -> bool:
    if source.database == "redis":
        return (
            from_url or source.redis_url
        ) == target.redis_url and source.redis_prefix == target.redis_prefix
    if from_path is None or target.db_path is None:
        return from_path == target.db_path
    return Path(from_path).resolve() == Path(target.db_path).resolve()


# ---- config and server ------------------------------------------------------


@cli.command("print-config")
def print_config() -> None:
    """Print the hub configuration in effect (server.json merged with defaults and options)."""
    click.echo(json.dumps(_state().config.to_dict(), indent=2, ensure_ascii=False))


@cli.command("listen")
@click.option("--host", help="Address to bind (default from server.json, else 0.0.0.0).")
@click.option(
    "--port", type=click.IntRange(1, 65535), help="Port (default from server.json, else 5678)."
)
@click.option(
    "--ssl/--no-ssl",
    "use_ssl",
    default=None,
    help="Serve wss:// (self-signed certificate unless --cert/--key).",
)
@click.option("--cert", type=click.Path(dir_okay=False), help="TLS certificate (PEM).")
@click.option("--key", type=click.Path(dir_okay=False), help="TLS private key (PEM).")
@click.option("--agent", help="What answers satellites: embedded, ovos, or a plugin name.")
@click.option(
    "--upstream-host",
    help="Join this master hub as a satellite (nested hives; default: server.json upstream.host).",
)
@click.option(
    "--upstream-port", type=click.IntRange(1, 65535), help="The master's port (default 5678)."
)
@click.option("--upstream-key", help="This hub's access key at the master.")
@click.option("--upstream-password", help="This hub's password at the master.")
@click.option(
    "--upstream-share-bus/--no-upstream-share-bus",
    default=None,
    help="Let the master watch this hub's bus (SHARED_BUS; default off).",
)
@click.option(
    "--http-port",
    type=click.IntRange(0, 65535),
    help="Also serve the HTTP polling protocol on this port (0 = off; the reference uses 5679).",
)
@click.option(
    "--mqtt-host", help="Also serve satellites through this MQTT broker (needs the mqtt extra)."
)
@click.option(
    "--mqtt-port", type=click.IntRange(1, 65535), help="The MQTT broker's port (default 1883)."
)
@click.option(
    "--mqtt-prefix", help="MQTT topic prefix (default hivemind: hivemind/<key>/in|out|status)."
)
@click.option("--mqtt-username", help="The hub's login at the MQTT broker.")
@click.option("--mqtt-password", help="The hub's password at the MQTT broker.")
def listen(
    host: str | None,
    port: int | None,
    use_ssl: bool | None,
    cert: str | None,
    key: str | None,
    agent: str | None,
    upstream_host: str | None = None,
    upstream_port: int | None = None,
    upstream_key: str | None = None,
    upstream_password: str | None = None,
    upstream_share_bus: bool | None = None,
    http_port: int | None = None,
    mqtt_host: str | None = None,
    mqtt_port: int | None = None,
    mqtt_prefix: str | None = None,
    mqtt_username: str | None = None,
    mqtt_password: str | None = None,
) -> None:
    """Run the hub until interrupted."""
    config = _state().config
    overrides: dict[str, Any] = {
        "host": host,
        "port": port,
        "ssl": use_ssl,
        "cert": cert,
        "key": key,
        "agent": agent,
        "http_port": http_port,
        "mqtt_host": mqtt_host,
        "mqtt_port": mqtt_port,
        "mqtt_prefix": mqtt_prefix,
        "mqtt_username": mqtt_username,
        "mqtt_password": mqtt_password,
    }
    for name, value in overrides.items():
        if value is not None:
            setattr(config, name, value)
    upstream = {
        "host": upstream_host,
        "port": upstream_port,
        "key": upstream_key,
        "password": upstream_password,
        "share_bus": upstream_share_bus,
    }
    for name, value in upstream.items():
        if value is not None:
            setattr(config.upstream, name, value)
    if (cert is None) != (key is None):
        _fail("--cert and --key go together")
    if cert is not None:
        config.ssl = True
    try:
        from hivemind_core import service
    except ImportError as exc:
        _fail(f"the hub service is not available: {exc}")
    service.run(config)


# ---- entry point ------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: run the group; every failure becomes one line on stderr."""
    _run(cli, argv)


def _run(group: Callable[..., Any], argv: Sequence[str] | None) -> None:
    try:
        rv = group.main(
            args=list(argv) if argv is not None else None,
            prog_name="hivemind-core",
            standalone_mode=False,
        )
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    except (DatabaseError, OSError, ValueError, KeyError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except Exception as exc:  # last resort: the CLI never shows a traceback
        LOG.debug("unexpected error", exc_info=True)
        click.echo(f"error: unexpected {type(exc).__name__}: {exc}", err=True)
        sys.exit(1)
    if isinstance(rv, int) and rv:
        sys.exit(rv)


if __name__ == "__main__":
    main()
