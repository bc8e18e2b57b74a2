"""Echo responder for the interop harness (run by the reference venv's python).

Connects to a real OVOS messagebus with ``ovos_bus_client.MessageBusClient``,
answers every ``recognizer_loop:utterance`` with a ``speak`` reply
(``message.reply`` keeps the context and swaps source/destination, which is how
the hub routes answers back to the right satellite) and appends each utterance
message, full context included, as one JSON line to ``--seen``. Every message
seen on the bus is appended to ``--all``. ``--ready`` is created once connected.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from ovos_bus_client import Message, MessageBusClient


def _append(path: Path, lock: threading.Lock, record: dict) -> None:
    """Append one JSON line and flush it to disk."""
    line = json.dumps(record, ensure_ascii=False, default=repr)
    with lock, path.open("a", encoding="utf-8") as fh:
        fh.write(line + "\n")
        fh.flush()


def main() -> int:
    """Run the responder until SIGTERM."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--route", default="/core")
    ap.add_argument("--seen", type=Path, required=True)
    ap.add_argument("--all", type=Path, required=True)
    ap.add_argument("--ready", type=Path, required=True)
    ap.add_argument("--prefix", default="echo: ")
    args = ap.parse_args()

    lock = threading.Lock()
    bus = MessageBusClient(host=args.host, port=args.port, route=args.route)

    def on_utterance(message: Message) -> None:
        record = {"type": message.msg_type, "data": message.data, "context": message.context}
        _append(args.seen, lock, record)
        utterances = message.data.get("utterances") or [""]
        bus.emit(message.reply("speak", {"utterance": args.prefix + str(utterances[0])}))

    def on_any(raw: str) -> None:
        try:
            record = json.loads(raw)
        except (TypeError, ValueError):
            record = {"raw": repr(raw)}
        _append(args.all, lock, record)

    bus.on("recognizer_loop:utterance", on_utterance)
    bus.on("message", on_any)
    bus.run_in_thread()
    if not bus.connected_event.wait(30):
        print("responder: could not connect to the messagebus", file=sys.stderr)
        return 1
    args.ready.write_text("ready\n", encoding="utf-8")
    print("responder ready", flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    bus.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
