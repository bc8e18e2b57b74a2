"""``hivemind-core`` commands for protocol v3 (Noise): pins, the protocol floor, the PSK.

* ``reset-noise-pin <client>``: forget the client's pinned static key (it
  pins again at its next XX handshake; use it when a satellite got a new key);
* ``set-min-protocol <client> <1|3>``: 3 refuses that client's v1 handshakes;
* ``derive-psk --password P --node-id N``: print the Noise PSK in hex, as the
  reference's command does (for checking a client's cache by hand).

The hub-wide floor is ``min_protocol_version`` in ``server.json``
(``listen --min-protocol-version``). Registered on the main group by
:mod:`hivemind_core.cli`.
"""

from __future__ import annotations

import click

from hivemind_bus_client.protocol.v3offer import derive_psk
from hivemind_core.cli_support import NODE_ID, resolve, save
from hivemind_core.noise_keys import MIN_VERSION_FIELD, PIN_FIELD

__all__ = ["commands"]

#: The v3 commands (added to the ``hivemind-core`` group).
commands = click.Group("noise")


@commands.command("reset-noise-pin")
@NODE_ID
def reset_noise_pin(node_id: str | None) -> None:
    """Forget a client's pinned Noise static key; its next v3 handshake pins again (XX)."""
    client = resolve(node_id)
    old = client.metadata.pop(PIN_FIELD, None)
    if not old:
        click.echo(f"Client {client.client_id} ({client.name}) has no Noise pin")
        return
    save(client)
    click.echo(f"Forgot the Noise pin {old} of client {client.client_id} ({client.name})")


@commands.command("set-min-protocol")
@NODE_ID
@click.argument("version", type=click.Choice(["1", "3"]))
def set_min_protocol(node_id: str | None, version: str) -> None:
    """Set a client's lowest protocol: 3 refuses its v1 handshakes, 1 allows both."""
    client = resolve(node_id)
    if version == "1":
        client.metadata.pop(MIN_VERSION_FIELD, None)
    else:
        client.metadata[MIN_VERSION_FIELD] = 3
    save(client)
    extra = "" if version == "1" or client.password else " (it has no password: it cannot connect)"
    click.echo(f"Client {client.client_id} ({client.name}): min protocol {version}{extra}")


@commands.command("derive-psk")
@click.option("--password", required=True, help="The client's password.")
@click.option("--node-id", required=True, help="The hub's node_id (its HELLO's node_id).")
def derive_psk_command(password: str, node_id: str) -> None:
    """Print the v3 Noise PSK (Argon2id of the password, salted with the node_id) in hex."""
    click.echo(derive_psk(password, node_id).hex())
