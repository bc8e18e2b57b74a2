"""The hub listener over real websockets on loopback: handshakes, refusals, limits, routing."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from hivemind_bus_client.message import HiveMessage, HiveMessageType, HiveMindBinaryPayloadType
from hivemind_core.binary import BinaryHandler
from hivemind_core.server import parse_authorization

from .hubkit import (
    CLIENT_KEY,
    InvalidStatus,
    RecordingAgent,
    TestClient,
    auth_path,
    is_type,
    raw_connect,
    running_hub,
)

T = HiveMessageType
SPEAK = is_type("speak")
ENCODINGS = [
    "JSON-B64",
    "JSON-URLSAFE-B64",
    "JSON-HEX",
    "JSON-B91",
    "JSON-Z85B",
    "JSON-B32",
    "JSON-Z85P",
]
CIPHERS = ["AES-GCM", "CHACHA20-POLY1305"]


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


async def ask(client: TestClient, text: str = "echo hi there") -> dict[str, Any]:
    await client.utterance(text)
    return await client.next_bus(SPEAK)


# -- handshakes -----------------------------------------------------------------------


def test_password_handshake_round_trip_and_final_peer() -> None:
    async def scenario() -> None:
        async with running_hub() as hub:
            row = hub.db.add_client("sat1", password="pw")
            c = await TestClient(hub.port, row.api_key, "pw", session_id="abc").connect()
            # Regression (stale peer in HELLO): the final HELLO names the real peer.
            assert c.peer == f"test-ua::{row.client_id}::sat1::abc"
            answer = await ask(c, "what time is it")
            assert answer["data"]["utterance"].startswith("It is ")
            assert answer["context"]["destination"] == c.peer
            assert answer["context"]["source"] == "hive"
            injected = hub.agent.injected[0]
            assert injected["context"]["source"] == c.peer
            assert injected["context"]["peer"] == c.peer
            # Namespaced for the agent; the answer carries the satellite's own id.
            assert injected["context"]["session"]["session_id"].endswith(":abc")
            assert answer["context"]["session"]["session_id"] == "abc"
            assert injected["context"]["session"]["site_id"] == "kitchen"
            await c.close()

    run(scenario())


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("cipher", CIPHERS)
def test_every_cipher_and_encoding(encoding: str, cipher: str) -> None:
    async def scenario() -> None:
        async with running_hub() as hub:
            row = hub.db.add_client("sat", password="pw")
            c = await TestClient(
                hub.port, row.api_key, "pw", encodings=[encoding], ciphers=[cipher]
            ).connect()
            assert c.conn.cipher is not None
            assert c.conn.cipher.encoding.value == encoding
            assert c.conn.cipher.cipher.value == cipher
            assert (await ask(c, "echo ok"))["data"]["utterance"] == "ok"
            await c.close()

    run(scenario())


@pytest.mark.parametrize("binarize", [False, True])
def test_binarize(binarize: bool) -> None:
    async def scenario() -> None:
        async with running_hub(binarize=True) as hub:
            row = hub.db.add_client("sat", password="pw")
            c = await TestClient(hub.port, row.api_key, "pw", binarize=binarize).connect()
            assert c.conn.binarize is binarize
            assert (await ask(c, "echo bin"))["data"]["utterance"] == "bin"
            await c.close()

    run(scenario())


def test_rsa_handshake_for_a_client_without_password() -> None:
    async def scenario() -> None:
        async with running_hub() as hub:
            row = hub.db.add_client("rsa", password="")
            c = await TestClient(hub.port, row.api_key, None, private_key=CLIENT_KEY).connect()
            assert c.conn.mode == "rsa"
            assert (await ask(c, "echo rsa"))["data"]["utterance"] == "rsa"
            await c.close()

    run(scenario())


def test_preshared_key_client() -> None:
    async def scenario() -> None:
        async with running_hub() as hub:
            row = hub.db.add_client("legacy", password="", crypto_key="0123456789abcdef")
            c = await TestClient(
                hub.port, row.api_key, None, crypto_key="0123456789abcdef"
            ).connect()
            assert c.conn.mode == "preshared"
            assert (await ask(c, "echo psk"))["data"]["utterance"] == "psk"
            await c.close()

    run(scenario())


# -- refusals ---------------------------------------------------------------------------


def test_unknown_key_is_closed_with_1008() -> None:
    async def scenario() -> None:
        async with running_hub() as hub:
            c = TestClient(hub.port, "no-such-key", "pw")
            with pytest.raises(ConnectionError):
                await c.connect()
            assert c.close_code == 1008
            assert "invalid access key" in (c.close_reason or "")
            assert hub.server.stats["auth_failures"] == 1

    run(scenario())


@pytest.mark.parametrize("path", ["/", "/?authorization=%%%", "/?authorization=bm9jb2xvbg=="])
def test_malformed_authorization_is_closed_with_1008(path: str) -> None:
    async def scenario() -> None:
        async with running_hub() as hub:
            ws = await raw_connect(hub.port, path)
            with pytest.raises(ConnectionClosed) as info:  # a timeout is a failure
                await asyncio.wait_for(ws.recv(), 5)
            assert info.value.rcvd is not None, "the hub must close with a close frame"
            assert info.value.rcvd.code == 1008
            assert info.value.rcvd.reason == "missing or malformed authorization"
            assert ws.close_code == 1008

    run(scenario())


def test_revoked_key_cannot_log_in() -> None:
    """Regression: the reference admits the tombstone key ``revoked`` after a delete."""

    async def scenario() -> None:
        async with running_hub() as hub:
            row = hub.db.add_client("gone", password="pw")
            assert hub.db.delete_client(row.client_id)
            for key in (row.api_key, "revoked"):
                c = TestClient(hub.port, key, "pw")
                with pytest.raises(ConnectionError):
                    await c.connect()
                assert c.close_code == 1008

    run(scenario())


def test_wrong_password_is_closed_with_1008() -> None:
    async def scenario() -> None:
        async with running_hub() as hub:
            row = hub.db.add_client("sat", password="pw")
            c = TestClient(hub.port, row.api_key, "nope")
            with pytest.raises(ConnectionError):
                await c.connect()
            assert c.close_code == 1008

    run(scenario())


def test_failed_auth_throttling_per_address() -> None:
    async def scenario() -> None:
        async with running_hub(failed_auth_budget=2, auth_window=60.0) as hub:
            row = hub.db.add_client("sat", password="pw")
            for _ in range(2):
                c = TestClient(hub.port, "bad-key", "pw")
                with pytest.raises(ConnectionError):
                    await c.connect()
            # Over budget: another guess is refused at the upgrade...
            with pytest.raises(InvalidStatus) as info:
                await raw_connect(hub.port, auth_path("bad-key-2"))
            assert info.value.response.status_code == 429
            assert hub.server.stats["auth_throttled"] >= 1
            # ...while the right key from the same address still gets in.
            ok = TestClient(hub.port, row.api_key, "pw")
            await ok.connect()
            await ok.close()

    run(scenario())


def test_handshake_timeout_closes_with_1013() -> None:
    async def scenario() -> None:
        async with running_hub(handshake_timeout=0.3) as hub:
            row = hub.db.add_client("slow", password="pw")
            ws = await raw_connect(hub.port, auth_path(row.api_key))
            frames = []
            with pytest.raises(ConnectionClosed) as info:  # a timeout is a failure
                while True:
                    frames.append(await asyncio.wait_for(ws.recv(), 5))
            assert info.value.rcvd is not None and info.value.rcvd.code == 1013
            assert ws.close_code == 1013
            assert [json.loads(f)["msg_type"] for f in frames] == ["hello", "shake"]

    run(scenario())


def test_idle_timeout_closes_silent_links() -> None:
    async def scenario() -> None:
        async with running_hub(idle_timeout=0.4) as hub:
            row = hub.db.add_client("sat", password="pw")
            c = await TestClient(hub.port, row.api_key, "pw").connect()
            assert await c.wait_closed(5) == 1001
            assert hub.server.stats["idle_closed"] == 1

    run(scenario())


def test_ping_floods_beyond_the_configured_rate_are_dropped() -> None:
    async def scenario() -> None:
        async with running_hub(ping_rate=0.01, ping_burst=2) as hub:
            row = hub.db.add_client("pinger", password="pw")
            c = await TestClient(hub.port, row.api_key, "pw").connect()
            for n in range(4):
                ping = HiveMessage(T.PING, {"ping_id": f"p{n}"})
                await c.send(HiveMessage(T.PROPAGATE, ping, metadata={"flood_id": f"f{n}"}))
            pongs = []
            while len(pongs) < 2:
                m = await asyncio.wait_for(c.messages.get(), 5)
                if m.msg_type is T.PONG:
                    pongs.append(m.payload["ping_id"])
            assert pongs == ["p0", "p1"]
            for _ in range(50):
                if hub.server.router.counters.get("ping_rate_limited") == 2:
                    break
                await asyncio.sleep(0.02)
            assert hub.server.router.counters.get("ping_rate_limited") == 2
            await c.close()

    run(scenario())


def test_query_timeout_setting_reaches_the_router() -> None:
    class Silent(RecordingAgent):
        def ask(self, message: dict[str, Any], answer: Any) -> None:
            pass  # never answers: the hub must give up after query_timeout

    async def scenario() -> None:
        async with running_hub(agent=Silent(), query_timeout=0.3) as hub:
            row = hub.db.add_client("asker", password="pw")
            c = await TestClient(hub.port, row.api_key, "pw").connect()
            inner = HiveMessage(
                T.BUS, {"type": "recognizer_loop:utterance", "data": {}, "context": {}}
            )
            loop = asyncio.get_running_loop()
            started = loop.time()
            await c.send(HiveMessage(T.QUERY, inner, metadata={"query_id": "q1"}))
            while True:
                m = await asyncio.wait_for(c.messages.get(), 5)
                if m.msg_type is T.QUERY:
                    break
            assert m.payload.payload.msg_type == "hive.query.timeout"
            assert loop.time() - started < 3
            await c.close()

    run(scenario())


# -- hostile input never hurts the hub or other links ----------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        "[1,2]",
        '{"msg_type": "nope"}',
        '{"ciphertext": "zz", "nonce": "00"}',
        b"\x00\xff\x13",
    ],
)
def test_garbage_frames_close_only_that_link(frame: str | bytes) -> None:
    async def scenario() -> None:
        async with running_hub() as hub:
            row = hub.db.add_client("sat", password="pw")
            good = await TestClient(hub.port, row.api_key, "pw", session_id="good").connect()
            bad = await TestClient(hub.port, row.api_key, "pw", session_id="bad").connect()
            await bad.send_raw(frame)
            code = await bad.wait_closed(5)
            assert code in (1002, 1008)
            assert (await ask(good, "echo still here"))["data"]["utterance"] == "still here"
            assert hub.server.stats.get("errors", 0) == 0
            await good.close()

    run(scenario())


def test_oversized_frame_closes_with_1009() -> None:
    async def scenario() -> None:
        async with running_hub(max_frame_size=4096) as hub:
            row = hub.db.add_client("sat", password="pw")
            good = await TestClient(hub.port, row.api_key, "pw", session_id="good").connect()
            big = await TestClient(hub.port, row.api_key, "pw", session_id="big").connect()
            await big.send_raw("x" * 10_000)
            assert await big.wait_closed(5) == 1009
            assert (await ask(good, "echo fine"))["data"]["utterance"] == "fine"
            await good.close()

    run(scenario())


@pytest.mark.parametrize("mtype", [T.ESCALATE, T.PROPAGATE])
def test_escalate_and_propagate_do_not_crash_the_sender(mtype: HiveMessageType) -> None:
    """Regression: the reference aborts the sender's socket on PROPAGATE/ESCALATE."""

    async def scenario() -> None:
        async with running_hub() as hub:
            row = hub.db.add_client("sat", password="pw")
            c = await TestClient(hub.port, row.api_key, "pw").connect()
            inner = HiveMessage(
                T.BUS,
                {
                    "type": "recognizer_loop:utterance",
                    "data": {"utterances": ["echo up"]},
                    "context": {},
                },
            )
            other = await TestClient(hub.port, row.api_key, "pw", session_id="other").connect()
            await c.send(HiveMessage(mtype, inner))
            if mtype is T.ESCALATE:
                # The top hub delivers the inner message locally: it is answered.
                assert (await c.next_bus(SPEAK))["data"]["utterance"] == "up"
            else:
                # The flood reaches the other satellite (the sender's link is untrusted,
                # so its inner BUS is not injected here).
                got = await asyncio.wait_for(other.messages.get(), 5)
                assert got.msg_type is T.PROPAGATE
                assert got.payload.payload_dict()["data"]["utterances"] == ["echo up"]
            assert (await ask(c, "echo alive"))["data"]["utterance"] == "alive"
            assert not c.closed.is_set()
            await other.close()
            await c.close()

    run(scenario())


