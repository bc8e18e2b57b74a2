"""The identity commands of ``hivemind-client``: ``set-identity``, ``reset-pgp``,
``test-identity`` and ``forget-server`` (docs/client.md).

``set-identity --password`` also clears the protocol v3 PSK cache (its PSKs
were derived from the old password). ``forget-server`` drops the Noise pin of
one hub (``--host``/``--port``, default the identity's hub) or of all hubs
(``--all``), after a hub was reinstalled and its new key is refused.
"""

from __future__ import annotations

import click

from hivemind_bus_client.cli_support import CliError, connect_client, friendly
from hivemind_bus_client.client.config import DEFAULT_PORT, split_host
from hivemind_bus_client.client.noisekeys import (
    PskCache,
    forget_pins,
    noise_key_path,
    psk_cache_path,
)
from hivemind_bus_client.identity import NodeIdentity

__all__ = ["IDENTITY_COMMANDS"]


@click.command("set-identity")
@click.option("--key", default="", help="HiveMind access key")
@click.option("--password", default="", help="HiveMind password")
@click.option("--host", default="", help="HiveMind host")
@click.option("--port", type=int, default=5678, help="HiveMind port number (default: 5678)")
@click.option("--siteid", default="", help="location identifier for message.context")
@friendly
def set_identity(key: str, password: str, host: str, port: int, siteid: str) -> None:
    """Write the identity file used by default by every command and by the library."""
    if not (key or password or siteid):
        raise CliError("please set at least one of --key, --password or --siteid")
    identity = NodeIdentity()
    if key:
        identity.access_key = key
    if password:
        identity.password = password
        # The cached v3 PSKs were derived from the old password.
        PskCache(psk_cache_path(noise_key_path(identity))).clear()
    if siteid:
        identity.site_id = siteid
    identity.default_port = port
    if host:
        identity.default_master = host if "://" in host else f"ws://{host}"
    if not identity.public_key:
        pub = identity.create_keys()
        click.echo(f"PUBKEY: {pub}")
    identity.save()
    click.echo(f"identity saved: {identity.path}")


@click.command("reset-pgp")
@friendly
def reset_pgp() -> None:
    """Make a new RSA key pair for this node and save it in the identity."""
    identity = NodeIdentity()
    click.echo(f"PUBKEY: {identity.create_keys()}")
    identity.save()
    click.echo(f"identity saved: {identity.path}")


@click.command("test-identity")
@friendly
def test_identity() -> None:
    """Connect with the identity file alone and report."""
    client = connect_client(None, None, None, None, None, reconnect=False)
    try:
        click.echo("== Identity successfully connected to HiveMind!")
    finally:
        client.close()


@click.command("forget-server")
@click.option("--host", default="", help="host of the hub (default: the identity's)")
@click.option("--port", type=int, default=None, help="port of the hub (default: the identity's)")
@click.option("--all", "forget_all", is_flag=True, help="forget the pins of every hub")
@friendly
def forget_server(host: str, port: int | None, forget_all: bool) -> None:
    """Forget the pinned Noise key of a hub (after it was reinstalled)."""
    identity = NodeIdentity()
    if forget_all:
        gone = forget_pins(identity)
    else:
        raw = host or identity.default_master or ""
        _, bare = split_host(raw)
        if bare.startswith("[") and "]" in bare:
            bare = bare[1 : bare.index("]")]
        elif bare.count(":") == 1:
            bare = bare.split(":", 1)[0]
        if not bare:
            raise CliError("no hub: pass --host (or --all), or run 'set-identity --host ...'")
        where = f"{bare}:{port or identity.default_port or DEFAULT_PORT}"
        gone = forget_pins(identity, where)
        if not gone:
            click.echo(f"no pinned key for {where}")
            return
    for where in gone:
        click.echo(f"forgot the pinned key of {where}")
    if not gone:
        click.echo("no pinned keys")


#: The commands this module adds to ``hivemind-client``.
IDENTITY_COMMANDS = (set_identity, reset_pgp, test_identity, forget_server)
