"""Fixtures for client tests: an isolated identity folder and the in-process fake hub."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hivemind_bus_client.client import HiveMessageBusClient
from hivemind_bus_client.identity import NodeIdentity

from .fakehub import Account, FakeHub


@pytest.fixture(autouse=True)
def _isolated_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Never read or write the user's identity file."""
    config = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    return config


@pytest.fixture
def identity(tmp_path: Path) -> NodeIdentity:
    return NodeIdentity(tmp_path / "ident" / "_identity.json")


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub([Account("sat-key", "hunter22")]) as fake:
        yield fake
        assert not fake.errors, fake.errors[0]


@pytest.fixture
def make_client(identity: NodeIdentity) -> Iterator[Callable[..., HiveMessageBusClient]]:
    made: list[HiveMessageBusClient] = []

    def make(hub: FakeHub, **kw: Any) -> HiveMessageBusClient:
        kw.setdefault("key", "sat-key")
        kw.setdefault("password", "hunter22")
        kw.setdefault("host", f"ws://{hub.host}")
        kw.setdefault("port", hub.port)
        kw.setdefault("identity", identity)
        kw.setdefault("site_id", "kitchen")
        kw.setdefault("connect_timeout", 5)
        client = HiveMessageBusClient(**kw)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()
