"""Drive the stock ``HiveMessageBusClient`` 0.4.4 (run by the reference venv's python).

Connects to a hub, optionally sends ``--count`` utterances one after the other
(each waits for its ``speak`` answer), and prints exactly ONE JSON line on
stdout describing what happened. Everything the libraries log goes to stderr.

Modes:
  roundtrip  connect, then send ``--count`` utterances (default 1) and time each.
  connect    only try to connect (for bad keys/passwords) and report.

The stock client never gives up on its own (wrong password: reconnect loop;
wrong key: blocks forever), so the connect runs in a daemon thread and the
script reports after ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import sys
import threading
import time
from typing import Any

# Keep stdout for the single result line; route everything else to stderr.
_RESULT_FD = os.dup(1)
os.dup2(2, 1)

from ovos_bus_client.message import Message  # noqa: E402

from hivemind_bus_client.client import HiveMessageBusClient  # noqa: E402
from hivemind_bus_client.message import HiveMessage  # noqa: E402

T0 = time.perf_counter()


def _now() -> float:
    """Seconds since the script started."""
    return round(time.perf_counter() - T0, 4)


def _text(value: Any) -> Any:
    """Enum members to their wire string."""
    return getattr(value, "value", value)


class RecordingClient(HiveMessageBusClient):
    """Stock client that records socket events and raw frames (behaviour unchanged)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.events: list[dict[str, Any]] = []
        self.hub_hello: dict[str, Any] | None = None
        self.hub_shake: dict[str, Any] | None = None
        self.hub_shake_reply: dict[str, Any] | None = None
        super().__init__(*args, **kwargs)

    def _event(self, kind: str, **detail: Any) -> None:
        self.events.append({"t": _now(), "kind": kind, **detail})

    def on_open(self, *args: Any) -> None:
        self._event("open")
        super().on_open(*args)

    def on_close(self, *args: Any) -> None:
        code = args[1] if len(args) > 1 else None
        reason = args[2] if len(args) > 2 else None
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        self._event("close", code=code, reason=reason)
        super().on_close(*args)

    def on_error(self, *args: Any) -> None:
        err = args[-1] if args else None
        self._event("error", error=repr(err), error_type=type(err).__name__)
        super().on_error(*args)

    def on_message(self, *args: Any) -> None:
        raw = args[-1]
        if isinstance(raw, bytes):
            self._event("frame", binary=True, size=len(raw))
        else:
            self._record_text(raw)
        try:
            super().on_message(*args)
        except Exception as exc:
            self._event("handler_error", error=repr(exc), error_type=type(exc).__name__)
            raise

    def _record_text(self, raw: str) -> None:
        try:
            obj = json.loads(raw)
        except ValueError:
            self._event("frame", binary=False, size=len(raw), json=False)
            return
        if not isinstance(obj, dict) or "ciphertext" in obj:
            self._event("frame", binary=False, size=len(raw), encrypted=True)
            return
        msg_type = obj.get("msg_type")
        payload = obj.get("payload")
        self._event("frame", binary=False, size=len(raw), encrypted=False, msg_type=msg_type)
        if msg_type == "hello" and isinstance(payload, dict):
            self.hub_hello = payload
        elif msg_type == "shake" and isinstance(payload, dict):
            if "envelope" in payload:
                self.hub_shake_reply = payload
            else:
                self.hub_shake = payload


