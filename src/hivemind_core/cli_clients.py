"""``hivemind-core`` commands that manage clients: add, delete, list, permissions, export, migrate.

They are registered on the main group by :mod:`hivemind_core.cli`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import sys
from pathlib import Path

import click

from hivemind_core.cli_support import NODE_ID, current, fail, resolve, save, table, when
from hivemind_core.config import HubConfig, data_dir
from hivemind_core.database import ClientDatabase, open_database

__all__ = ["commands"]

#: The client commands (added to the ``hivemind-core`` group).
commands = click.Group("clients")


# ---- clients ----------------------------------------------------------------


@commands.command("add-client")
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
            fail("the encryption key needs to be exactly 16 characters")
        click.echo(
            "WARNING: the pre-shared encryption key is deprecated; clients should use the password.",
            err=True,
        )
    state = current()
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


@commands.command("delete-client")
@NODE_ID
def delete_client(node_id: str | None) -> None:
    """Delete a client for good: its access key stops working at once."""
    client = resolve(node_id)
    if not current().db.delete_client(client.client_id):
        fail(f"client {client.client_id} was already deleted")
    click.echo("Deleted client, its credentials no longer authenticate:")
    click.echo(f"Node ID: {client.client_id}")
    click.echo(f"Friendly Name: {client.name}")
    click.echo(f"Access Key: {client.api_key}")


@commands.command("list-clients")
def list_clients() -> None:
    """Show every client with its credentials."""
    clients = current().db.list_clients()
    if not clients:
        click.echo("No clients. Add one with 'hivemind-core add-client'.")
        return
    table(
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
                when(c.last_seen),
            )
            for c in clients
        ],
    )


@commands.command("rename-client")
@NODE_ID
@click.option("--name", required=True, help="The new friendly name.")
def rename_client(node_id: str | None, name: str) -> None:
    """Change a client's friendly name."""
    client = resolve(node_id)
    old = client.name
    client.name = name
    save(client)
    click.echo(f"Renamed '{old}' to {name}")


def _flag_command(name: str, field: str, value: bool, done: str, already: str, help_: str) -> None:
    """Register a command that sets one boolean permission."""

    @commands.command(name, help=help_)
    @NODE_ID
    def command(node_id: str | None) -> None:
        client = resolve(node_id)
        if getattr(client, field) == value:
            click.echo(already.format(name=client.name))
            return
        setattr(client, field, value)
        save(client)
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

    @commands.command(name, help=help_)
    @click.argument(arg)
    @NODE_ID
    def command(node_id: str | None, **kwargs: str) -> None:
        item = kwargs[arg]
        client = resolve(node_id)
        items: list[str] = getattr(client, field)
        if (item in items) == add:
            click.echo(already.format(name=client.name, item=item))
            return
        if add:
            items.append(item)
        else:
            items[:] = [i for i in items if i != item]
        save(client)
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


@commands.command("export-clients")
@click.option(
    "--path",
    type=click.Path(),
    help="A file, or a directory (gets hivemind_clients.csv); default stdout.",
)
def export_clients(path: str | None) -> None:
    """Export the clients' credentials as CSV (plaintext secrets: keep the file safe)."""
    clients = current().db.list_clients()
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


@commands.command("migrate-db")
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

    state = current()
    config = state.config
    target = _open_target(config)
    state.use(target)
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
                fail("source and target are the same database")
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
