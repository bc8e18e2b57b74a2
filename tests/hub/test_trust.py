"""Trusted keys at the hub (seed doc 001, "Trusted Keys"), over real websockets.

A PROPAGATE(BUS) is injected into the hub's agent only when the link it came
from is trusted, and an INTERCOM addressed to the hub is opened only when a
trusted key signed it. The hub trusts the keys of ``HubConfig.trusted_keys``
(``server.json``) and of its identity file (``NodeIdentity.trusted_keys``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from ovos_bus_client.message import Message

from hivemind_bus_client import crypto
from hivemind_bus_client.identity import NodeIdentity
from hivemind_bus_client.intercom import seal
from hivemind_bus_client.message import HiveMessage, HiveMessageType
from hivemind_core.config import HubConfig
from hivemind_core.server import hub_trusted_keys

from .hubkit import CLIENT_KEY, HUB_KEY, TestClient, is_type, running_hub

T = HiveMessageType
SPEAK = is_type("speak")
CLIENT_PEM = crypto.public_key_pem(CLIENT_KEY)
STRANGER_KEY = crypto.create_private_key()


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


def utterance(text: str) -> HiveMessage:
    return HiveMessage(T.BUS, Message("recognizer_loop:utterance", {"utterances": [text]}, {}))


async def satellite(hub: Any, name: str, key: Any = CLIENT_KEY) -> TestClient:
    row = hub.db.add_client(name, password="pw")
    hello = {
        "session": {"session_id": name, "site_id": "kitchen"},
        "site_id": "kitchen",
        "pubkey": crypto.public_key_pem(key),
    }
    return await TestClient(hub.port, row.api_key, "pw", hello=hello).connect()


def injected_texts(hub: Any) -> list[str]:
    return [m["data"]["utterances"][0] for m in hub.agent.injected]


def test_propagate_bus_from_a_trusted_link_is_injected() -> None:
    async def scenario() -> None:
        async with running_hub(trusted_keys={"kitchen-sat": CLIENT_PEM}) as hub:
            c = await satellite(hub, "trusted")
            await c.send(HiveMessage(T.PROPAGATE, utterance("echo trusted flood")))
            answer = await c.next_bus(SPEAK)
            assert answer["data"]["utterance"] == "trusted flood"
            assert injected_texts(hub) == ["echo trusted flood"]
            await c.close()

    run(scenario())


def test_propagate_bus_from_an_untrusted_link_is_dropped_and_counted() -> None:
    async def scenario() -> None:
        async with running_hub(trusted_keys={"kitchen-sat": CLIENT_PEM}) as hub:
            c = await satellite(hub, "stranger", STRANGER_KEY)
            await c.send(HiveMessage(T.PROPAGATE, utterance("echo untrusted flood")))
            assert await c.no_bus(SPEAK)
            assert hub.agent.injected == []
            assert hub.server.router.counters.get("propagate_untrusted") == 1
            # the same utterance as plain BUS is still answered: only the flood is gated
            await c.send(utterance("echo plain"))
            assert (await c.next_bus(SPEAK))["data"]["utterance"] == "plain"
            await c.close()

    run(scenario())


def _trust_in_identity_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, alias: str) -> None:
    """An identity file (under a private XDG_CONFIG_HOME) that trusts the client's key."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    identity = NodeIdentity()
    identity.add_trusted_key(alias, CLIENT_PEM)
    identity.save()


def test_identity_file_trusted_keys_are_honoured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _trust_in_identity_file(tmp_path, monkeypatch, "kitchen-sat")

    async def scenario() -> None:
        async with running_hub(identity_trust=True) as hub:
            c = await satellite(hub, "trusted-by-identity")
            await c.send(HiveMessage(T.PROPAGATE, utterance("echo via identity")))
            assert (await c.next_bus(SPEAK))["data"]["utterance"] == "via identity"
            await c.close()

    run(scenario())


def test_intercom_to_the_hub_is_opened_only_when_signed_by_a_trusted_key() -> None:
    async def scenario() -> None:
        hub_pem = crypto.public_key_pem(HUB_KEY)
        async with running_hub(trusted_keys={"kitchen-sat": CLIENT_PEM}) as hub:
            c = await satellite(hub, "intercom")
            await c.send(seal(utterance("echo sealed"), hub_pem, CLIENT_KEY))
            assert (await c.next_bus(SPEAK))["data"]["utterance"] == "sealed"
            assert hub.server.router.counters.get("intercom_opened") == 1

            await c.send(seal(utterance("echo forged"), hub_pem, STRANGER_KEY))
            assert await c.no_bus(SPEAK)
            assert hub.server.router.counters.get("intercom_untrusted") == 1
            assert injected_texts(hub) == ["echo sealed"]
            await c.close()

    run(scenario())


def test_hub_trusted_keys_merges_identity_and_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _trust_in_identity_file(tmp_path, monkeypatch, "from-identity")
    stranger = crypto.public_key_pem(STRANGER_KEY)
    cfg = HubConfig(trusted_keys={"from-config": stranger})
    assert hub_trusted_keys(cfg) == {"from-identity": CLIENT_PEM, "from-config": stranger}
    cfg.identity_trust = False
    assert hub_trusted_keys(cfg) == {"from-config": stranger}
    cfg.trusted_keys = [stranger]  # type: ignore[assignment]  # a bare list in server.json
    assert hub_trusted_keys(cfg) == {"key-0": stranger}


def test_an_unusable_trusted_key_is_logged_and_ignored(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        keys = {
            "broken": "-----BEGIN PUBLIC KEY-----\nnot base64\n",
            "empty": "",
            "kitchen-sat": CLIENT_PEM,
        }
        async with running_hub(trusted_keys=keys) as hub:
            assert len(hub.server.router.trust) == 1  # only the usable one
            c = await satellite(hub, "still-trusted")
            await c.send(HiveMessage(T.PROPAGATE, utterance("echo good key")))
            assert (await c.next_bus(SPEAK))["data"]["utterance"] == "good key"
            await c.close()

    with caplog.at_level("WARNING"):
        run(scenario())
    warned = [
        r.getMessage() for r in caplog.records if "not a usable RSA public key" in r.getMessage()
    ]
    assert len(warned) == 2
