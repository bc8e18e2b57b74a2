"""The client never loses its link (and the answers on it) by outpacing the hub.

``emit`` waits while the websocket's outgoing backlog is more than half full,
instead of overflowing it: an overflow closes the link with 1013 (the hub's
answer to a slow consumer) and every answer still on its way is lost.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from ovos_bus_client.message import Message

from hivemind_bus_client.client import HiveMessageBusClient
from hivemind_bus_client.transport import websocket
from hivemind_bus_client.transport.channel import Channel
from hivemind_bus_client.transport.tls import client_context
from support.net import wait_until

from .fakehub import FakeHub

MakeClient = Callable[..., HiveMessageBusClient]

SENT = 200


def test_emit_waits_for_a_hub_that_stops_reading(hub: FakeHub, make_client: MakeClient) -> None:
    client = make_client(hub)
    cfg = client.config

    async def small_backlog() -> Channel:
        chan = await websocket.connect(
            cfg.url,
            ssl_context=client_context(cfg.secure, cfg.self_signed),
            open_timeout=5,
            max_frames=8,
            max_bytes=1 << 20,
        )
        chan.ws.transport.set_write_buffer_limits(high=1024)
        return chan

    client.protocol.engine.channel_factory = small_backlog
    answers: set[str] = set()
    lock = threading.Lock()

    def heard(message: Message) -> None:
        with lock:
            answers.add(message.data["utterance"][:40])

    client.on_mycroft("speak", heard)
    client.connect()
    hub.freeze_all()
    threading.Timer(1.0, hub.thaw_all).start()
    for i in range(SENT):
        text = f"{i:06d}" + "x" * 32768
        client.emit(Message("recognizer_loop:utterance", {"utterances": [text]}))

    def all_answered() -> bool:
        with lock:
            return len(answers) == SENT

    try:
        wait_until(all_answered, timeout=30, what="every answer")
    finally:
        with lock:
            got = len(answers)
    assert got == SENT and client.stats["connects"] == 1, (
        f"{got} answers of {SENT}, {client.stats['connects']} link(s)"
    )