@pytest.mark.parametrize(
    "mtype", [T.QUERY, T.CASCADE, T.RENDEZVOUS, T.THIRDPRTY, T.INTERCOM, T.PING]
)
def test_other_types_are_dropped_without_harm(mtype: HiveMessageType) -> None:
    async def scenario() -> None:
        async with running_hub() as hub:
            row = hub.db.add_client("sat", password="pw")
            c = await TestClient(hub.port, row.api_key, "pw").connect()
            await c.send(HiveMessage(mtype, {"anything": [1, 2, 3]}))
            assert (await ask(c, "echo ok"))["data"]["utterance"] == "ok"
            await c.close()

    run(scenario())


# -- peers and sessions -------------------------------------------------------------------


def test_peer_collision_gets_unique_peers_and_isolated_replies() -> None:
    """Regression: same key + same session id no longer share one peer."""

    async def scenario() -> None:
        async with running_hub() as hub:
            row = hub.db.add_client("twin", password="pw")
            a = await TestClient(hub.port, row.api_key, "pw", session_id="same").connect()
            b = await TestClient(hub.port, row.api_key, "pw", session_id="same").connect()
            assert a.peer != b.peer
            assert b.peer == a.peer + "::2"
            assert (await ask(a, "echo to a"))["data"]["utterance"] == "to a"
            assert (await ask(b, "echo to b"))["data"]["utterance"] == "to b"
            assert await a.no_bus(SPEAK, 0.3)  # a got nothing of b's
            await a.close()
            await asyncio.sleep(0.1)
            # b survives a's disconnect (the reference dropped both).
            assert (await ask(b, "echo after"))["data"]["utterance"] == "after"
            await b.close()

    run(scenario())


