"""Drive the stock ``HiveMindHTTPClient`` 0.4.4 (run by the reference venv's python).

``_refhttp.py HOST PORT KEY PASSWORD COUNT``: connect over HTTP polling, send
COUNT ``echo`` utterances one after the other, each waiting (10 s at most)
for its ``speak`` answer, and print ONE JSON line on stdout: the answers
received, in order, and the error if something failed.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import Any

_RESULT_FD = os.dup(1)
os.dup2(2, 1)

from ovos_bus_client.message import Message  # noqa: E402

from hivemind_bus_client.http_client import HiveMindHTTPClient  # noqa: E402
from hivemind_bus_client.identity import NodeIdentity  # noqa: E402
from hivemind_bus_client.message import HiveMessage, HiveMessageType  # noqa: E402


def main() -> None:
    host, port, key, password, count = sys.argv[1:6]
    result: dict[str, Any] = {"answers": [], "error": None}
    try:
        identity = NodeIdentity()
        identity.password = password
        identity.access_key = key
        client = HiveMindHTTPClient(
            key=key, password=password, host=f"http://{host}", port=int(port), identity=identity
        )
        box: list[str] = []
        got = threading.Event()

        def speak(message: Message) -> None:
            box.append(message.data.get("utterance"))
            got.set()

        client.on_mycroft("speak", speak)
        client.connect()
        for n in range(int(count)):
            got.clear()
            text = f"echo reference {n}"
            client.emit(
                HiveMessage(
                    HiveMessageType.BUS,
                    Message("recognizer_loop:utterance", {"utterances": [text]}),
                )
            )
            if not got.wait(10):
                result["error"] = f"no answer to {text!r}"
                break
        result["answers"] = box
        client.shutdown()
    except Exception as exc:  # report, do not crash: the test reads the line
        result["error"] = f"{type(exc).__name__}: {exc}"
    os.write(_RESULT_FD, (json.dumps(result) + "\n").encode())


if __name__ == "__main__":
    main()
