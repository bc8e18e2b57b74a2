"""HubNode without sockets: the executor, the admission step to the agent, agent replies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ovos_bus_client.message import Message

from hivemind_bus_client.message import HiveMessage, HiveMessageType
from hivemind_bus_client.router import Deliver, Deny, Drop, Link, LinkKind, Permissions, Send
from hivemind_core.agents.base import Agent
from hivemind_core.config import HubConfig
from hivemind_core.node import HubNode
from hivemind_core.session import LinkSession

from .hubkit import HUB_KEY

T = HiveMessageType


class Recorder:
    """A sink that keeps what it was sent and how it was closed."""

    def __init__(self) -> None:
        self.sent: list[HiveMessage] = []
        self.closed: tuple[int, str] | None = None

    def send_message(self, message: HiveMessage) -> None:
        self.sent.append(message)

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


class Inbox(Agent):
    name = "inbox"

    def __init__(self) -> None:
        super().__init__(HubConfig(identity_trust=False))
        self.injected: list[dict[str, Any]] = []

    def inject(self, message: dict[str, Any]) -> None:
        self.injected.append(message)


@dataclass
class Client:
    client_id: int = 1
    name: str = "sat"
    is_admin: bool = False
    skill_blacklist: tuple[str, ...] = ()
    intent_blacklist: tuple[str, ...] = ()


def make_node() -> tuple[HubNode, Inbox]:
    agent = Inbox()
    now = [0.0]
    node = HubNode(
        HubConfig(identity_trust=False), None, agent, private_key=HUB_KEY, clock=lambda: now[0]
    )
    return node, agent


def satellite(
    node: HubNode, name: str, *, admin: bool = False, **perms: Any
) -> tuple[str, Recorder]:
    sink = Recorder()
    client = Client(name=name, is_admin=admin, **perms)
    session = LinkSession({"session_id": f"s-{name}"}, "kitchen", is_admin=admin)
    peer = node.add_satellite(sink, client, "ua", {}, session)
    return peer, sink


def bus(msg_type: str, **context: Any) -> HiveMessage:
    return HiveMessage(T.BUS, Message(msg_type, {"x": 1}, context))


def test_a_satellites_message_reaches_the_agent_with_its_own_session() -> None:
    node, agent = make_node()
    peer, _ = satellite(node, "a", skill_blacklist=("jokes.skill",))
    node.execute([Deliver(bus("hello", session={"session_id": "forged"}), peer)])
    (got,) = agent.injected
    ctx = got["context"]
    assert ctx["source"] == peer and ctx["peer"] == peer
    # Its own session, namespaced for its client (hivemind_core.session).
    assert ctx["session"]["session_id"] == node.sessions[peer].agent_id
    assert ctx["session"]["session_id"].endswith(":s-a")
    assert ctx["session"]["blacklisted_skills"] == ["jokes.skill"]


def test_a_non_admin_cannot_address_another_satellite_but_an_admin_can() -> None:
    node, agent = make_node()
    a, _ = satellite(node, "a")
    b, _ = satellite(node, "b")
    boss, _ = satellite(node, "boss", admin=True)
    node.execute([Deliver(bus("hello", destination=b), a)])
    node.execute([Deliver(bus("hello", destination=[b, a]), a)])
    node.execute([Deliver(bus("hello", destination=b), boss)])
    assert [m["context"]["destination"] for m in agent.injected] == ["skills", [a], b]
    assert node.stats["destination_rewritten"] == 2


def test_executor_counts_what_it_cannot_do_and_keeps_going() -> None:
    node, _ = make_node()
    peer, sink = satellite(node, "a")

    class Odd:
        pass

    class Plugged:
        pass

    seen: list[Any] = []
    node.action_handlers[Plugged] = seen.append

    def broken(message: HiveMessage, origin: str | None) -> None:
        raise RuntimeError("bug")

    node.local_handlers[T.PING] = broken
    msg = bus("hello")
    plugged = Plugged()
    node.execute(
        [
            Send("nobody", msg),
            Odd(),
            Deliver(HiveMessage(T.PING, {}), peer),
            Drop("why", "a"),
            plugged,
            Send(peer, msg),
        ]
    )
    assert node.stats["dropped_no_link"] == 1
    assert node.stats["unknown_actions"] == 1
    assert node.stats["errors"] == 1
    assert node.stats["dropped"] == 1
    assert seen == [plugged]
    assert sink.sent == [msg]


def test_deny_answers_then_closes_with_4003_when_asked() -> None:
    node, _ = make_node()
    peer, sink = satellite(node, "a")
    node.execute([Deny(peer, "broadcast", "broadcast_forbidden", "no", close=False)])
    assert sink.closed is None and len(sink.sent) == 1
    node.execute([Deny(peer, "broadcast", "broadcast_forbidden", "no", close=True)])
    assert sink.closed is not None and sink.closed[0] == 4003
    denial = sink.sent[-1].payload_dict()
    assert denial["type"] == "hive.policy.denied" and denial["context"]["destination"] == peer


def test_agent_replies_go_only_to_live_destinations() -> None:
    node, _ = make_node()
    a, sink_a = satellite(node, "a")
    _, sink_b = satellite(node, "b")
    node.agent_reply({"type": "speak", "data": {}, "context": {"destination": [a, "gone"]}})
    node.agent_reply({"type": "speak", "data": {}, "context": {"destination": "gone"}})
    node.agent_reply({"type": "speak", "data": {}, "context": {}})
    assert sink_b.sent == []
    (reply,) = sink_a.sent
    assert reply.payload_dict()["context"]["source"] == "hive"


def test_removing_a_satellite_forgets_its_session_and_name() -> None:
    node, _ = make_node()
    peer, sink = satellite(node, "a")
    node.remove_satellite(peer, sink, Client(name="a"))
    assert peer not in node.sinks and peer not in node.sessions and peer not in node.peers
    assert peer not in node.router.links
    # the same name is free again
    again, _ = satellite(node, "a")
    assert again == peer


def test_upstream_answers_are_not_injected_when_relayed_down() -> None:
    node, agent = make_node()

    class Up(Recorder):
        connected = True
        share_bus = True

        def __init__(self) -> None:
            super().__init__()
            self.relayed: list[dict[str, Any]] = []

        def relay_down(self, payload: dict[str, Any]) -> bool:
            self.relayed.append(payload)
            return payload["type"] == "speak"

    up = Up()
    node.upstream = up
    node.add_link(Link("master", LinkKind.UPSTREAM, Permissions()), up)
    node.execute([Deliver(bus("speak"), "master"), Deliver(bus("other"), "master")])
    assert [m["type"] for m in agent.injected] == ["other"]
    # a satellite's message is shown to the master (share_bus) before the agent sees it
    peer, _ = satellite(node, "a")
    node.execute([Deliver(bus("hello"), peer)])
    assert [m.msg_type for m in up.sent] == [T.SHARED_BUS]
