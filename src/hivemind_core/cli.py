"""``hivemind-core``: the hub's admin command line.

Every command of the reference hub 4.0.0 keeps its name, arguments and
options, so scripts and docs written for it keep working, with
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

import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

import click

from hivemind_core import logs
from hivemind_core.cli_clients import commands
from hivemind_core.cli_noise import commands as noise_commands
from hivemind_core.cli_support import CliState, current, fail
from hivemind_core.database import DatabaseError

__all__ = ["cli", "main"]

LOG = logging.getLogger(__name__)


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
    logs.configure(verbose)
    state = CliState(config_path, backend, db_path, redis_url, redis_prefix)
    ctx.obj = state
    ctx.call_on_close(state.close)


for _command in [*commands.commands.values(), *noise_commands.commands.values()]:
    cli.add_command(_command)


# ---- config and server ------------------------------------------------------


@cli.command("print-config")
def print_config() -> None:
    """Print the hub configuration in effect (server.json merged with defaults and options)."""
    click.echo(json.dumps(current().config.to_dict(), indent=2, ensure_ascii=False))


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
@click.option(
    "--min-protocol-version",
    type=click.Choice(["1", "3"]),
    help="Lowest protocol a client may use: 3 refuses v1 clients (default from server.json, 1).",
)
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
    min_protocol_version: str | None = None,
) -> None:
    """Run the hub until interrupted."""
    logs.announce()
    config = current().config
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
        "min_protocol_version": int(min_protocol_version) if min_protocol_version else None,
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
        fail("--cert and --key go together")
    if cert is not None:
        config.ssl = True
    try:
        from hivemind_core import service
    except ImportError as exc:
        fail(f"the hub service is not available: {exc}")
    service.run(config)


# ---- entry point ------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: run the group; every failure becomes one line on stderr."""
    _run(cli, argv)


def _run(group: click.Command, argv: Sequence[str] | None) -> None:
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
