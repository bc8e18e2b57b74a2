"""The upstream link's pieces that need no socket: own-listener check, return tokens.

The socket scenarios (a master and a relay over loopback, a silent master)
are in ``tests/system/test_upstream.py``.
"""

from __future__ import annotations

from typing import Any

import pytest
from ovos_bus_client.message import Message

from hivemind_bus_client.message import HiveMessage, HiveMessageType
from hivemind_bus_client.router import Link, LinkKind, Permissions
from hivemind_core.agents.embedded import EmbeddedAgent
from hivemind_core.config import HubConfig
from hivemind_core.node import HubNode
from hivemind_core.returns import RETURN_KEY, ReturnTokens
from hivemind_core.session import LinkSession
from hivemind_core.upstream import is_own_listener

T = HiveMessageType


@pytest.mark.parametrize(
    ("up_host", "listen_host", "expected"),
    [
        ("127.0.0.1", "127.0.0.1", True),
        ("localhost", "0.0.0.0", True),
        ("127.0.0.2", "0.0.0.0", True),
        ("::1", "::", True),
        ("0.0.0.0", "127.0.0.1", True),
        ("192.0.2.7", "127.0.0.1", False),
        ("192.0.2.7", "192.0.2.7", True),
        ("hub.example", "0.0.0.0", False),
    ],
)
def test_is_own_listener(up_host: str, listen_host: str, expected: bool) -> None:
    assert is_own_listener(up_host, 5678, listen_host, [5678]) is expected
    assert is_own_listener(up_host, 5679, listen_host, [5678]) is False


class Recorder:
    """A sink that keeps what the node writes to it."""

    def __init__(self) -> None:
        self.sent: list[HiveMessage] = []

    def send_message(self, message: HiveMessage) -> None:
        self.sent.append(message)

    def close(self, code: int, reason: str) -> None:
        pass


def _relay() -> tuple[HubNode, Recorder]:
    cfg = HubConfig(identity_trust=False)
    node = HubNode(cfg, None, EmbeddedAgent(cfg), node_id="relay")
    sat = Recorder()
    node.add_link(Link("sat", LinkKind.SATELLITE, Permissions()), sat)
    node.sessions["sat"] = LinkSession({"session_id": "s-sat"}, "kitchen")
    return node, sat


def _escalate(context: dict[str, Any]) -> HiveMessage:
    inner = HiveMessage(T.BUS, Message("recognizer_loop:utterance", {}, context))
    msg = HiveMessage(T.ESCALATE, inner)
    msg.source_peer = "sat"
    return msg


def test_return_token_marks_escalations_and_relays_the_answer_down() -> None:
    node, sat = _relay()
    returns = ReturnTokens(node)
    msg = _escalate({})
    returns.mark(msg)
    context = msg.payload.payload.context
    token = context[RETURN_KEY]["relay"]
    assert isinstance(token, str) and "sat" not in token
    answer = {"type": "speak", "data": {"utterance": "hi"}, "context": dict(context)}
    assert returns.relay_down(answer) is True
    (down,) = sat.sent
    ctx = down.payload_dict()["context"]
    assert (ctx["destination"], ctx["peer"]) == ("sat", "sat")
    assert ctx["session"]["session_id"] == "s-sat"
    assert RETURN_KEY not in ctx
    assert node.stats["upstream_answers_relayed"] == 1


def test_answers_without_our_token_are_not_relayed() -> None:
    node, sat = _relay()
    returns = ReturnTokens(node)
    assert returns.relay_down({"type": "speak", "context": {}}) is False
    assert returns.relay_down({"type": "speak", "context": {RETURN_KEY: {"other": "t"}}}) is False
    # our mark, but for a satellite that has gone: handled (dropped), never injected
    assert returns.relay_down({"type": "speak", "context": {RETURN_KEY: {"relay": "x"}}}) is True
    assert sat.sent == [] and node.stats["upstream_answer_unroutable"] == 1


def test_old_tokens_are_forgotten_first() -> None:
    node, _ = _relay()
    returns = ReturnTokens(node, max_tokens=2)
    for peer in ("a", "b", "c"):
        node.add_link(Link(peer, LinkKind.SATELLITE, Permissions()), Recorder())
    marks = []
    for peer in ("a", "b", "c"):
        msg = _escalate({})
        msg.source_peer = peer
        returns.mark(msg)
        marks.append(msg.payload.payload.context[RETURN_KEY]["relay"])
    first = {"type": "speak", "context": {RETURN_KEY: {"relay": marks[0]}}}
    assert returns.relay_down(first) is True
    assert node.stats.get("upstream_answer_unroutable") == 1
