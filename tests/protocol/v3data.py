"""The v3 test vectors (``v3_vectors.json``, transcribed from captured sessions).

Every value was produced by the reference client 1.2.12a1 and hub 5.3.10a1
(live captures, run 1 XXpsk2 and run 2 KKpsk0) or by the reference Noise code
with fixed ephemerals (the synthetic vectors); the keys are fixed byte ranges.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).with_name("v3_vectors.json")).read_text(encoding="utf-8")
)

PASSWORD: str = VECTORS["password"]
CLIENT_STATIC = bytes.fromhex(VECTORS["client_static"])
CLIENT_STATIC_PUB = bytes.fromhex(VECTORS["client_static_pub"])
HUB_STATIC = bytes.fromhex(VECTORS["hub_static"])
HUB_STATIC_PUB = bytes.fromhex(VECTORS["hub_static_pub"])
CLIENT_EPHEMERAL = bytes.fromhex(VECTORS["client_ephemeral"])
CLIENT_EPHEMERAL_PUB = bytes.fromhex(VECTORS["client_ephemeral_pub"])
HUB_EPHEMERAL = bytes.fromhex(VECTORS["hub_ephemeral"])
HUB_EPHEMERAL_PUB = bytes.fromhex(VECTORS["hub_ephemeral_pub"])

SYNTH: dict[str, Any] = VECTORS["synthetic"]
SYNTH_PSK = bytes.fromhex(SYNTH["psk"])
LIVE_XX: dict[str, Any] = VECTORS["live_xx"]
LIVE_KK: dict[str, Any] = VECTORS["live_kk"]
LIVE_PSK = bytes.fromhex(LIVE_XX["psk"])


def frame_text(run: dict[str, Any], name: str) -> str:
    """A captured text frame, as sent."""
    return str(run["frames"][name]["data"])


def frame_bytes(run: dict[str, Any], name: str) -> bytes:
    """A captured binary frame, as sent."""
    return bytes.fromhex(run["frames"][name]["data"])


def frame_payload(run: dict[str, Any], name: str) -> dict[str, Any]:
    """The payload of a captured text frame."""
    payload: dict[str, Any] = json.loads(frame_text(run, name))["payload"]
    return payload


def live_kk_hello() -> dict[str, Any]:
    """Run 2's HELLO: run 1's with the peer the capture names."""
    hello = frame_payload(LIVE_XX, "F1")
    hello["peer"] = LIVE_KK["peer"]
    return hello
