"""Drive the reference ``HiveMessageBusClient`` 1.2.12a1 (run by the v3 reference venv's python).

Connects ``--connections`` times in a row (one identity, so the second
connection has the hub's pin and may run KK; ``--wait-file`` holds each later
connection until a file exists, so a test can change the hub meanwhile), each
time sends one utterance
(``--utterance``, or ``--size`` bytes of text) and waits for the ``speak``
answer, then closes. Prints exactly ONE JSON line on stdout:

    {"runs": [{"connected", "connect_s", "answer_len", "answer_sha256",
               "answer_head", "error", "refused"}, ...],
     "pins": {<host:port>: <hub key hex>}}

Everything the libraries log goes to stderr. ``connect()`` raises
``ConnectionRefusedError`` on a refusal (a 1008 before the session); it runs
in a daemon thread, so a client that hangs is reported after ``--timeout``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import queue
import threading
import time
from typing import Any

# Keep stdout for the single result line; route everything else to stderr.
_RESULT_FD = os.dup(1)
os.dup2(2, 1)

from ovos_bus_client.message import Message  # noqa: E402

from hivemind_bus_client.client import HiveMessageBusClient  # noqa: E402


def _parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--connections", type=int, default=1)
    ap.add_argument("--utterance", default="hello")
    ap.add_argument("--size", type=int, default=0, help="send this many bytes of text instead")
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--reply-timeout", type=float, default=15.0)
    ap.add_argument(
        "--wait-file", default=None, help="before each later connection, wait for this file"
    )
    return ap.parse_args()


def _text(size: int, default: str) -> str:
    if size <= 0:
        return default
    words = "".join(f"{i:07d} " for i in range(size // 8 + 1))
    return words[:size].strip()


def one_run(args: argparse.Namespace, text: str) -> dict[str, Any]:
    result: dict[str, Any] = {"connected": False, "error": None, "refused": None}
    client = HiveMessageBusClient(args.key, password=args.password, host=args.host, port=args.port)
    refusals: list[Any] = []
    client.emitter.on("auth_rejected", lambda reason=None: refusals.append(reason))
    speaks: queue.Queue[str] = queue.Queue()
    client.on_mycroft("speak", lambda m: speaks.put(m.data.get("utterance") or ""))
    errors: list[str] = []

    def do_connect() -> None:
        try:
            client.connect(site_id="v3-interop", handshake_max_retries=2)
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")

    start = time.perf_counter()
    worker = threading.Thread(target=do_connect, daemon=True)
    worker.start()
    worker.join(args.timeout)
    result["connect_s"] = round(time.perf_counter() - start, 3)
    if refusals:
        result["refused"] = str(refusals[0])
    if worker.is_alive():
        result["error"] = f"timeout: not connected within {args.timeout:g}s"
    elif errors:
        result["error"] = errors[0]
    else:
        result["connected"] = True
        client.emit(Message("recognizer_loop:utterance", {"utterances": [text]}))
        try:
            answer = speaks.get(timeout=args.reply_timeout)
            result["answer_len"] = len(answer)
            result["answer_sha256"] = hashlib.sha256(answer.encode()).hexdigest()
            result["answer_head"] = answer[:60]
        except queue.Empty:
            result["error"] = "no speak answer"
    try:
        client.close()
    except Exception as exc:
        result["close_error"] = repr(exc)
    result["pins"] = dict(client.identity.pinned_noise_keys or {}) if client.identity else {}
    return result


def main() -> None:
    args = _parse()
    text = _text(args.size, args.utterance)
    runs = []
    for i in range(args.connections):
        if i and args.wait_file:
            deadline = time.monotonic() + 60
            while not os.path.exists(args.wait_file) and time.monotonic() < deadline:
                time.sleep(0.05)
        runs.append(one_run(args, text))
    out = {
        "runs": runs,
        "sent_len": len(text),
        "sent_sha256": hashlib.sha256(text.encode()).hexdigest(),
    }
    os.write(_RESULT_FD, (json.dumps(out) + "\n").encode())


if __name__ == "__main__":
    main()
