"""Protocol v0 over real websockets: frames exactly as HiveMind-js seals them (issue #12).

HiveMind-js (the old ``HiveMind.js``) opens ``ws://host:port?authorization=...``,
never handshakes, and sends each message as
``{"nonce": hex(16 random bytes), "ciphertext": hex(AES-GCM ciphertext || tag)}``
with the row's 16-character ``crypto_key`` (UTF-8) as the AES-128 key, the
WebCrypto layout. It reads the hub's frames as ``{"ciphertext", "tag", "nonce"}``
in hex, or plaintext JSON, and acts on BUS messages only. The frames here are
built with ``cryptography`` directly, not with our protocol code, so the test
speaks what the JavaScript speaks.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from websockets.exceptions import ConnectionClosed

from .hubkit import TestClient, raw_connect, running_hub

CRYPTO_KEY = "ivf1NQSkQNogWYyr"


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


def js_path(key: str, username: str = "HiveMind-js") -> str:
    """HiveMind-js's URL has no ``/`` before the query; websockets sends the path ``/?...``."""
    return "/?authorization=" + base64.b64encode(f"{username}:{key}".encode()).decode()


def js_seal(message: dict[str, Any], crypto_key: str = CRYPTO_KEY) -> str:
    iv = os.urandom(16)
    sealed = AESGCM(crypto_key.encode("utf-8")).encrypt(iv, json.dumps(message).encode(), None)
    return json.dumps({"nonce": iv.hex(), "ciphertext": sealed.hex()})


def js_open(frame: str | bytes, crypto_key: str = CRYPTO_KEY) -> dict[str, Any]:
    data = json.loads(frame)
    if "ciphertext" not in data:
        return dict(data)
    blob = bytes.fromhex(data["ciphertext"]) + bytes.fromhex(data.get("tag", ""))
    plain = AESGCM(crypto_key.encode("utf-8")).decrypt(bytes.fromhex(data["nonce"]), blob, None)
    return dict(json.loads(plain))


def utterance(text: str) -> dict[str, Any]:
    return {
        "msg_type": "bus",
        "payload": {
            "type": "recognizer_loop:utterance",
            "data": {"utterances": [text]},
            "context": {
                "source": "javascript",
                "destination": "HiveMind",
                "platform": "JarbasHivemindJsV0.1",
            },
        },
    }


async def speak(ws: Any, timeout: float = 5.0) -> tuple[str, str]:
    """The next ``speak`` utterance the hub sends, and the raw frame it came in."""
    while True:
        frame = await asyncio.wait_for(ws.recv(), timeout)
        msg = js_open(frame)
        payload = msg.get("payload")
        if msg.get("msg_type") == "bus" and isinstance(payload, dict):
            if payload.get("type") == "speak":
                return payload["data"]["utterance"], frame


async def nothing_spoken(ws: Any, within: float = 0.6) -> bool:
    try:
        await speak(ws, within)
    except TimeoutError:
        return True
    return False


def test_hivemind_js_frames_get_answers_on_a_row_with_a_password_too() -> None:
    async def scenario() -> None:
        async with running_hub() as hub:
            row = hub.db.add_client("js", password="pw", crypto_key=CRYPTO_KEY)
            ws = await raw_connect(hub.port, js_path(row.api_key))
            opening = [json.loads(await ws.recv()) for _ in range(2)]  # plaintext, ignored by js
            assert [m["msg_type"] for m in opening] == ["hello", "shake"]
            assert opening[1]["payload"]["min_protocol_version"] == 0
            await ws.send(js_seal(utterance("echo from javascript")))
            text, _ = await speak(ws)
            assert text == "from javascript"
            await ws.send(js_seal(utterance("echo twice")))
            assert (await speak(ws))[0] == "twice"
            link = next(iter(hub.server.connections))
            assert link.conn.mode == "preshared"
            await ws.close()
            # v1 on the same row is unchanged: our client does the password handshake
            c = await TestClient(hub.port, row.api_key, "pw").connect()
            assert c.conn.mode == "password"
            await c.close()

    run(scenario())


def test_v0_replays_and_reflections_are_dropped_on_the_same_and_on_a_new_link() -> None:
    async def scenario() -> None:
        async with running_hub() as hub:
            row = hub.db.add_client("js", password="pw", crypto_key=CRYPTO_KEY)
            ws = await raw_connect(hub.port, js_path(row.api_key))
            captured = js_seal(utterance("echo pay once"))
            await ws.send(captured)
            text, answer_frame = await speak(ws)
            assert text == "pay once"
            await ws.send(captured)  # replay on the same link
            assert await nothing_spoken(ws)
            await ws.close()
            # a new link of the same key: the key is the same, the frames are not fresh
            again = await raw_connect(hub.port, js_path(row.api_key))
            await again.send(captured)
            await again.send(answer_frame)  # the hub's own frame, reflected
            assert await nothing_spoken(again)
            await again.send(js_seal(utterance("echo fresh one")))
            assert (await speak(again))[0] == "fresh one"  # the link stayed open
            await again.close()
            stats = hub.server.stats
            assert stats.get("replays_dropped", 0) == 3, stats

    run(scenario())


def test_v0_needs_the_rows_crypto_key_and_allow_v0() -> None:
    async def scenario() -> None:
        async with running_hub() as hub:
            plain_row = hub.db.add_client("no-key", password="pw")
            keyed_row = hub.db.add_client("js", password="pw", crypto_key=CRYPTO_KEY)
            for key, frame in (
                (plain_row.api_key, js_seal(utterance("echo no"))),  # no crypto_key on the row
                (keyed_row.api_key, js_seal(utterance("echo no"), "0123456789abcdef")),  # wrong
            ):
                ws = await raw_connect(hub.port, js_path(key))
                await ws.send(frame)
                try:
                    while True:
                        msg = json.loads(await asyncio.wait_for(ws.recv(), 5))
                        assert msg.get("msg_type") in ("hello", "shake"), msg
                except ConnectionClosed:
                    pass
                assert ws.close_code in (1002, 1008), ws.close_code
            assert not hub.agent.injected
        async with running_hub(allow_v0=False) as hub:
            row = hub.db.add_client("js", password="pw", crypto_key=CRYPTO_KEY)
            ws = await raw_connect(hub.port, js_path(row.api_key))
            opening = [json.loads(await ws.recv()) for _ in range(2)]
            assert opening[1]["payload"]["min_protocol_version"] == 1
            assert opening[1]["payload"]["handshake"] is True
            await ws.send(js_seal(utterance("echo no")))
            with contextlib.suppress(ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), 5)
            assert ws.close_code == 1002
            assert not hub.agent.injected

    run(scenario())
