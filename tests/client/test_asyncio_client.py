"""AsyncHiveMessageBusClient against the in-process fake hub."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from ovos_bus_client.message import Message

from hivemind_bus_client.asyncio_client import AsyncHiveMessageBusClient
from hivemind_bus_client.exceptions import AuthenticationFailed, UnauthorizedKeyError
from hivemind_bus_client.identity import NodeIdentity
from hivemind_bus_client.message import HiveMessageType

from .fakehub import Account, FakeHub

T = HiveMessageType


def utterance(text: str) -> Message:
    return Message("recognizer_loop:utterance", {"utterances": [text]})


def make(hub: FakeHub, identity: NodeIdentity, **kw: Any) -> AsyncHiveMessageBusClient:
    kw.setdefault("key", "sat-key")
    kw.setdefault("password", "hunter22")
    return AsyncHiveMessageBusClient(
        host=hub.host, port=hub.port, identity=identity, site_id="porch", connect_timeout=5, **kw
    )


def test_round_trip_and_async_handler_waits(hub: FakeHub, identity: NodeIdentity) -> None:
    async def scenario() -> tuple[str | None, list[str]]:
        async with make(hub, identity) as client:
            assert client.connected and client.peer.endswith(client.session_id)
            reply = await client.wait_for_response(utterance("a"), reply_type="speak")
            nested: list[str] = []
            done = asyncio.Event()

            async def on_speak(message: Message) -> None:
                if message.data["utterance"] == "echo: b":
                    again = await client.wait_for_response(utterance("c"), reply_type="speak")
                    nested.append(again.payload.data["utterance"] if again else "none")
                    done.set()

            client.on_mycroft("speak", on_speak)
            await client.emit(utterance("b"))
            await asyncio.wait_for(done.wait(), 5)
            return (reply.payload.data["utterance"] if reply else None), nested

    first, nested = asyncio.run(scenario())
    assert first == "echo: a"
    assert nested == ["echo: c"]
    assert hub.hellos[-1]["site_id"] == "porch"


def test_refusals(hub: FakeHub, identity: NodeIdentity) -> None:
    async def attempt(**kw: Any) -> None:
        client = make(hub, identity, **kw)
        try:
            await client.connect()
        finally:
            await client.close()

    with pytest.raises(UnauthorizedKeyError):
        asyncio.run(attempt(key="nope"))
    with pytest.raises(AuthenticationFailed):
        asyncio.run(attempt(password="nope"))


def test_query_cascade_ping_and_reconnect(hub: FakeHub, identity: NodeIdentity) -> None:
    async def scenario() -> dict[str, Any]:
        client = make(hub, identity)
        await client.connect()
        try:
            answer = await client.query(utterance("q"))
            result = await client.cascade(utterance("c"), timeout=2, expected=2)
            pongs = await client.ping(timeout=0.3)
            await asyncio.to_thread(hub.drop_all, 1011)
            started = time.monotonic()
            while client.stats["connects"] < 2 and time.monotonic() - started < 5:
                await asyncio.sleep(0.01)
            again = await client.wait_for_response(utterance("back"), reply_type="speak")
            return {
                "answer": answer,
                "result": result,
                "pongs": pongs,
                "again": again,
                "connects": client.stats["connects"],
            }
        finally:
            await client.close()

    out = asyncio.run(scenario())
    assert out["answer"].payload.payload.data["utterance"] == "answer 0: q"
    assert out["result"].complete and len(out["result"].responses) == 2
    assert [p.payload["peer"] for p in out["pongs"]] == ["fakehub"]
    assert out["connects"] == 2
    assert out["again"].payload.data["utterance"] == "echo: back"


def test_intercom_message_type_is_json_only(identity: NodeIdentity) -> None:
    """INTERCOM has no binary type code: it must travel as JSON even when binarized.

    The link is binarized (a BUS message arrives as a binary frame), yet the
    INTERCOM must arrive as a text frame.
    """
    from hivemind_bus_client import crypto

    async def scenario(hub: FakeHub) -> None:
        client = make(hub, identity)
        await client.connect()
        try:
            assert client.handshake_info is not None and client.handshake_info["binarize"]
            await client.emit(utterance("bus first"))
            await client.emit_intercom(
                utterance("x"), crypto.public_key_pem(crypto.create_private_key())
            )
            for _ in range(300):
                if hub.of_type(T.INTERCOM):
                    return
                await asyncio.sleep(0.01)
        finally:
            await client.close()

    with FakeHub([Account("sat-key", "hunter22")], binarize=True) as hub:
        asyncio.run(scenario(hub))
        kinds = dict(hub.frame_kinds)
    assert kinds[T.BUS] is True, hub.frame_kinds  # the link does carry binary frames
    assert kinds[T.INTERCOM] is False, hub.frame_kinds  # ... but never an INTERCOM