def _parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--crypto-key", default=None)
    ap.add_argument("--useragent", default="")
    ap.add_argument("--site-id", default="test")
    ap.add_argument("--binarize", action="store_true")
    ap.add_argument("--mode", choices=("roundtrip", "connect"), default="roundtrip")
    ap.add_argument("--utterance", default="hello")
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("--lang", default=None)
    ap.add_argument("--destination", default="skills", help="'' to let the client fill it")
    ap.add_argument("--timeout", type=float, default=30.0, help="connect timeout (s)")
    ap.add_argument("--reply-timeout", type=float, default=10.0, help="per-utterance (s)")
    ap.add_argument(
        "--stop-on-error",
        action="store_true",
        help="stop waiting for the handshake at the first socket error/close",
    )
    ap.add_argument(
        "--force-rsa",
        action="store_true",
        help="drop the password after construction so the stock client offers its pubkey",
    )
    return ap.parse_args()


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Connect, talk, and describe the outcome."""
    result: dict[str, Any] = {
        "connected": False,
        "connect_s": None,
        "answer": None,
        "rtt_s": None,
        "answers": [],
        "rtts": [],
        "error": None,
        "negotiated": {"encoding": None, "cipher": None},
    }
    client = RecordingClient(
        key=args.key,
        password=args.password,
        crypto_key=args.crypto_key,
        host=args.host,
        port=args.port,
        useragent=args.useragent,
        binarize=args.binarize,
    )
    if args.force_rsa:
        client.identity.password = None
    result["session_id"] = client.session_id
    result["useragent"] = client.useragent
    result["site_id"] = args.site_id

    speaks: queue.Queue[dict[str, Any]] = queue.Queue()

    def on_bus(message: HiveMessage) -> None:
        payload = message.payload
        if getattr(payload, "msg_type", None) == "speak":
            speaks.put({"t": time.perf_counter(), "message": json.loads(payload.serialize())})

    client.on("bus", on_bus)

    connect_error: list[str] = []

    def do_connect() -> None:
        try:
            client.connect(site_id=args.site_id)
        except Exception as exc:
            connect_error.append(repr(exc))

    start = time.perf_counter()
    worker = threading.Thread(target=do_connect, name="refclient-connect", daemon=True)
    worker.start()
    failure = _wait_connect(worker, client, args.timeout, args.stop_on_error)
    elapsed = time.perf_counter() - start
    if failure is not None:
        detail = (
            failure.get("error") or f"code={failure.get('code')} reason={failure.get('reason')}"
        )
        result["error"] = f"gave up after {failure['kind']}: {detail}"
    elif worker.is_alive():
        result["error"] = f"timeout: handshake not completed within {args.timeout:g}s"
    elif connect_error:
        result["error"] = f"connect raised {connect_error[0]}"
    else:
        result["connected"] = True
        result["connect_s"] = round(elapsed, 4)
    result["negotiated"] = {"encoding": _text(client.json_encoding), "cipher": _text(client.cipher)}

    if result["connected"] and args.mode == "roundtrip":
        answer_messages = []
        for _ in range(args.count):
            context: dict[str, Any] = {}
            if args.destination:
                context["destination"] = args.destination
            data: dict[str, Any] = {"utterances": [args.utterance]}
            if args.lang:
                data["lang"] = args.lang
            sent = time.perf_counter()
            client.emit(Message("recognizer_loop:utterance", data, context))
            try:
                got = speaks.get(timeout=args.reply_timeout)
            except queue.Empty:
                result["error"] = f"no speak answer within {args.reply_timeout:g}s"
                break
            result["rtts"].append(round(got["t"] - sent, 6))
            answer_messages.append(got["message"])
            result["answers"].append(got["message"].get("data", {}).get("utterance"))
        if result["answers"]:
            result["answer"] = result["answers"][0]
            result["rtt_s"] = result["rtts"][0]
            result["answer_message"] = answer_messages[0]

    protocol = getattr(client, "protocol", None)
    internal = getattr(protocol, "internal_protocol", None)
    result["hub_node_id"] = getattr(internal, "node_id", None)
    result["hub_hello"] = _summarise_hello(client.hub_hello)
    result["hub_shake"] = client.hub_shake
    result["hub_shake_reply"] = client.hub_shake_reply
    result["events"] = list(client.events)  # a snapshot: close() below adds our own close
    try:
        client.close()
    except Exception as exc:  # the socket may already be gone
        result["close_error"] = repr(exc)
    return result


def _wait_connect(
    worker: threading.Thread, client: RecordingClient, timeout: float, stop_on_error: bool
) -> dict[str, Any] | None:
    """Wait for ``connect()``; with ``stop_on_error`` return the first failure event."""
    deadline = time.perf_counter() + timeout
    while worker.is_alive() and time.perf_counter() < deadline:
        if stop_on_error:
            for event in list(client.events):
                if event["kind"] in ("error", "close", "handler_error"):
                    return event
        worker.join(0.05)
    return None


def _summarise_hello(hello: dict[str, Any] | None) -> dict[str, Any] | None:
    """HELLO payload without the bulky PEM."""
    if hello is None:
        return None
    out = {k: v for k, v in hello.items() if k != "pubkey"}
    out["has_pubkey"] = bool(hello.get("pubkey"))
    return out


def main() -> None:
    """Print one JSON line and exit hard (client threads may still be blocked)."""
    args = _parse()
    try:
        result = run(args)
    except Exception as exc:
        result = {"connected": False, "error": f"client crashed: {exc!r}"}
    line = json.dumps(result, default=repr) + "\n"
    os.write(_RESULT_FD, line.encode("utf-8"))
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
