"""protocol/handshake.py and protocol/states.py: the key exchange steps on their own,
and the state table that is the only way a Connection changes state."""

from __future__ import annotations

import ast
import inspect
from dataclasses import dataclass, field

import pytest

from hivemind_bus_client.exceptions import AuthenticationFailed, NegotiationFailed, ProtocolError
from hivemind_bus_client.protocol import connection, crypto
from hivemind_bus_client.protocol.handshake import (
    HandshakeMode,
    choose,
    client_finish,
    client_reply,
    hub_answer,
    hub_offer,
)
from hivemind_bus_client.protocol.states import ACCEPTS, TRANSITIONS, Inbound, Role, State, Trigger

HUB_KEY = crypto.create_private_key()
CLIENT_KEY = crypto.create_private_key()


@dataclass
class End:
    """One end's settings, as a Connection holds them."""

    password: str | None = None
    crypto_key: str | bytes | None = None
    private_key: crypto.PrivateKey | None = None
    peer_public_key: crypto.PublicKey | None = None
    encodings: list[str] = field(default_factory=lambda: ["JSON-B64", "JSON-HEX"])
    ciphers: list[str] = field(default_factory=lambda: ["AES-GCM"])
    want_binarize: bool = False
    prefer_own_order: bool = True


def test_handshake_mode_compares_and_prints_as_its_string() -> None:
    assert HandshakeMode.PASSWORD == "password" and f"{HandshakeMode.RSA}" == "rsa"
    assert str(HandshakeMode.PRESHARED) == "preshared"


def test_choose_follows_the_hub_order_or_the_client_order() -> None:
    assert (
        choose(["JSON-HEX", "JSON-B64"], ["JSON-B64", "JSON-HEX"], "encoding", True) == "JSON-B64"
    )
    assert (
        choose(["JSON-HEX", "JSON-B64"], ["JSON-B64", "JSON-HEX"], "encoding", False) == "JSON-HEX"
    )
    with pytest.raises(NegotiationFailed, match="no common"):
        choose(["JSON-B91"], ["JSON-B64"], "encoding", True)
    with pytest.raises(NegotiationFailed, match="malformed"):
        choose("JSON-B64", ["JSON-B64"], "encoding", True)


def test_password_steps_agree_on_one_key() -> None:
    hub, client = End(password="pw"), End(password="pw")
    offer = hub_offer(hub)
    assert offer["password"] is True and offer["handshake"] is True
    step = client_reply(offer, client)
    assert step.mode is HandshakeMode.PASSWORD and step.reply and "envelope" in step.reply
    answer = hub_answer(step.reply, hub)
    assert answer.mode is HandshakeMode.PASSWORD
    link = client_finish(answer.reply, client, step.mode, step.iv)
    assert link.open_text(answer.cipher.seal_text(b"same key")) == b"same key"


def test_a_wrong_password_fails_on_either_side() -> None:
    step = client_reply(hub_offer(End(password="pw")), End(password="nope"))
    with pytest.raises(AuthenticationFailed):
        hub_answer(step.reply, End(password="pw"))
    answer = hub_answer(
        client_reply(hub_offer(End(password="x")), End(password="x")).reply, End(password="x")
    )
    with pytest.raises(AuthenticationFailed):
        client_finish(answer.reply, End(password="other"), HandshakeMode.PASSWORD, bytes(8))


def test_rsa_steps_and_their_refusals() -> None:
    hub = End(private_key=HUB_KEY)
    client = End(
        private_key=CLIENT_KEY,
        peer_public_key=crypto.load_public_key(crypto.public_key_pem(HUB_KEY)),
    )
    step = client_reply(hub_offer(hub), client)
    assert step.mode is HandshakeMode.RSA and step.reply and "pubkey" in step.reply
    answer = hub_answer(step.reply, hub)
    link = client_finish(answer.reply, client, step.mode, None)
    assert link.open_bytes(answer.cipher.seal_bytes(b"k")) == b"k"
    with pytest.raises(NegotiationFailed, match="no RSA key"):
        hub_answer(step.reply, End())
    with pytest.raises(ProtocolError):
        client_finish({}, client, step.mode, None)


def test_preshared_needs_no_reply_and_nothing_is_a_negotiation_failure() -> None:
    offer = hub_offer(End(crypto_key="0123456789abcdef"))
    assert offer["preshared_key"] is True and offer["min_protocol_version"] == 0
    step = client_reply(offer, End(crypto_key="0123456789abcdef"))
    assert step.mode is HandshakeMode.PRESHARED and step.reply is None
    with pytest.raises(NegotiationFailed):
        client_reply({"password": True}, End())
    with pytest.raises(NegotiationFailed):
        hub_answer("not an object", End(password="pw"))


def test_the_tables_cover_every_state() -> None:
    assert {s for s, _ in TRANSITIONS} == set(State)
    assert all(TRANSITIONS[(s, Trigger.LOST)] is State.CLOSED for s in State)
    assert (State.CLOSING, Trigger.CLOSE) not in TRANSITIONS  # closing twice changes nothing
    assert Inbound.APPLICATION not in ACCEPTS[(Role.HUB, State.HANDSHAKING)]
    assert Inbound.HELLO in ACCEPTS[(Role.CLIENT, State.HANDSHAKING)]
    assert not any(s in (State.CLOSING, State.CLOSED) for _, s in ACCEPTS)


def test_only_the_transition_table_assigns_the_state() -> None:
    tree = ast.parse(inspect.getsource(connection))
    assigners = {
        fn.name
        for fn in ast.walk(tree)
        if isinstance(fn, ast.FunctionDef)
        for node in ast.walk(fn)
        if isinstance(node, (ast.Assign, ast.AnnAssign))
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Attribute) and target.attr == "state"
    }
    assert assigners == {"__init__", "_move"}
