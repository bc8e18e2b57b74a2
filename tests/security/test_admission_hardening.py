"""Admission hardening: what a satellite can put into the agent, however it wraps it.

An in-process hub (``hub.hubkit``) over real loopback websockets, with an agent
that records every message injected or asked, so the test sees exactly what
reached it. The figure each test checks is in its name and its messages.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ovos_bus_client.message import Message

from hivemind_bus_client.message import HiveMessage, HiveMessageType
from hivemind_core.agents.embedded import EmbeddedAgent
from hivemind_core.config import HubConfig
from hub.hubkit import RecordingAgent, TestClient, running_hub

T = HiveMessageType


class AskRecordingAgent(RecordingAgent):
    """Also records every local ask (QUERY/CASCADE), and declines it."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[dict[str, Any]] = []

    def ask(self, message: dict[str, Any], answer: Callable[[Any], None]) -> None:
        self.asked.append(message)
        answer(None)

    def seen(self, mtype: str) -> list[dict[str, Any]]:
        return [m for m in self.injected + self.asked if m.get("type") == mtype]


def run(coro: Any, timeout: float = 60) -> None:
    asyncio.run(asyncio.wait_for(coro, timeout))


def bus(mtype: str) -> HiveMessage:
    return HiveMessage(T.BUS, Message(mtype, {}, {"destination": "elsewhere"}))


WRAPPERS = (T.ESCALATE, T.QUERY, T.CASCADE)


def test_forbidden_type_in_escalate_query_cascade_reaches_the_agent_0_times() -> None:
    async def scenario() -> None:
        agent = AskRecordingAgent()
        async with running_hub(agent) as hub:
            c = hub.db.add_client("sat", api_key="k-admit", password="pw-admit")
            assert "mycroft.stop" not in c.allowed_types  # the default role
            sat = await TestClient(hub.port, "k-admit", "pw-admit").connect()
            try:
                for wrapper in WRAPPERS:
                    await sat.send(HiveMessage(wrapper, bus("mycroft.stop")))
                    await sat.send(HiveMessage(wrapper, bus("recognizer_loop:record_begin")))
                for _ in range(250):
                    if len(agent.seen("recognizer_loop:record_begin")) >= len(WRAPPERS):
                        break
                    await asyncio.sleep(0.02)
                allowed = agent.seen("recognizer_loop:record_begin")
                forbidden = agent.seen("mycroft.stop")
                assert len(allowed) == len(WRAPPERS), (
                    f"an allowed type reached the agent {len(allowed)} of {len(WRAPPERS)} times"
                )
                assert not forbidden, (
                    f"mycroft.stop reached the agent {len(forbidden)} time(s), expected 0"
                )
                sessions = {m["context"].get("session", {}).get("session_id") for m in allowed}
                assert "default" not in sessions, "a wrapped message ran in the hub's own session"
                stats = hub.server.node.stats
                assert stats.get("admission_denied", 0) == len(WRAPPERS), stats
            finally:
                await sat.close()

    run(scenario())


# -- item 3: responders are authenticated ------------------------------------------------


def response(mtype: HiveMessageType, qid: str, responder: str) -> HiveMessage:
    inner = HiveMessage(T.BUS, Message("speak", {"utterance": "forged"}, {}))
    md = {"query_id": qid, "responder_peer": responder, "is_response": True}
    return HiveMessage(mtype, inner, metadata=md)


async def next_of(client: TestClient, mtype: HiveMessageType, wait: float) -> HiveMessage | None:
    end = asyncio.get_running_loop().time() + wait
    while (left := end - asyncio.get_running_loop().time()) > 0:
        try:
            msg = await asyncio.wait_for(client.messages.get(), left)
        except TimeoutError:
            return None
        if msg.msg_type is mtype:
            return msg
    return None


def test_cascade_answers_claiming_to_be_the_hub_reach_the_requester_0_times() -> None:
    async def scenario() -> None:
        async with running_hub(EmbeddedAgent()) as hub:
            hub.db.add_client("a", api_key="k-a", password="pw-a")
            hub.db.add_client("b", api_key="k-b", password="pw-b")
            a = await TestClient(hub.port, "k-a", "pw-a", session_id="sa").connect()
            b = await TestClient(hub.port, "k-b", "pw-b", session_id="sb").connect()
            hub_id = hub.server.node.node_id
            try:
                # The hub's agent declines record_begin: any answer naming the hub is forged.
                req = HiveMessage(T.CASCADE, bus("recognizer_loop:record_begin"))
                req.metadata["query_id"] = "c-forge"
                await a.send(req)
                got = await next_of(b, T.CASCADE, 5)
                assert got is not None, "b never saw the CASCADE"
                await b.send(response(T.CASCADE, "c-forge", hub_id))  # b claims to be the hub
                await a.send(response(T.CASCADE, "c-forge", hub_id))  # a was never asked
                answers = []
                while (msg := await next_of(a, T.CASCADE, 1.0)) is not None:
                    answers.append(msg.metadata.get("responder_peer"))
                forged = [r for r in answers if r == hub_id]
                assert not forged, f"{len(forged)} answer(s) named the hub as responder, expected 0"
                # b as a is told it is (its public name: no session id in it).
                b_public = hub.server.node.router.links[b.peer].public
                assert answers == [b_public], f"answers seen by the requester: {answers}"
                counters = hub.server.node.router.counters
                assert counters.get("unsolicited_answer") == 1, counters
            finally:
                await a.close()
                await b.close()

    run(scenario())


# -- item 4: per-link quota of pending bindings ------------------------------------------