def test_replies_go_only_to_the_originating_satellite() -> None:
    async def scenario() -> None:
        async with running_hub() as hub:
            row1 = hub.db.add_client("one", password="pw")
            row2 = hub.db.add_client("two", password="pw")
            one = await TestClient(hub.port, row1.api_key, "pw", session_id="s-one").connect()
            two = await TestClient(hub.port, row2.api_key, "pw", session_id="s-two").connect()
            answer = await ask(one, "echo mine")
            assert answer["context"]["session"]["session_id"] == "s-one"
            assert await two.no_bus(SPEAK, 0.3)
            # An agent message addressed to a peer reaches exactly that peer.
            hub.server.agent_reply(
                {"type": "hello.two", "data": {}, "context": {"destination": [two.peer]}}
            )
            assert (await two.next_bus(is_type("hello.two")))["context"]["source"] == "hive"
            assert await one.no_bus(is_type("hello.two"), 0.3)
            await one.close()
            await two.close()

    run(scenario())


def test_non_admin_cannot_address_another_satellite() -> None:
    async def scenario() -> None:
        async with running_hub() as hub:
            row1 = hub.db.add_client(
                "one", password="pw", allowed_types=["some.thing", "recognizer_loop:utterance"]
            )
            row2 = hub.db.add_client("two", password="pw")
            one = await TestClient(hub.port, row1.api_key, "pw", session_id="a").connect()
            two = await TestClient(hub.port, row2.api_key, "pw", session_id="b").connect()
            await one.emit("some.thing", {}, destination=two.peer)
            await one.utterance("echo sync")
            await one.next_bus(SPEAK)
            sent = [m for m in hub.agent.injected if m["type"] == "some.thing"]
            assert sent and sent[0]["context"]["destination"] == "skills"
            await one.close()
            await two.close()

    run(scenario())


