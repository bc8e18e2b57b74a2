"""The hub side of protocol v3 over real websockets: XX then KK, pins, PSKs, floors, chunks.

The satellite is our sans-I/O client ``Connection`` with ``v3=V3Settings``
(``hubkit.TestClient``), given its PSK up front.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from hivemind_bus_client.protocol.connection import HandshakeComplete
from hivemind_bus_client.protocol.v3offer import (
    REASON_NEEDS_PASSWORD,
    REASON_PIN_MISMATCH,
    derive_psk,
)
from hivemind_bus_client.protocol.v3settings import REASON_REQUIRES_V3, V3Settings
from hivemind_bus_client.transport.channel import QueueChannel
from hivemind_core.admission import Admission, Admitted
from hivemind_core.config import HubConfig
from hivemind_core.database import Client, open_database
from hivemind_core.links import SatelliteLink
from hivemind_core.node import HubNode
from hivemind_core.noise_keys import (
    MIN_VERSION_FIELD,
    NOISE_KEY_FILE,
    PIN_FIELD,
    create_noise_key,
    hub_noise_key,
    public_hex,
)
from hivemind_core.service import build_server
from hivemind_core.throttle import AuthThrottle

from .hubkit import (
    HUB_KEY,
    Hub,
    RecordingAgent,
    TestClient,
    auth_path,
    is_type,
    raw_connect,
    running_hub,
)

PASSWORD = "hivemind-v3-hub-test-Kx9q-2026"
CLIENT_STATIC = bytes(range(32))


@functools.lru_cache(maxsize=8)
def psk_of(password: str, node_id: str) -> bytes:
    return derive_psk(password, node_id)


def v3_client(
    hub: Hub,
    key: str,
    password: str = PASSWORD,
    *,
    static: bytes = CLIENT_STATIC,
    hub_pin: bytes | None = None,
    **kw: Any,
) -> TestClient:
    """A v3 satellite of ``hub`` (its PSK computed here, off the hub)."""
    settings = V3Settings(
        static_private=static,
        psk=psk_of(password, hub.server.node_id),
        pinned_key=hub_pin,
    )
    return TestClient(hub.port, key, password, v3=settings, **kw)


def completed(client: TestClient) -> HandshakeComplete:
    done = [e for e in client.events if isinstance(e, HandshakeComplete)]
    assert len(done) == 1, client.events
    return done[0]


async def wait_for(check: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def hub_pub(hub: Hub) -> bytes:
    return bytes.fromhex(hub.server.node.noise.public_hex)


# ---- the key file -----------------------------------------------------------------------


def test_the_static_key_file_is_created_once_0600_hex_without_newline() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        key = hub_noise_key(Path(tmp) / "state")
        path = Path(tmp) / "state" / NOISE_KEY_FILE
        text = path.read_text()
        assert text == key.hex() and len(text) == 64 and text == text.lower()
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert hub_noise_key(Path(tmp) / "state") == key  # read back, not replaced
        assert sorted(p.name for p in path.parent.iterdir()) == [NOISE_KEY_FILE]
        os.chmod(path, 0o644)
        assert hub_noise_key(Path(tmp) / "state") == key
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600  # narrowed again


def test_a_damaged_key_file_stops_the_hub_with_a_clear_error() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / NOISE_KEY_FILE).write_text("not a key")
        with pytest.raises(ValueError, match="64 hex"):
            hub_noise_key(tmp)


def test_build_server_uses_the_key_file_beside_the_database() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = HubConfig(host="127.0.0.1", port=0, db_path=str(Path(tmp) / "clients.db"))
        cfg.identity_trust = False
        db = open_database(cfg, backend="sqlite", path=cfg.db_path)
        try:
            first = build_server(cfg, db).node.noise.public_hex
            second = build_server(cfg, db).node.noise.public_hex
            on_disk = bytes.fromhex((Path(tmp) / NOISE_KEY_FILE).read_text())
            assert first == second == public_hex(on_disk)
            assert (Path(tmp) / "hub_rsa.pem").exists()
        finally:
            db.close()


# ---- XX, pin, KK ------------------------------------------------------------------------


async def _xx_then_kk() -> None:
    async with running_hub() as hub:
        row = hub.db.add_client("sat", password=PASSWORD)
        sat = await v3_client(hub, row.api_key).connect()
        done = completed(sat)
        assert (done.protocol, done.pattern) == (3, "XXpsk2")
        assert done.peer_static == hub_pub(hub)
        await sat.utterance("hello")
        answer = await sat.next_bus(is_type("speak"))
        assert answer["data"]["utterance"]
        await wait_for(lambda: hub.db.get_client(row.client_id).metadata.get(PIN_FIELD))
        pin = hub.db.get_client(row.client_id).metadata[PIN_FIELD]
        assert pin == public_hex(CLIENT_STATIC)
        # Counted once the worker thread's write has returned to the loop.
        await wait_for(lambda: hub.server.stats.get("noise_pins") == 1)
        await sat.close()

        # The second connection: KK is offered, and runs when the client has its pin.
        kk = await v3_client(hub, row.api_key, hub_pin=hub_pub(hub)).connect()
        offer = kk.conn.peer_offer
        assert offer["noise"]["patterns"] == ["KKpsk0", "XXpsk2"]
        assert completed(kk).pattern == "KKpsk0"
        await kk.utterance("again")
        assert (await kk.next_bus(is_type("speak")))["data"]["utterance"]
        await kk.close()
        # Both links used one PSK derivation.
        assert hub.server.node.noise.psks.derivations == 1


def test_first_contact_runs_xx_pins_the_client_then_kk() -> None:
    asyncio.run(_xx_then_kk())


async def _contradicting_key() -> None:
    async with running_hub() as hub:
        row = hub.db.add_client("sat", password=PASSWORD)
        row.metadata[PIN_FIELD] = public_hex(CLIENT_STATIC)
        hub.db.update_client(row)
        other = create_noise_key()
        sat = v3_client(hub, row.api_key, static=other)
        with pytest.raises(ConnectionError):
            await sat.connect()
        assert sat.close_code == 1008
        assert sat.close_reason == REASON_PIN_MISMATCH
        # The pin is unchanged.
        assert hub.db.get_client(row.client_id).metadata[PIN_FIELD] == public_hex(CLIENT_STATIC)


def test_a_key_contradicting_the_pin_is_refused_1008() -> None:
    asyncio.run(_contradicting_key())


async def _wrong_password_kk() -> None:
    async with running_hub() as hub:
        row = hub.db.add_client("sat", password=PASSWORD)
        row.metadata[PIN_FIELD] = public_hex(CLIENT_STATIC)
        hub.db.update_client(row)
        sat = v3_client(hub, row.api_key, "a-wrong-password-of-some-length", hub_pin=hub_pub(hub))
        with pytest.raises(ConnectionError):
            await sat.connect()
        assert sat.close_code == 1008
        assert sat.close_reason.startswith("handshake failure")


def test_a_wrong_password_in_kk_is_refused_by_the_hub_1008() -> None:
    asyncio.run(_wrong_password_kk())


# ---- the offer --------------------------------------------------------------------------


async def _offer_once() -> None:
    async with running_hub() as hub:
        row = hub.db.add_client("sat", password=PASSWORD)
        ws = await raw_connect(hub.port, auth_path(row.api_key))
        frames = []
        try:
            while True:
                frames.append(await asyncio.wait_for(ws.recv(), 2.0))
        except asyncio.TimeoutError:
            pass
        await ws.close()
        kinds = [json.loads(f)["msg_type"] for f in frames]
        assert kinds == ["hello", "shake"], kinds  # sent once, never again
        offer = json.loads(frames[1])["payload"]
        assert offer["max_protocol_version"] == 3
        assert offer["noise"]["patterns"] == ["XXpsk2"]
        assert offer["password"] is True  # v1 clients still answer it


def test_the_hub_sends_hello_and_the_v3_offer_once() -> None:
    asyncio.run(_offer_once())


async def _v1_still_served() -> None:
    async with running_hub() as hub:
        row = hub.db.add_client("sat", password=PASSWORD)
        sat = await TestClient(hub.port, row.api_key, PASSWORD).connect()
        assert completed(sat).protocol == 1
        await sat.utterance("hello")
        assert (await sat.next_bus(is_type("speak")))["data"]["utterance"]
        await sat.close()


def test_a_v1_client_still_gets_v1_from_the_same_hub() -> None:
    asyncio.run(_v1_still_served())


# ---- the protocol floor -----------------------------------------------------------------


async def _floor_hub_wide() -> None:
    async with running_hub(min_protocol_version=3) as hub:
        row = hub.db.add_client("sat", password=PASSWORD)
        v1 = TestClient(hub.port, row.api_key, PASSWORD)
        with pytest.raises(ConnectionError):
            await v1.connect()
        assert (v1.close_code, v1.close_reason) == (1008, REASON_REQUIRES_V3)
        v3 = await v3_client(hub, row.api_key).connect()
        assert completed(v3).protocol == 3
        await v3.close()


def test_min_protocol_3_hub_wide_refuses_v1_and_serves_v3() -> None:
    asyncio.run(_floor_hub_wide())


async def _floor_per_row() -> None:
    async with running_hub() as hub:
        strict = hub.db.add_client("strict", password=PASSWORD, metadata={MIN_VERSION_FIELD: 3})
        lax = hub.db.add_client("lax", password=PASSWORD)
        v1 = TestClient(hub.port, strict.api_key, PASSWORD)
        with pytest.raises(ConnectionError):
            await v1.connect()
        assert (v1.close_code, v1.close_reason) == (1008, REASON_REQUIRES_V3)
        ok = await TestClient(hub.port, lax.api_key, PASSWORD).connect()
        assert completed(ok).protocol == 1
        await ok.close()


def test_min_protocol_3_on_a_row_refuses_only_that_rows_v1_client() -> None:
    asyncio.run(_floor_per_row())


async def _floor_without_password() -> None:
    async with running_hub(min_protocol_version=3) as hub:
        row = hub.db.add_client("sat", password="")
        ws = await raw_connect(hub.port, auth_path(row.api_key))
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5.0)
        assert (ws.close_code, ws.close_reason) == (1008, REASON_NEEDS_PASSWORD)


def test_min_protocol_3_refuses_a_row_without_password_at_open() -> None:
    asyncio.run(_floor_without_password())


# ---- big messages -----------------------------------------------------------------------


async def _big_answer(binarize: bool) -> None:
    async with running_hub(binarize=binarize) as hub:
        row = hub.db.add_client("sat", password=PASSWORD)
        sat = await v3_client(hub, row.api_key, binarize=binarize).connect()
        assert completed(sat).binarize is binarize
        text = "".join(f"{i:07d} " for i in range(150_000 // 8))  # about 150 KB each way
        await sat.utterance(text)
        answer = await sat.next_bus(is_type("speak"), timeout=10.0)
        got = hub.agent.injected[-1]["data"]["utterances"][0]
        assert got == text  # the client's chunked message reached the agent intact
        assert text.strip() in answer["data"]["utterance"]  # the chunked answer came back
        await sat.close()


def test_a_150_kb_message_crosses_a_v3_link_both_ways() -> None:
    asyncio.run(_big_answer(False))


def test_a_150_kb_message_crosses_a_binarized_v3_link_both_ways() -> None:
    asyncio.run(_big_answer(True))


# ---- transports -------------------------------------------------------------------------


async def _only_websocket_links_get_v3() -> None:
    cfg = HubConfig(identity_trust=False)
    node = HubNode(cfg, None, RecordingAgent(cfg), private_key=HUB_KEY)
    node.bind()
    admission = Admission(node, AuthThrottle(5, 60.0))
    row = Client(client_id=1, api_key="k", password=PASSWORD)

    def link(transport: str) -> SatelliteLink:
        channel = QueueChannel("mem")
        return SatelliteLink(
            node, admission, channel, Admitted(row, "ua", "k"), "mem", transport=transport
        )

    assert link("websocket").conn.v3 is not None
    assert link("http").conn.v3 is None and link("mqtt").conn.v3 is None
    # Under a floor of 3 a link without v3 is refused at open, before HELLO.
    node.noise.min_protocol_version = 3
    http = link("http")
    http.open()
    assert (http.conn.close_code, http.conn.close_reason) == (1008, REASON_REQUIRES_V3)
    assert http.driver.ended is not None
    await asyncio.sleep(0)
    node.halt()


def test_only_websocket_links_are_offered_v3() -> None:
    asyncio.run(_only_websocket_links_get_v3())
