"""One-minute demo: a hub with the embedded agent, one client, one utterance.

``python -m hivemind_core.demo`` starts a hub on a free loopback port with a
throwaway database (a temporary folder, removed afterwards), registers a
client, connects to the hub with :class:`hivemind_bus_client.HiveMessageBusClient`,
asks "what time is it" and prints the answer. Exit status 0 on success.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sys
import tempfile
import threading
from pathlib import Path

from ovos_bus_client.message import Message

from hivemind_core.config import HubConfig
from hivemind_core.database import open_database
from hivemind_core.service import build_server

__all__ = ["main"]

LOG = logging.getLogger("hivemind_core.demo")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--utterance", default="what time is it")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    with tempfile.TemporaryDirectory(prefix="hivemind-demo-") as tmp:
        config = HubConfig(
            host="127.0.0.1",
            port=_free_port(),
            db_path=str(Path(tmp) / "clients.db"),
            agent="embedded",
        )
        db = open_database(config, backend="sqlite", path=config.db_path)
        record = db.add_client("demo-satellite")
        server = build_server(config, db)
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="hivemind-demo-hub", daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(server.start(), loop).result(30)
            print(f"hub listening on ws://127.0.0.1:{server.port} (embedded agent)")
            answer = _ask(server.port, record.api_key, record.password or "", args.utterance)
        finally:
            asyncio.run_coroutine_threadsafe(server.stop(), loop).result(30)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            db.close()
    if answer is None:
        print("no answer from the hub", file=sys.stderr)
        return 1
    print(f"you:  {args.utterance}")
    print(f"hive: {answer}")
    return 0


def _ask(port: int, key: str, password: str, utterance: str) -> str | None:
    from hivemind_bus_client import HiveMessageBusClient

    client = HiveMessageBusClient(
        key=key, password=password, host="127.0.0.1", port=port, useragent="hivemind-demo"
    )
    try:
        client.connect(site_id="demo", timeout=15)
        reply = client.wait_for_response(
            Message("recognizer_loop:utterance", {"utterances": [utterance]}),
            reply_type="speak",
            timeout=15,
        )
    finally:
        client.close()
    if reply is None:
        return None
    payload = reply.payload
    data = payload.data if hasattr(payload, "data") else (payload or {}).get("data", {})
    return str(data.get("utterance"))


if __name__ == "__main__":
    sys.exit(main())
