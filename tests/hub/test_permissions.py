"""Permission matrix at the hub level, over real websockets: every flag and list of a client row."""

from __future__ import annotations

import asyncio
from typing import Any

from hivemind_bus_client.message import HiveMessage, HiveMessageType

from .hubkit import TestClient, is_type, running_hub

T = HiveMessageType
SPEAK = is_type("speak")
DENIED = is_type("hive.policy.denied")
UTT = "recognizer_loop:utterance"


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


def bus(mtype: str, **data: Any) -> HiveMessage:
    return HiveMessage(T.BUS, {"type": mtype, "data": data, "context": {}})


async def ask(client: TestClient, text: str) -> dict[str, Any]:
    await client.utterance(text)
    return await client.next_bus(SPEAK)


def test_allowed_types_denies_with_policy_message_and_keeps_the_link() -> None:
    async def scenario() -> None:
        async with running_hub() as hub:
            row = hub.db.add_client("sat", password="pw", allowed_types=[UTT])
            c = await TestClient(hub.port, row.api_key, "pw").connect()
            for _ in range(5):  # a plain BUS type refusal is not a kickable violation
                await c.emit("mycroft.stop")
                denied = await c.next_bus(DENIED)
            assert denied["data"]["denied_type"] == "mycroft.stop"
            assert denied["data"]["code"] == "acl_disallowed_type"
            assert denied["data"]["reason"]
            assert denied["context"]["destination"] == c.peer
            assert all(m["type"] != "mycroft.stop" for m in hub.agent.injected)
            assert (await ask(c, "echo ok"))["data"]["utterance"] == "ok"
            assert hub.server.stats["denied"] == 5
            await c.close()

    run(scenario())


def test_message_blacklist_filters_outbound() -> None:
    async def scenario() -> None:
        async with running_hub() as hub:
            row = hub.db.add_client("sat", password="pw", message_blacklist=["speak"])
            c = await TestClient(hub.port, row.api_key, "pw").connect()
            await c.utterance("echo hidden")
            assert await c.no_bus(SPEAK, 0.4)
            assert hub.agent.injected  # the utterance itself went in
            hub.server.agent_reply(
                {"type": "other.reply", "data": {}, "context": {"destination": c.peer}}
            )
            assert (await c.next_bus(is_type("other.reply")))["type"] == "other.reply"
            await c.close()

    run(scenario())


def test_skill_and_intent_blacklists_go_into_the_session_without_leaking() -> None:
    """Regression: the reference appended blacklists to a shared list."""

    async def scenario() -> None:
        async with running_hub() as hub:
            a_row = hub.db.add_client(
                "a", password="pw", skill_blacklist=["skill.a"], intent_blacklist=["skill.a:Intent"]
            )
            b_row = hub.db.add_client("b", password="pw")
            a = await TestClient(
                hub.port,
                a_row.api_key,
                "pw",
                hello={"session": {"session_id": "sa", "blacklisted_skills": ["own.skill"]}},
            ).connect()
            b = await TestClient(hub.port, b_row.api_key, "pw", session_id="sb").connect()
            for _ in range(3):
                await ask(a, "echo a")
            await ask(b, "echo b")
            a_msgs = [m for m in hub.agent.injected if m["context"]["source"] == a.peer]
            b_msgs = [m for m in hub.agent.injected if m["context"]["source"] == b.peer]
            assert len(a_msgs) == 3 and len(b_msgs) == 1
            for m in a_msgs:
                assert m["context"]["session"]["blacklisted_skills"] == ["own.skill", "skill.a"]
                assert m["context"]["session"]["blacklisted_intents"] == ["skill.a:Intent"]
            session_b = b_msgs[0]["context"]["session"]
            assert "skill.a" not in session_b.get("blacklisted_skills", [])
            assert "skill.a:Intent" not in session_b.get("blacklisted_intents", [])
            # Each injected message has its own session object.
            assert a_msgs[0]["context"]["session"] is not a_msgs[1]["context"]["session"]
            await a.close()
            await b.close()

    run(scenario())


