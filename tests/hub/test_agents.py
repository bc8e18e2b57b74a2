"""Agents: the embedded answers, the loader, and the OVOS agent against a fake message bus."""

from __future__ import annotations

import asyncio
import datetime
import json
from typing import Any

import pytest
from websockets.asyncio.server import serve

from hivemind_core.agents import AgentError, load_agent
from hivemind_core.agents.embedded import HELP, EmbeddedAgent, answer
from hivemind_core.agents.ovos import OVOSAgent
from hivemind_core.config import HubConfig
from support.net import free_port

NOON = datetime.datetime(2024, 3, 5, 12, 7)


@pytest.mark.parametrize(
    ("utterance", "expected"),
    [
        ("what time is it", "It is 12:07."),
        ("What's the date today?", "Today is Tuesday, March 5, 2024."),
        ("echo hello Büro", "hello Büro"),
        ("say   olá", "olá"),
        ("help", HELP),
        ("sing a song", "I heard: sing a song. Say help to hear what I can do."),
    ],
)
def test_embedded_answers(utterance: str, expected: str) -> None:
    assert answer(utterance, NOON) == expected


def test_embedded_reply_swaps_source_and_destination() -> None:
    agent = EmbeddedAgent()
    got: list[dict[str, Any]] = []
    asyncio.run(agent.start(got.append))
    agent.inject(
        {
            "type": "recognizer_loop:utterance",
            "data": {"utterances": ["echo hi"], "lang": "pt-PT"},
            "context": {
                "source": "ua::1::sat::s",
                "destination": "skills",
                "session": {"session_id": "s"},
            },
        }
    )
    agent.inject({"type": "something.else", "data": {}, "context": {}})
    assert len(got) == 1
    reply = got[0]
    assert reply["type"] == "speak"
    assert reply["data"]["utterance"] == "hi" and reply["data"]["lang"] == "pt-PT"
    assert reply["context"]["destination"] == "ua::1::sat::s"
    assert reply["context"]["source"] == "skills"
    assert reply["context"]["session"] == {"session_id": "s"}


def test_load_agent_by_name_and_unknown() -> None:
    assert isinstance(load_agent(HubConfig(agent="embedded")), EmbeddedAgent)
    assert isinstance(load_agent(HubConfig(agent="ovos")), OVOSAgent)
    with pytest.raises(AgentError, match="unknown agent"):
        load_agent(HubConfig(agent="no-such-agent"))


def test_ovos_agent_fails_clearly_without_a_bus() -> None:
    port = free_port()
    agent = OVOSAgent(HubConfig(ovos_host="127.0.0.1", ovos_port=port, ovos_connect_timeout=0.5))

    async def scenario() -> None:
        with pytest.raises(AgentError) as info:
            await agent.start(lambda m: None)
        assert f"127.0.0.1:{port}/core" in str(info.value)
        assert "ovos-messagebus" in str(info.value)

    asyncio.run(scenario())


class FakeBus:
    """A tiny message bus: every text message is sent to every client (like ovos-messagebus)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.clients: set[Any] = set()
        self.seen: list[dict[str, Any]] = []
        self.server: Any = None

    async def _handler(self, ws: Any) -> None:
        self.clients.add(ws)
        try:
            async for raw in ws:
                self.seen.append(json.loads(raw))
                for c in list(self.clients):
                    await c.send(raw)
        finally:
            self.clients.discard(ws)

    async def start(self) -> None:
        self.server = await serve(self._handler, "127.0.0.1", self.port)

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def emit(self, msg: dict[str, Any]) -> None:
        for c in list(self.clients):
            await c.send(json.dumps(msg))


async def bus_and_agent(**cfg: Any) -> tuple[FakeBus, OVOSAgent, list[dict[str, Any]]]:
    """A started fake bus and an OVOS agent on it; the list collects the agent's replies."""
    bus = FakeBus(free_port())
    await bus.start()
    agent = OVOSAgent(
        HubConfig(ovos_host="127.0.0.1", ovos_port=bus.port, ovos_connect_timeout=2, **cfg)
    )
    replies: list[dict[str, Any]] = []
    await agent.start(replies.append)
    return bus, agent, replies