def test_non_admin_default_session_is_namespaced() -> None:
    async def scenario() -> None:
        async with running_hub() as hub:
            row = hub.db.add_client("sat", password="pw")
            c = await TestClient(hub.port, row.api_key, "pw", session_id="default").connect()
            answer = await ask(c)
            # The satellite keeps its "default"; the agent never sees the hub's own.
            assert answer["context"]["session"]["session_id"] == "default"
            sid = hub.agent.injected[0]["context"]["session"]["session_id"]
            assert sid != "default" and sid.endswith(":default")
            await c.close()

    run(scenario())


def test_shared_bus_is_observed_not_injected() -> None:
    async def scenario() -> None:
        async with running_hub() as hub:
            row = hub.db.add_client("sat", password="pw")
            c = await TestClient(hub.port, row.api_key, "pw").connect()
            payload = {
                "type": "recognizer_loop:utterance",
                "data": {"utterances": ["x"]},
                "context": {},
            }
            await c.send(HiveMessage(T.SHARED_BUS, payload))
            await ask(c, "echo sync")
            assert [m for m, _ in hub.agent.observed] == [payload]
            assert hub.agent.observed[0][1] == c.peer
            assert all(m["data"].get("utterances") != ["x"] for m in hub.agent.injected)
            await c.close()

    run(scenario())