def test_broadcast_needs_admin_and_can_broadcast() -> None:
    async def scenario() -> None:
        async with running_hub() as hub:
            admin = hub.db.add_client("admin", password="pw", is_admin=True)
            muted = hub.db.add_client("muted", password="pw", is_admin=True, can_broadcast=False)
            plain = hub.db.add_client("plain", password="pw")
            listener_row = hub.db.add_client("listener", password="pw")
            listener = await TestClient(
                hub.port, listener_row.api_key, "pw", session_id="l"
            ).connect()
            for row, allowed in ((plain, False), (muted, False), (admin, True)):
                c = await TestClient(hub.port, row.api_key, "pw", session_id=row.name).connect()
                await c.send(HiveMessage(T.BROADCAST, bus("hello.all", who=row.name)))
                if allowed:
                    got = await asyncio.wait_for(listener.messages.get(), 5)
                    assert got.msg_type is T.BROADCAST
                    assert got.payload.payload_dict()["data"] == {"who": "admin"}
                else:
                    denied = await c.next_bus(DENIED)
                    assert denied["data"]["denied_type"] == "broadcast"
                    # A barrier: the listener's own question and its answer. A
                    # BROADCAST misrouted to it was written to its socket before
                    # that answer, so it would be the first thing it receives.
                    await listener.utterance(f"echo after {row.name}")
                    first = await asyncio.wait_for(listener.messages.get(), 5)
                    assert first.msg_type is T.BUS
                    answer = first.payload_dict()
                    assert answer["type"] == "speak"
                    assert answer["data"]["utterance"] == f"after {row.name}"
                await c.close()
            await listener.close()

    run(scenario())


def test_can_escalate_and_can_propagate() -> None:
    async def scenario() -> None:
        async with running_hub() as hub:
            row = hub.db.add_client("sat", password="pw", can_escalate=False, can_propagate=False)
            c = await TestClient(hub.port, row.api_key, "pw").connect()
            inner = bus(UTT, utterances=["echo up"])
            await c.send(HiveMessage(T.ESCALATE, inner))
            assert (await c.next_bus(DENIED))["data"]["denied_type"] == "escalate"
            await c.send(HiveMessage(T.PROPAGATE, bus(UTT, utterances=["echo around"])))
            assert (await c.next_bus(DENIED))["data"]["denied_type"] == "propagate"
            assert not any(m["data"].get("utterances") == ["echo up"] for m in hub.agent.injected)
            await c.close()

    run(scenario())


def test_repeated_origination_violations_close_with_4003() -> None:
    async def scenario() -> None:
        async with running_hub(max_violations=3) as hub:
            row = hub.db.add_client("sat", password="pw", can_escalate=False)
            c = await TestClient(hub.port, row.api_key, "pw").connect()
            for _ in range(3):
                await c.send(HiveMessage(T.ESCALATE, bus(UTT, utterances=["x"])))
            assert await c.wait_closed(5) == 4003
            assert hub.server.stats["kicked"] == 1

    run(scenario())


def test_permission_changes_apply_without_reconnect() -> None:
    async def scenario() -> None:
        async with running_hub(permission_poll=0.05) as hub:
            row = hub.db.add_client("sat", password="pw", allowed_types=[UTT])
            c = await TestClient(hub.port, row.api_key, "pw").connect()
            await c.emit("custom.event")
            await c.next_bus(DENIED)
            record = hub.db.get_client(row.client_id)
            record.allowed_types = [UTT, "custom.event"]
            record.skill_blacklist = ["late.skill"]
            hub.db.update_client(record)
            await asyncio.sleep(0.4)
            await c.emit("custom.event")
            await ask(c, "echo sync")
            assert any(m["type"] == "custom.event" for m in hub.agent.injected)
            last = hub.agent.injected[-1]
            assert last["context"]["session"]["blacklisted_skills"] == ["late.skill"]
            assert not c.closed.is_set()
            await c.close()

    run(scenario())


def test_deleting_a_connected_client_closes_its_link() -> None:
    async def scenario() -> None:
        async with running_hub(permission_poll=0.05) as hub:
            row = hub.db.add_client("sat", password="pw")
            c = await TestClient(hub.port, row.api_key, "pw").connect()
            hub.db.delete_client(row.client_id)
            assert await c.wait_closed(5) == 1008
            assert "revoked" in (c.close_reason or "")

    run(scenario())


def test_is_admin_may_keep_the_default_session() -> None:
    async def scenario() -> None:
        async with running_hub() as hub:
            row = hub.db.add_client("admin", password="pw", is_admin=True)
            c = await TestClient(hub.port, row.api_key, "pw", session_id="default").connect()
            assert c.peer.endswith("::default")
            await ask(c, "echo hi")
            assert hub.agent.injected[0]["context"]["session"]["session_id"] == "default"
            await c.close()

    run(scenario())