def test_ovos_agent_relays_and_reconnects_after_a_bus_restart() -> None:
    async def scenario() -> None:
        bus, agent, replies = await bus_and_agent()
        agent.inject(
            {"type": "recognizer_loop:utterance", "data": {}, "context": {"source": "a::1::b::c"}}
        )
        for _ in range(50):
            if bus.seen:
                break
            await asyncio.sleep(0.02)
        assert bus.seen[0]["type"] == "recognizer_loop:utterance"
        await bus.emit({"type": "speak", "data": {}, "context": {"destination": "a::1::b::c"}})
        await bus.emit({"type": "unrelated", "data": {}, "context": {}})
        for _ in range(50):
            if any(r["type"] == "speak" for r in replies):
                break
            await asyncio.sleep(0.02)
        assert [r["type"] for r in replies if r["type"] == "speak"] == ["speak"]
        assert all(r["type"] != "unrelated" for r in replies)

        # Bus restarts: messages injected meanwhile are kept and delivered afterwards.
        await bus.stop()
        for _ in range(100):
            if not agent.connected.is_set():
                break
            await asyncio.sleep(0.02)
        agent.inject({"type": "while.down", "data": {}, "context": {}})
        bus2 = FakeBus(bus.port)
        await bus2.start()
        await asyncio.wait_for(agent.connected.wait(), 10)
        for _ in range(100):
            if bus2.seen:
                break
            await asyncio.sleep(0.02)
        assert [m["type"] for m in bus2.seen] == ["while.down"]
        assert agent.reconnects == 1
        await agent.stop()
        await bus2.stop()

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_ovos_agent_ignores_malformed_bus_messages() -> None:
    async def scenario() -> None:
        bus, agent, replies = await bus_and_agent()
        for _ in range(50):
            if bus.clients:
                break
            await asyncio.sleep(0.02)
        junk = [
            "not json ::",
            '["a::b"]',
            '{"type": "x", "context": "a::b"',
            b"\x00::\xff",
            # addressed to a QUERY this agent never asked, or with odd fields
            '{"type": "speak", "context": {"destination": "hive.query::nobody"}}',
            '{"type": 7, "data": [], "context": {"destination": "hive.query::", "source": 3}}',
        ]
        for raw in junk:
            for c in list(bus.clients):
                await c.send(raw)
        await bus.emit({"type": "speak", "data": {}, "context": {"destination": "a::1::b::c"}})
        for _ in range(100):
            if replies:
                break
            await asyncio.sleep(0.02)
        assert [r["type"] for r in replies] == ["speak"]  # the bad ones were skipped
        assert agent.connected.is_set() and agent.reconnects == 0
        await agent.stop()
        await bus.stop()

    asyncio.run(asyncio.wait_for(scenario(), 30))


# -- QUERY / CASCADE through the OVOS bus ------------------------------------------------


async def _asked(bus: FakeBus) -> dict[str, Any]:
    for _ in range(100):
        for m in bus.seen:
            if m["type"] == "recognizer_loop:utterance":
                return m
        await asyncio.sleep(0.02)
    raise AssertionError("the request never reached the bus")


def _utterance(text: str) -> dict[str, Any]:
    return {
        "type": "recognizer_loop:utterance",
        "data": {"utterances": [text]},
        "context": {"source": "a::1::b::c", "destination": "skills"},
    }


@pytest.mark.parametrize(
    ("bus_replies", "expected"),
    [
        # progress messages are skipped; the first speak answers
        (["mycroft.skill.handler.start", "speak", "speak"], "speak"),
        # the pipeline gave up before any speak: decline
        (["complete_intent_failure", "speak"], None),
        (["ovos.utterance.handled"], None),
    ],
)
def test_ovos_agent_answers_a_query_from_the_bus(bus_replies: list[str], expected: Any) -> None:
    async def scenario() -> None:
        bus, agent, replies = await bus_and_agent()
        answers: list[Any] = []
        agent.ask(_utterance("what time is it"), answers.append)
        request = await _asked(bus)
        address = request["context"]["source"]
        assert address.startswith("hive.query::")
        assert request["context"]["destination"] == "skills"
        for n, mtype in enumerate(bus_replies):
            await bus.emit(
                {
                    "type": mtype,
                    "data": {"n": n},
                    "context": {"source": "skills", "destination": address},
                }
            )
        for _ in range(100):
            if answers:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)  # later replies must not answer twice
        assert len(answers) == 1
        if expected is None:
            assert answers == [None]
        else:
            assert answers[0]["type"] == expected and answers[0]["data"] == {
                "n": bus_replies.index(expected)
            }
        assert replies == []  # nothing addressed to a query reaches the hub's reply path
        await agent.stop()
        await bus.stop()

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_ovos_agent_declines_a_query_nobody_answers_and_without_a_bus() -> None:
    async def scenario() -> None:
        bus, agent, _ = await bus_and_agent(query_timeout=0.2)
        answers: list[Any] = []
        agent.ask(_utterance("anyone?"), answers.append)
        await _asked(bus)
        await asyncio.sleep(0.5)
        assert answers == [None]
        # bus gone: decline at once instead of waiting out the timeout
        await bus.stop()
        for _ in range(100):
            if not agent.connected.is_set():
                break
            await asyncio.sleep(0.02)
        agent.ask(_utterance("still there?"), answers.append)
        assert answers == [None, None]
        await agent.stop()

    asyncio.run(asyncio.wait_for(scenario(), 30))
