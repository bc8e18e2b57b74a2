"""The ``hivemind-client`` command (docs/client.md).

Commands: ``set-identity``, ``test-identity``, ``reset-pgp``, ``forget-server``
(in :mod:`~hivemind_bus_client.cli_identity`), ``terminal``, ``send-mycroft``,
``escalate``, ``propagate``, ``query``, ``cascade``, ``ping``.
Connection options default to the identity file
(``$XDG_CONFIG_HOME/hivemind/_identity.json``).

Every failure is reported as one line on stderr (``error: ...``) with exit
status 1 (2 for usage errors, as click does); never a traceback.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time

import click
from ovos_bus_client.message import Message

from hivemind_bus_client.cli_identity import IDENTITY_COMMANDS
from hivemind_bus_client.cli_support import (
    CliError,
    connect_client,
    connection_options,
    friendly,
    message_options,
    ovos_message,
)
from hivemind_bus_client.protocol.hive_map import HiveMapper
from hivemind_bus_client.protocol.message import HiveMessage, HiveMessageType

__all__ = ["main"]

LOG = logging.getLogger("hivemind_bus_client")


@click.group()
@click.option("--debug", is_flag=True, help="log what the client does on stderr")
def main(debug: bool) -> None:
    """HiveMind client: talk to a hub from the command line."""
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.CRITICAL,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )


for _command in IDENTITY_COMMANDS:
    main.add_command(_command)


@main.command("terminal")
@connection_options
@click.option(
    "--timeout",
    type=float,
    default=10.0,
    show_default=True,
    help="seconds to wait for answers after the input ends",
)
@friendly
def terminal(
    key: str | None,
    password: str | None,
    host: str | None,
    port: int | None,
    siteid: str | None,
    timeout: float,
) -> None:
    """Chat with the hub: each line you type is an utterance; answers are printed."""
    client = connect_client(key, password, host, port, siteid)
    answers = threading.Semaphore(0)

    def on_speak(message: Message) -> None:
        click.echo(f"> {message.data.get('utterance', '')}")
        answers.release()

    client.on_mycroft("speak", on_speak)
    click.echo("== connected to HiveMind")
    sent = 0
    try:
        while True:
            try:
                line = input("Utterance:")
            except EOFError:
                break
            utt = line.strip()
            if not utt:
                continue
            client.emit(
                HiveMessage(
                    HiveMessageType.BUS,
                    Message(
                        "recognizer_loop:utterance",
                        {"utterances": [utt]},
                        {"destination": "skills"},
                    ),
                )
            )
            sent += 1
        deadline = time.monotonic() + timeout
        for _ in range(sent):
            if not answers.acquire(timeout=max(0.0, deadline - time.monotonic())):
                break
    except KeyboardInterrupt:
        pass
    finally:
        client.close()


def _send_wrapped(
    mtype: HiveMessageType | None,
    key: str | None,
    password: str | None,
    host: str | None,
    port: int | None,
    siteid: str | None,
    msg: str,
    payload: str,
    response: str | None,
    timeout: float,
) -> None:
    message = ovos_message(msg, payload)
    client = connect_client(key, password, host, port, siteid, reconnect=False)
    try:
        click.echo("== connected to HiveMind")
        hive = HiveMessage(HiveMessageType.BUS, message)
        if mtype is not None:
            hive = HiveMessage(mtype, payload=hive)
        if response:
            reply = client.wait_for_payload_response(
                hive, response, reply_type=HiveMessageType.BUS, timeout=timeout
            )
            if reply is None:
                raise CliError(f"no {response!r} answer within {timeout:g} s")
            click.echo(json.dumps(reply.payload.data, ensure_ascii=False))
        else:
            client.emit(hive)
    finally:
        client.close()


_RESPONSE = click.option(
    "--response", default=None, help="wait for a BUS answer of this OVOS type and print its data"
)
_TIMEOUT = click.option(
    "--timeout", type=float, default=10.0, show_default=True, help="seconds to wait for answers"
)


@main.command("send-mycroft")
@connection_options
@message_options
@_RESPONSE
@_TIMEOUT
@friendly
def send_mycroft(
    key: str | None,
    password: str | None,
    host: str | None,
    port: int | None,
    siteid: str | None,
    msg: str,
    payload: str,
    response: str | None,
    timeout: float,
) -> None:
    """send a single mycroft message"""
    _send_wrapped(None, key, password, host, port, siteid, msg, payload, response, timeout)


@main.command("escalate")
@connection_options
@message_options
@friendly
def escalate(
    key: str | None,
    password: str | None,
    host: str | None,
    port: int | None,
    siteid: str | None,
    msg: str,
    payload: str,
) -> None:
    """escalate a single mycroft message"""
    _send_wrapped(
        HiveMessageType.ESCALATE, key, password, host, port, siteid, msg, payload, None, 0
    )


@main.command("propagate")
@connection_options
@message_options
@friendly
def propagate(
    key: str | None,
    password: str | None,
    host: str | None,
    port: int | None,
    siteid: str | None,
    msg: str,
    payload: str,
) -> None:
    """propagate a single mycroft message"""
    _send_wrapped(
        HiveMessageType.PROPAGATE, key, password, host, port, siteid, msg, payload, None, 0
    )


def _answer_text(message: HiveMessage) -> str:
    inner = message.payload
    if isinstance(inner, HiveMessage) and isinstance(inner.payload, Message):
        ovos = inner.payload
        return json.dumps({"type": ovos.msg_type, "data": ovos.data}, ensure_ascii=False)
    return message.serialize()


@main.command("query")
@connection_options
@message_options
@_TIMEOUT
@friendly
def query(
    key: str | None,
    password: str | None,
    host: str | None,
    port: int | None,
    siteid: str | None,
    msg: str,
    payload: str,
    timeout: float,
) -> None:
    """send a QUERY (first answer wins) and print the answer"""
    message = ovos_message(msg, payload)
    client = connect_client(key, password, host, port, siteid, reconnect=False)
    try:
        click.echo("== connected to HiveMind")
        answer = client.query(HiveMessage(HiveMessageType.BUS, message), timeout=timeout)
        if answer is None:
            raise CliError(f"no answer within {timeout:g} s")
        responder = answer.metadata.get("responder_peer") or "?"
        click.echo(f"{responder}: {_answer_text(answer)}")
    finally:
        client.close()


@main.command("cascade")
@connection_options
@message_options
@click.option(
    "--timeout", type=float, default=5.0, show_default=True, help="seconds to gather answers"
)
@friendly
def cascade(
    key: str | None,
    password: str | None,
    host: str | None,
    port: int | None,
    siteid: str | None,
    msg: str,
    payload: str,
    timeout: float,
) -> None:
    """send a CASCADE and print every answer gathered"""
    message = ovos_message(msg, payload)
    client = connect_client(key, password, host, port, siteid, reconnect=False)
    try:
        click.echo("== connected to HiveMind")
        result = client.cascade(HiveMessage(HiveMessageType.BUS, message), timeout=timeout)
        if not result.responses:
            raise CliError(f"no answer within {timeout:g} s")
        for answer in result.responses:
            responder = answer.metadata.get("responder_peer") or "?"
            mark = "*" if answer is result.selected else " "
            click.echo(f"{mark} {responder}: {_answer_text(answer)}")
    finally:
        client.close()


@main.command("ping")
@connection_options
@click.option(
    "--timeout", type=float, default=5.0, show_default=True, help="seconds to collect PONGs"
)
@click.option("--json", "as_json", is_flag=True, help="print the answers as JSON")
@friendly
def ping(
    key: str | None,
    password: str | None,
    host: str | None,
    port: int | None,
    siteid: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """flood a PING and list every node that answered, with hops and round-trip time"""
    client = connect_client(key, password, host, port, siteid, reconnect=False)
    try:
        sent = time.time()
        pongs = client.ping(timeout=timeout)
        me = client.peer
    finally:
        client.close()
    mapper = HiveMapper(root_peer=me)
    for pong in pongs:
        mapper.on_pong(pong, received_at=pong.metadata.get("received_at") or time.time())
    rows = [
        {
            "peer": info.peer,
            "site_id": info.site_id,
            "hops": info.hops,
            "rtt_ms": round(max(0.0, info.rtt) * 1000, 1) if info.rtt is not None else None,
        }
        for info in mapper.nodes.values()
        if info.peer != me
    ]
    if as_json:
        click.echo(json.dumps({"sent_at": sent, "nodes": rows}, ensure_ascii=False))
        return
    if not rows:
        click.echo(f"no node answered within {timeout:g} s")
        return
    for row in rows:
        rtt = f"{row['rtt_ms']} ms" if row["rtt_ms"] is not None else "?"
        click.echo(f"{row['peer']}  site={row['site_id']}  hops={row['hops']}  rtt={rtt}")


if __name__ == "__main__":  # pragma: no cover
    main()
