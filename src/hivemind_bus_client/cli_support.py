"""What every ``hivemind-client`` command shares: options, the one-line errors, connecting.

Every failure is reported as one line on stderr (``error: ...``) with exit
status 1; never a traceback.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

import click
from ovos_bus_client.message import Message

from hivemind_bus_client.exceptions import HiveMindError

__all__ = [
    "CliError",
    "connect_client",
    "connection_options",
    "describe",
    "friendly",
    "message_options",
    "ovos_message",
]


class CliError(click.ClickException):
    """A failure reported as one ``error: ...`` line with exit status 1."""

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def describe(exc: BaseException) -> str:
    """``Type: first line of the message`` of an error."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"{type(exc).__name__}: {text}"


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn every library or OS error into a one-line :class:`CliError`."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except click.ClickException:
            raise
        except KeyboardInterrupt:
            raise click.Abort() from None
        except (HiveMindError, OSError, ValueError, TimeoutError) as exc:
            raise CliError(describe(exc)) from None

    return wrapper


def connection_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--key --password --host --port --siteid``, defaulting to the identity file."""
    options = [
        click.option(
            "--key", default=None, help="HiveMind access key (default read from identity file)"
        ),
        click.option(
            "--password", default=None, help="HiveMind password (default read from identity file)"
        ),
        click.option(
            "--host", default=None, help="HiveMind host (default read from identity file)"
        ),
        click.option("--port", type=int, default=None, help="HiveMind port number (default: 5678)"),
        click.option(
            "--siteid",
            default=None,
            help="location identifier for message.context  (default read from identity file)",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def message_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--msg`` (OVOS message type) and ``--payload`` (its data, JSON)."""
    fn = click.option("--payload", default="{}", help="ovos message.data json")(fn)
    return click.option("--msg", required=True, help="ovos message type to inject")(fn)


def connect_client(
    key: str | None,
    password: str | None,
    host: str | None,
    port: int | None,
    siteid: str | None,
    **kw: Any,
) -> Any:
    """A connected sync client (arguments left ``None`` come from the identity file)."""
    from hivemind_bus_client.client import HiveMessageBusClient

    client = HiveMessageBusClient(
        key=key, password=password, host=host, port=port, site_id=siteid, **kw
    )
    client.connect()
    return client


def ovos_message(msg: str, payload: str) -> Message:
    """The OVOS message of ``--msg`` and ``--payload``."""
    try:
        data = json.loads(payload) if payload else {}
    except ValueError as exc:
        raise CliError(f"--payload is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CliError("--payload must be a JSON object")
    return Message(msg, data)
