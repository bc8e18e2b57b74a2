"""A burst of v3 satellites of one client, run in its own process (``test_v3_burst``).

``python _v3_burst.py PORT ACCESS_KEY PASSWORD PSK_HEX N``: opens N v3 links at
once (our sans-I/O client, the PSK given up front, so this process derives
nothing), waits until each is keyed and greeted, closes them, and prints ONE
JSON line: ``{"ready": n, "failed": [reasons...], "seconds": t}``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hivemind_bus_client.protocol.v3settings import V3Settings
from hub.hubkit import TestClient


async def main(port: int, key: str, password: str, psk: bytes, n: int) -> dict[str, object]:
    settings = V3Settings(static_private=bytes(range(32)), psk=psk)
    clients = [
        TestClient(port, key, password, v3=settings, session_id=f"burst-{i}") for i in range(n)
    ]
    start = time.perf_counter()
    results = await asyncio.gather(
        *(c.connect(timeout=60.0) for c in clients), return_exceptions=True
    )
    seconds = time.perf_counter() - start
    failed = [repr(r) for r in results if isinstance(r, BaseException)]
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    return {"ready": n - len(failed), "failed": failed[:5], "seconds": round(seconds, 3)}


if __name__ == "__main__":
    port, key, password, psk_hex, n = sys.argv[1:6]
    out = asyncio.run(main(int(port), key, password, bytes.fromhex(psk_hex), int(n)))
    print(json.dumps(out), flush=True)
