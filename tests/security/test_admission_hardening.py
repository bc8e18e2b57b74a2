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
