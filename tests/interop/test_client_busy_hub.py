"""Our client keeps its link to a busy reference hub (hivemind-core 4.0.0).

The reference hub handles a client's frames one after another and answers
websocket pings only once the work queued before them is done. With 300
utterances pipelined, its ping answer comes seconds late: a client whose
keepalive gives up sooner drops the link (1011 "keepalive ping timeout") and
loses every answer still on its way. The stock client 0.4.4 gets all 300, and
so must ours, on one link.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from ovos_bus_client.message import Message

from hivemind_bus_client import HiveMessageBusClient
from hivemind_bus_client.identity import NodeIdentity

from . import harness

pytestmark = pytest.mark.interop

#: Utterances sent back to back, without waiting for any answer.
PIPELINED = 300
#: Seconds the hub has for all of them (it needs about 10 s on a quiet machine).
ANSWER_WINDOW = 120.0


def test_300_pipelined_utterances_all_answered_on_one_link(
    reference_hub: Callable[..., harness.ReferenceHub], tmp_path: Any
) -> None:
    hub = reference_hub()
    creds = hub.client("sat")
    client = HiveMessageBusClient(
        key=creds.access_key,
        password=creds.password,
        host=hub.host,
        port=hub.port,
        identity=NodeIdentity(tmp_path / "_identity.json"),
        site_id="busy",
        connect_timeout=20,
    )
    answers: set[str] = set()
    lock = threading.Lock()

    def heard(message: Message) -> None:
        with lock:
            answers.add(message.data.get("utterance", ""))

    client.on_mycroft("speak", heard)
    client.connect()
    try:
        for i in range(PIPELINED):
            client.emit(Message("recognizer_loop:utterance", {"utterances": [f"busy {i}"]}))
        deadline = time.monotonic() + ANSWER_WINDOW
        while time.monotonic() < deadline:
            with lock:
                if len(answers) >= PIPELINED:
                    break
            time.sleep(0.1)
        with lock:
            got = len(answers & {f"echo: busy {i}" for i in range(PIPELINED)})
        connects = client.stats["connects"]
        lost = client.fatal_error
    finally:
        client.close()
    assert got == PIPELINED and connects == 1, (
        f"{got} answers received of {PIPELINED}, {connects} link(s) opened "
        f"(1 expected: no reconnect); client stopped: {lost}"
    )
