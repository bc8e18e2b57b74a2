"""Codec throughput of the reference implementation (runs INSIDE the reference venv).

Run it with the interpreter printed by ``python tests/refenv.py``::

    <ref-python> benchmarks/_reference_codec.py [--seconds 0.3]

It measures, for a ~300-byte BUS HiveMessage ("recognizer_loop:utterance"),
frames per second of the reference's full send pipeline for each text encoding
(``HiveMessage.serialize`` then ``encrypt_as_json`` with AES-GCM and a 32-byte
key) and of the reverse (``decrypt_from_json``, ``json.loads``,
``HiveMessage(**dict)`` as the stock client does), plus the binary path
(``get_bitstring(compressed=True)`` then ``encrypt_bin``, and ``decrypt_bin``
then ``decode_bitstring``). Each figure is time-bounded by ``--seconds``.

Prints one JSON object: ``{"encode": {encoding: fps}, "decode": {encoding: fps
or null}, "binary_encode": fps, "binary_decode": fps, "message_bytes": n}``.
A decode the reference cannot do (JSON-Z85P on x86_64/aarch64) is ``null``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from ovos_bus_client import Message

from hivemind_bus_client.encryption import (
    SupportedEncodings,
    decrypt_bin,
    decrypt_from_json,
    encrypt_as_json,
    encrypt_bin,
)
from hivemind_bus_client.message import HiveMessage
from hivemind_bus_client.serialization import decode_bitstring, get_bitstring

CIPHER = "AES-GCM"
KEY = bytes(range(32))


def sample_message() -> HiveMessage:
    """A BUS utterance whose HiveMessage JSON is about 300 bytes."""
    payload = Message(
        "recognizer_loop:utterance",
        {"utterances": ["what time is it"]},
        {"source": "satellite", "session": {"session_id": "5f0c2a8e", "site_id": "home"}},
    )
    return HiveMessage("bus", payload)


#: Best of this many runs, as in ``codec.py``.
REPEATS = 5


def rate(func: Callable[[], Any], seconds: float) -> float:
    """Calls per second of ``func``: the best of :data:`REPEATS` runs, ``seconds`` in all."""
    func()  # warm up
    best = 0.0
    for _ in range(REPEATS):
        calls = 0
        batch = 1
        start = time.perf_counter()
        while True:
            for _ in range(batch):
                func()
            calls += batch
            elapsed = time.perf_counter() - start
            if elapsed >= seconds / REPEATS:
                best = max(best, calls / elapsed)
                break
            batch = min(batch * 2, 256)
    return best


def works(func: Callable[[], Any]) -> bool:
    """True when ``func`` runs without raising."""
    try:
        func()
    except Exception:
        return False
    return True


def measure(seconds: float) -> dict[str, Any]:
    """All figures as a JSON-ready dict."""
    msg = sample_message()
    plaintext = msg.serialize()
    encode: dict[str, float] = {}
    decode: dict[str, float | None] = {}
    for encoding in (e.value for e in SupportedEncodings):

        def send(enc: str = encoding) -> str:
            return encrypt_as_json(KEY, msg.serialize(), CIPHER, enc)

        frame = send()

        def receive(enc: str = encoding, text: str = frame) -> HiveMessage:
            return HiveMessage(**json.loads(decrypt_from_json(KEY, text, CIPHER, enc)))

        encode[encoding] = round(rate(send, seconds), 1)
        decode[encoding] = round(rate(receive, seconds), 1) if works(receive) else None

    def send_bin() -> bytes:
        bits = get_bitstring(
            hive_type=msg.msg_type,
            payload=msg.payload,
            compressed=True,
            hivemeta=msg.metadata,
            binary_type=msg.bin_type,
        )
        return encrypt_bin(KEY, bits.bytes, CIPHER)

    binary_frame = send_bin()

    def receive_bin() -> HiveMessage:
        return decode_bitstring(decrypt_bin(KEY, binary_frame, CIPHER))

    return {
        "encode": encode,
        "decode": decode,
        "binary_encode": round(rate(send_bin, seconds), 1),
        "binary_decode": round(rate(receive_bin, seconds), 1),
        "message_bytes": len(plaintext.encode("utf-8")),
    }


def main(argv: list[str] | None = None) -> int:
    """Parse options, measure, print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.3, help="time per measurement")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.seconds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
