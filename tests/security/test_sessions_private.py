"""Sessions are per client and private (docs/hub.md, "Sessions and peers").

An in-process hub over real loopback websockets. The agent records what it
gets, so the tests see the session ids that reach it; the satellites keep
everything they receive, so the tests look at the JSON of every message a
satellite got for the session ids and peer strings of the others.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ovos_bus_client.message import Message

from hivemind_bus_client.client.asyncio import AsyncHiveMessageBusClient
from hivemind_bus_client.identity import NodeIdentity
from hivemind_bus_client.message import HiveMessage, HiveMessageType
from hivemind_core.agents.embedded import EmbeddedAgent
from hub.hubkit import TestClient, running_hub

T = HiveMessageType


class SessionAgent(EmbeddedAgent):
    """The embedded agent (answers utterances, also when asked), recording what it gets."""

    def __init__(self) -> None:
        super().__init__()
        self.got: list[dict[str, Any]] = []

    def inject(self, message: dict[str, Any]) -> None:
        self.got.append(message)
        super().inject(message)

    def ask(self, message: dict[str, Any], answer: Callable[[Any], None]) -> None:
        self.got.append(message)
        super().ask(message, answer)

    def session_of(self, utterance: str) -> str:
        """The session id the agent saw with ``utterance``."""
        for m in self.got:
            if (m.get("data") or {}).get("utterances") == [utterance]:
                return str(m["context"]["session"]["session_id"])
        raise AssertionError(f"{utterance!r} never reached the agent")


def run(coro: Any, timeout: float = 60) -> None:
    asyncio.run(asyncio.wait_for(coro, timeout))


async def speak_to(client: TestClient, text: str) -> dict[str, Any]:
    """Say ``text`` and return the agent's ``speak`` answer as the satellite received it."""
    await client.utterance(text)
    return await client.next_bus(lambda p: p.get("type") == "speak", 5)


def utterance(text: str) -> HiveMessage:
    return HiveMessage(T.BUS, Message("recognizer_loop:utterance", {"utterances": [text]}, {}))


async def drain(client: TestClient, wait: float) -> list[HiveMessage]:
    """Everything ``client`` receives within ``wait`` seconds."""
    out: list[HiveMessage] = []
    deadline = time.monotonic() + wait
    while (left := deadline - time.monotonic()) > 0:
        try:
            out.append(await asyncio.wait_for(client.messages.get(), left))
        except asyncio.TimeoutError:
            break
    return out


def test_two_clients_with_one_session_id_reach_the_agent_as_two_sessions() -> None:
    """(a) and (c): the agent tells same-named sessions of two clients apart, and a
    non-admin's ``default`` is not the hub's own; each satellite's answers carry
    its own session id as it chose it."""

    async def scenario() -> None:
        agent = SessionAgent()
        async with running_hub(agent) as hub:
            hub.db.add_client("x", api_key="k-x", password="pw-x")
            hub.db.add_client("y", api_key="k-y", password="pw-y")
            hub.db.add_client("z", api_key="k-z", password="pw-z")
            hub.db.add_client("boss", api_key="k-boss", password="pw-boss", is_admin=True)
            x = await TestClient(hub.port, "k-x", "pw-x", session_id="kitchen-s").connect()
            y = await TestClient(hub.port, "k-y", "pw-y", session_id="kitchen-s").connect()
            z = await TestClient(hub.port, "k-z", "pw-z", session_id="default").connect()
            boss = await TestClient(hub.port, "k-boss", "pw-boss", session_id="default").connect()
            try:
                answers = {
                    name: await speak_to(c, f"echo from {name}")
                    for name, c in (("x", x), ("y", y), ("z", z), ("boss", boss))
                }
                sx, sy = agent.session_of("echo from x"), agent.session_of("echo from y")
                assert sx != sy, f"x and y share the agent session {sx!r}"
                assert sx.endswith(":kitchen-s") and sy.endswith(":kitchen-s"), (sx, sy)
                sz = agent.session_of("echo from z")
                assert sz != "default" and sz.endswith(":default"), sz
                # Decision (docs/hub.md): an admin's "default" is the hub's own session.
                assert agent.session_of("echo from boss") == "default"
                # (c) every satellite gets its own id back, as it chose it.
                for name, want in (("x", "kitchen-s"), ("y", "kitchen-s"), ("z", "default")):
                    got = answers[name]["context"]["session"]["session_id"]
                    assert got == want, f"{name} got its answer with session {got!r}"
                    assert answers[name]["data"]["utterance"] == f"from {name}"
                # The same for an answer to a QUERY the hub's agent answers.
                await y.send(HiveMessage(T.QUERY, utterance("echo queried")))
                q = await asyncio.wait_for(y.messages.get(), 5)
                assert q.msg_type is T.QUERY and q.metadata.get("is_response"), q.as_dict
                inner = q.payload.payload
                assert inner.data["utterance"] == "queried"
                assert inner.context["session"]["session_id"] == "kitchen-s"
                assert agent.session_of("echo queried") == sy
            finally:
                for c in (x, y, z, boss):
                    await c.close()

    run(scenario())