def test_1100_cascades_from_one_satellite_leave_another_s_query_answered() -> None:
    async def scenario() -> None:
        async with running_hub(EmbeddedAgent()) as hub:
            hub.db.add_client("a", api_key="k-a", password="pw-a")
            hub.db.add_client("b", api_key="k-b", password="pw-b")
            a = await TestClient(hub.port, "k-a", "pw-a", session_id="sa").connect()
            b = await TestClient(hub.port, "k-b", "pw-b", session_id="sb").connect()
            try:
                for i in range(1100):
                    req = HiveMessage(T.CASCADE, bus("recognizer_loop:record_begin"))
                    req.metadata["query_id"] = f"flood-{i}"
                    a.conn.send(req)
                await a._flush()
                router = hub.server.node.router
                for _ in range(500):
                    if router.counters.get("pending_quota", 0) + len(router.requests) >= 1100:
                        break
                    await asyncio.sleep(0.02)
                q = HiveMessage(
                    T.QUERY,
                    HiveMessage(
                        T.BUS, Message("recognizer_loop:utterance", {"utterances": ["echo hi"]})
                    ),
                )
                await b.send(q)
                answer = await next_of(b, T.QUERY, 5)
                pending = len(router.requests)
                assert answer is not None, (
                    f"b's QUERY was not answered with {pending} bindings pending (of 1,024)"
                )
                assert answer.payload.payload.data.get("utterance") == "hi"
                assert router.counters.get("pending_quota", 0) >= 1100 - 64, router.counters
            finally:
                await a.close()
                await b.close()

    run(scenario())


# -- item 2: sessions are per client -----------------------------------------------------


def test_hello_with_another_client_s_session_id_shares_it_0_times() -> None:
    async def scenario() -> None:
        agent = AskRecordingAgent()
        async with running_hub(agent) as hub:
            hub.db.add_client("a", api_key="k-a", password="pw-a")
            hub.db.add_client("b", api_key="k-b", password="pw-b")
            a = await TestClient(hub.port, "k-a", "pw-a", session_id="victim-s").connect()
            b = await TestClient(hub.port, "k-b", "pw-b", session_id="victim-s").connect()
            try:
                await a.utterance("echo from a")
                await b.utterance("echo from b")
                await a.next_bus(lambda p: p.get("type") == "speak")
                await b.next_bus(lambda p: p.get("type") == "speak")
                sids = {
                    m["data"]["utterances"][0]: m["context"]["session"]["session_id"]
                    for m in agent.seen("recognizer_loop:utterance")
                }
                # Each client's sessions are namespaced (tests/security/test_sessions_private.py).
                assert sids["echo from a"].endswith(":victim-s")
                assert sids["echo from b"] != sids["echo from a"], (
                    "b shared a's session: 1 time(s), expected 0"
                )
            finally:
                await a.close()
                await b.close()

    run(scenario())


# -- item 5: per-satellite rate limits ---------------------------------------------------


def test_500_messages_at_once_put_at_most_burst_plus_rate_into_the_agent() -> None:
    async def scenario() -> None:
        agent = AskRecordingAgent()
        async with running_hub(agent) as hub:
            defaults = HubConfig()
            burst, rate = defaults.agent_burst, defaults.agent_rate
            hub.db.add_client("a", api_key="k-a", password="pw-a")
            a = await TestClient(hub.port, "k-a", "pw-a", session_id="sa").connect()
            try:
                start = asyncio.get_running_loop().time()
                for _ in range(500):
                    a.conn.send(bus("recognizer_loop:record_begin"))
                await a._flush()
                stats = hub.server.node.stats
                for _ in range(500):
                    if len(agent.injected) + stats.get("rate_limited", 0) >= 500:
                        break
                    await asyncio.sleep(0.02)
                elapsed = asyncio.get_running_loop().time() - start
                ceiling = burst + rate * elapsed + 1
                assert len(agent.injected) <= ceiling, (
                    f"{len(agent.injected)} of 500 reached the agent, expected <= {ceiling:.0f}"
                )
                assert stats.get("rate_limited", 0) >= 500 - ceiling, stats
                denied = await a.next_bus(lambda p: p.get("type") == "hive.policy.denied")
                assert denied["data"]["code"] == "rate_limited"
            finally:
                await a.close()

    run(scenario())


def test_100_propagates_from_a_non_admin_reach_another_satellite_at_most_burst_times() -> None:
    async def scenario() -> None:
        async with running_hub(AskRecordingAgent()) as hub:
            hub.db.add_client("a", api_key="k-a", password="pw-a")
            hub.db.add_client("b", api_key="k-b", password="pw-b")
            a = await TestClient(hub.port, "k-a", "pw-a", session_id="sa").connect()
            b = await TestClient(hub.port, "k-b", "pw-b", session_id="sb").connect()
            try:
                start = asyncio.get_running_loop().time()
                for _ in range(100):
                    a.conn.send(HiveMessage(T.PROPAGATE, bus("speak")))
                await a._flush()
                got = 0
                while await next_of(b, T.PROPAGATE, 1.0) is not None:
                    got += 1
                elapsed = asyncio.get_running_loop().time() - start
                defaults = HubConfig()
                ceiling = defaults.propagate_burst + defaults.propagate_rate * elapsed + 1
                assert got <= ceiling, (
                    f"{got} of 100 PROPAGATEs reached b, expected <= {ceiling:.0f}"
                )
                assert got >= 1, "an honest PROPAGATE must still pass"
                assert hub.server.node.stats.get("rate_limited", 0) >= 100 - ceiling
            finally:
                await a.close()
                await b.close()

    run(scenario())