class _Recorder(BinaryHandler):
    def __init__(self) -> None:
        super().__init__()
        self.got: list[tuple[bytes, int, str]] = []

    def handle(self, message: HiveMessage, peer: str, reply: Any) -> None:
        self.got.append((message.payload, int(message.bin_type), peer))
        reply(
            HiveMessage(
                T.BUS, {"type": "bin.ack", "data": {"n": len(message.payload)}, "context": {}}
            )
        )


def test_binary_goes_to_the_binary_handler() -> None:
    async def scenario() -> None:
        async with running_hub() as hub:
            handler = _Recorder()
            hub.server.binary_handler = handler
            row = hub.db.add_client("sat", password="pw")
            c = await TestClient(hub.port, row.api_key, "pw").connect()
            msg = HiveMessage(
                T.BINARY, b"\x00\x01audio", bin_type=HiveMindBinaryPayloadType.RAW_AUDIO
            )
            await c.send(msg)
            ack = await c.next_bus(is_type("bin.ack"))
            assert ack["data"]["n"] == 7
            assert handler.got == [(b"\x00\x01audio", 1, c.peer)]
            await c.close()

    run(scenario())


def test_default_binary_handler_drops_and_counts() -> None:
    async def scenario() -> None:
        async with running_hub() as hub:
            row = hub.db.add_client("sat", password="pw")
            c = await TestClient(hub.port, row.api_key, "pw").connect()
            await c.send(HiveMessage(T.BINARY, b"abc", bin_type=HiveMindBinaryPayloadType.FILE))
            await ask(c)
            assert hub.server.binary_handler.counts == {"FILE": 1}
            await c.close()

    run(scenario())


def test_agent_exception_is_contained() -> None:
    class Broken(RecordingAgent):
        def inject(self, message: dict[str, Any]) -> None:
            if message["type"] == "boom":
                raise RuntimeError("agent bug")
            super().inject(message)

    async def scenario() -> None:
        async with running_hub(agent=Broken()) as hub:
            row = hub.db.add_client(
                "sat", password="pw", allowed_types=["boom", "recognizer_loop:utterance"]
            )
            c = await TestClient(hub.port, row.api_key, "pw").connect()
            await c.emit("boom")
            assert (await ask(c, "echo survived"))["data"]["utterance"] == "survived"
            assert hub.server.stats["errors"] == 1
            await c.close()

    run(scenario())


def test_parse_authorization() -> None:
    assert parse_authorization("/?authorization=dWE6a2V5") == ("ua", "key")
    assert parse_authorization("/?authorization=dWE6a2V5&x=1") == ("ua", "key")
    assert parse_authorization("/?authorization=dWE6") is None
    assert parse_authorization("/?other=1") is None
    assert parse_authorization("/?authorization=***") is None


def test_tls_with_a_generated_certificate(tmp_path: Any) -> None:
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    from hivemind_core.tls import server_ssl_context

    ctx = server_ssl_context(None, None, tmp_path)
    cert = x509.load_pem_x509_certificate((tmp_path / "hivemind.crt").read_bytes())
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.signature_hash_algorithm.name == "sha256"
    # The second start reuses the same files.
    server_ssl_context(None, None, tmp_path)
    assert x509.load_pem_x509_certificate((tmp_path / "hivemind.crt").read_bytes()) == cert

    async def scenario() -> None:
        async with running_hub() as hub:
            await hub.server.stop()
            hub.server.ssl_context = ctx
            await hub.server.start()
            row = hub.db.add_client("sat", password="pw")
            client_ctx = ssl.create_default_context(cafile=str(tmp_path / "hivemind.crt"))
            from websockets.asyncio.client import connect

            url = f"wss://localhost:{hub.port}{auth_path(row.api_key)}"
            async with connect(url, ssl=client_ctx) as ws:
                first = json.loads(await asyncio.wait_for(ws.recv(), 5))
                assert first["msg_type"] == "hello"

    run(scenario())