def test_a_satellite_sees_no_other_satellite_s_session_id_in_floods_and_pongs() -> None:
    """(b): PROPAGATE and PING floods of others, and their PONGs, name no session."""

    async def scenario() -> None:
        async with running_hub(SessionAgent()) as hub:
            hub.db.add_client("obs", api_key="k-obs", password="pw-obs")
            obs = await TestClient(hub.port, "k-obs", "pw-obs", session_id="obs-own-sess").connect()
            with tempfile.TemporaryDirectory() as tmp:
                sats = []
                for name in ("bravo", "charlie"):
                    row = hub.db.add_client(name, password=f"{name}-pw")
                    sats.append(
                        AsyncHiveMessageBusClient(
                            key=row.api_key,
                            password=f"{name}-pw",
                            host="127.0.0.1",
                            port=hub.port,
                            identity=NodeIdentity(Path(tmp) / name / "identity.json"),
                            site_id=f"{name}-site",
                            session_id=f"{name}-secret-sess",
                            connect_timeout=10,
                            reconnect=False,
                        )
                    )
                try:
                    await asyncio.gather(*(s.connect() for s in sats))
                    bravo, charlie = sats
                    for _ in range(250):  # the hub's second HELLO names the session
                        if all(str(s.peer).endswith("-secret-sess") for s in sats):
                            break
                        await asyncio.sleep(0.02)
                    assert all(str(s.peer).endswith("-secret-sess") for s in sats)
                    secrets = ["bravo-secret-sess", "charlie-secret-sess"]
                    secrets += [str(bravo.peer), str(charlie.peer)]
                    # bravo floods a PROPAGATE(BUS) and a PING; obs floods a PING too.
                    await bravo.emit(
                        HiveMessage(T.PROPAGATE, HiveMessage(T.BUS, Message("demo.flood", {})))
                    )
                    bravo_pongs = asyncio.ensure_future(bravo.ping(timeout=1.5))
                    await obs.send(
                        HiveMessage(
                            T.PROPAGATE,
                            HiveMessage(T.PING, {"peer": "obs", "timestamp": time.time()}),
                            metadata={"flood_id": "obs-flood"},
                        )
                    )
                    got = await drain(obs, 1.5)
                    await bravo_pongs
                    kinds = [(m.msg_type, getattr(m.payload, "msg_type", None)) for m in got]
                    assert (T.PROPAGATE, T.BUS) in kinds, kinds
                    assert (T.PROPAGATE, T.PING) in kinds, kinds
                    pongs = [m for m in got if m.msg_type is T.PONG]
                    assert len(pongs) >= 3, [p.payload for p in pongs]  # hub, bravo, charlie
                    for m in got:
                        text = json.dumps(m.as_dict)
                        leaked = [s for s in secrets if s in text]
                        assert not leaked, f"obs received {leaked} in {text}"
                    # The others still answer under a name: their public one.
                    links = hub.server.node.router.links
                    public = {links[str(s.peer)].public for s in sats}
                    assert {p.payload["peer"] for p in pongs} >= public, [p.payload for p in pongs]
                    assert obs.peer and obs.peer.endswith("::obs-own-sess")  # its own, exact
                finally:
                    for s in sats:
                        await s.close()
                    await obs.close()

    run(scenario())


def test_an_agent_message_for_two_satellites_shows_each_only_its_own_session() -> None:
    """(b), (c): one agent message addressed to two satellites (as an admin may ask)."""

    async def scenario() -> None:
        async with running_hub(SessionAgent()) as hub:
            hub.db.add_client("a", api_key="k-a", password="pw-a")
            hub.db.add_client("b", api_key="k-b", password="pw-b")
            a = await TestClient(hub.port, "k-a", "pw-a", session_id="a-secret-sess").connect()
            b = await TestClient(hub.port, "k-b", "pw-b", session_id="b-secret-sess").connect()
            try:
                assert a.peer and b.peer
                node = hub.server.node
                mine = node.sessions[a.peer]
                context = {
                    "destination": [a.peer, b.peer],
                    "peer": a.peer,
                    # What the agent knows a's session as.
                    "session": {"session_id": getattr(mine, "agent_id", mine.session_id)},
                }
                node.agent_reply({"type": "speak", "data": {"utterance": "hi"}, "context": context})
                got_a = await a.next_bus(lambda p: p.get("type") == "speak", 5)
                got_b = await b.next_bus(lambda p: p.get("type") == "speak", 5)
                assert got_a["context"]["session"]["session_id"] == "a-secret-sess"
                assert a.peer in got_a["context"]["destination"]
                text = json.dumps(got_b)
                assert "a-secret-sess" not in text and a.peer not in text, text
                assert b.peer in got_b["context"]["destination"]
            finally:
                await a.close()
                await b.close()

    run(scenario())
