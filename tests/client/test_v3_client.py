"""Our clients speaking protocol v3 to a v3-only hub over real websockets.

The hub is ``v3fakehub.V3FakeHub`` (our sans-I/O hub end, refusing v1 like a
5.x hub). The interop tests against the reference hub 5.3.10a1 are in
tests/interop/test_client_v3.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ovos_bus_client.message import Message

from hivemind_bus_client.client import HiveMessageBusClient
from hivemind_bus_client.client.asyncio import AsyncHiveMessageBusClient
from hivemind_bus_client.client.noisekeys import (
    PskCache,
    get_pin,
    noise_key_path,
    psk_cache_key,
    psk_cache_path,
)
from hivemind_bus_client.client.v3client import PinMismatch
from hivemind_bus_client.exceptions import AuthenticationFailed
from hivemind_bus_client.identity import NodeIdentity
from hivemind_bus_client.message import HiveMessageType
from hivemind_bus_client.protocol.noise import public_key as x25519_public
from support.net import wait_until

from .fakehub import Account, FakeHub
from .v3fakehub import HUB_NODE_ID, V3FakeHub

T = HiveMessageType
MakeClient = Callable[..., HiveMessageBusClient]
PASSWORD = "correct horse battery staple v3"


def utterance(text: str) -> Message:
    return Message("recognizer_loop:utterance", {"utterances": [text]})


@pytest.fixture
def v3hub() -> Iterator[V3FakeHub]:
    with V3FakeHub([Account("sat-key", PASSWORD)]) as fake:
        yield fake
        assert not fake.errors, fake.errors[0]


@pytest.fixture
def ident(identity: NodeIdentity) -> NodeIdentity:
    """The identity file holds the password (so the PSK cache file serves it)."""
    identity.password = PASSWORD
    identity.save()
    return identity


def hub_public(hub: V3FakeHub) -> bytes:
    return x25519_public(hub.hub_static)


def ask(client: HiveMessageBusClient, text: str) -> str:
    reply = client.wait_for_response(utterance(text), reply_type="speak", timeout=5)
    assert reply is not None
    return str(reply.payload.data["utterance"])


def test_xx_then_kk_pins_and_files(
    v3hub: V3FakeHub, make_client: MakeClient, ident: NodeIdentity
) -> None:
    client = make_client(v3hub, password=None)  # the identity's password
    client.connect()
    assert ask(client, "hello") == "echo: hello"
    assert v3hub.patterns == ["XXpsk2"]
    hs = client._engine.handshake
    assert hs is not None and hs.protocol == 3 and hs.pattern == "XXpsk2"
    where = f"127.0.0.1:{v3hub.port}"
    # TOFU: the hub's key is pinned in the identity file.
    on_disk = json.loads(ident.path.read_text())
    assert on_disk["pinned_noise_keys"] == {where: hub_public(v3hub).hex()}
    assert on_disk["password"] == PASSWORD  # the rest of the file survived
    # The static key file: 64 hex characters, 0600, no newline.
    key_file = noise_key_path(ident)
    assert key_file == ident.path.parent / "unnamed-node_noise.key"
    text = key_file.read_text()
    assert len(text) == 64 and bytes.fromhex(text) and "\n" not in text
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert v3hub.client_pins["sat-key"] == x25519_public(bytes.fromhex(text))
    # The PSK cache file.
    cache_file = psk_cache_path(key_file)
    assert cache_file.name == "unnamed-node_noise_psks.json"
    assert stat.S_IMODE(cache_file.stat().st_mode) == 0o600
    entries = json.loads(cache_file.read_text())
    assert list(entries) == [psk_cache_key("sat-key", HUB_NODE_ID)]
    assert entries[psk_cache_key("sat-key", HUB_NODE_ID)] == v3_psk()
    client.close()

    # Second process: same files, KK, no derivation on the client side.
    again = make_client(v3hub, password=None, identity=NodeIdentity(ident.path))
    again.connect()
    assert ask(again, "again") == "echo: again"
    assert v3hub.patterns == ["XXpsk2", "KKpsk0"]
    assert again._engine.v3.derivations == 0
    again.close()


def v3_psk() -> str:
    from hivemind_bus_client.protocol.v3offer import derive_psk

    return derive_psk(PASSWORD, HUB_NODE_ID).hex()


def test_async_client_v3(v3hub: V3FakeHub, ident: NodeIdentity) -> None:
    async def main() -> str:
        client = AsyncHiveMessageBusClient(
            key="sat-key",
            host="ws://127.0.0.1",
            port=v3hub.port,
            identity=ident,
            connect_timeout=5,
        )
        await client.connect()
        try:
            reply = await client.wait_for_response(
                utterance("async"), reply_type="speak", timeout=5
            )
            assert reply is not None
            return str(reply.payload.data["utterance"])
        finally:
            await client.close()

    assert asyncio.run(main()) == "echo: async"
    assert v3hub.patterns == ["XXpsk2"]


def test_wrong_password_is_refused_once(v3hub: V3FakeHub, make_client: MakeClient) -> None:
    client = make_client(v3hub, password="not the password")
    started = time.monotonic()
    with pytest.raises(AuthenticationFailed, match="did not accept the password"):
        client.connect()
    assert time.monotonic() - started < 5
    time.sleep(0.5)
    assert v3hub.connections == 1  # no retry, no reconnect loop


def test_wrong_password_after_kk_retries_xx_once(
    v3hub: V3FakeHub, make_client: MakeClient, ident: NodeIdentity
) -> None:
    first = make_client(v3hub, password=None)
    first.connect()
    first.close()
    # A pin on both sides: KK first; the hub refuses the wrong password at m1,
    # the client retries once with XX and finds the password wrong at m2.
    wrong = make_client(v3hub, password="not the password", identity=NodeIdentity(ident.path))
    with pytest.raises(AuthenticationFailed, match="did not accept the password"):
        wrong.connect()
    assert v3hub.connections == 3
    assert v3hub.patterns == ["XXpsk2"]
    # The cache was not touched by the wrong password (it is the identity's, not this one).
    assert len(PskCache(psk_cache_path(noise_key_path(ident)))) == 1


def test_wrong_password_never_wins_over_the_cache(
    v3hub: V3FakeHub, make_client: MakeClient, ident: NodeIdentity
) -> None:
    """Unlike the reference, a cached PSK does not make a wrong password connect."""
    first = make_client(v3hub, password=None)
    first.connect()
    first.close()
    wrong = make_client(v3hub, password="wrong", identity=NodeIdentity(ident.path))
    with pytest.raises(AuthenticationFailed):
        wrong.connect()


def test_stale_cached_psk_is_dropped_and_derived_again(
    v3hub: V3FakeHub, make_client: MakeClient, ident: NodeIdentity
) -> None:
    cache = PskCache(psk_cache_path(noise_key_path(ident)))
    cache.put("sat-key", HUB_NODE_ID, b"\x07" * 32)  # e.g. the password changed by hand
    client = make_client(v3hub, password=None)
    client.connect()
    assert ask(client, "x") == "echo: x"
    assert cache.get("sat-key", HUB_NODE_ID) == bytes.fromhex(v3_psk())
    assert client._engine.v3.derivations == 1
    assert v3hub.connections == 2


def test_pin_mismatch_is_a_permanent_refusal(
    v3hub: V3FakeHub, make_client: MakeClient, ident: NodeIdentity
) -> None:
    first = make_client(v3hub, password=None)
    first.connect()
    first.close()
    # The hub is "reinstalled": a new static key, and it forgot our pin.
    v3hub.hub_static = bytes(range(100, 132))
    v3hub.client_pins.clear()
    client = make_client(v3hub, password=None, identity=NodeIdentity(ident.path))
    with pytest.raises(PinMismatch, match=r"forget-server 127\.0\.0\.1:"):
        client.connect()
    time.sleep(0.5)
    assert v3hub.connections == 2  # XX offered only: no KK, no retry
    where = f"127.0.0.1:{v3hub.port}"
    assert get_pin(NodeIdentity(ident.path), where) != hub_public(v3hub)


def test_kk_refused_falls_back_to_xx_then_pin_check(
    v3hub: V3FakeHub, make_client: MakeClient, ident: NodeIdentity
) -> None:
    """A hub with a new key that still pins us: KK fails at the hub, XX finds the mismatch."""
    first = make_client(v3hub, password=None)
    first.connect()
    first.close()
    v3hub.hub_static = bytes(range(100, 132))
    client = make_client(v3hub, password=None, identity=NodeIdentity(ident.path))
    with pytest.raises(PinMismatch):
        client.connect()
    assert v3hub.connections == 3  # XX, then KK refused, then the one XX retry


def test_forgotten_pin_is_learnt_again(
    v3hub: V3FakeHub, make_client: MakeClient, ident: NodeIdentity
) -> None:
    from hivemind_bus_client.client.noisekeys import forget_pins

    first = make_client(v3hub, password=None)
    first.connect()
    first.close()
    v3hub.hub_static = bytes(range(100, 132))
    v3hub.client_pins.clear()
    fresh = NodeIdentity(ident.path)
    assert forget_pins(fresh, f"127.0.0.1:{v3hub.port}") == [f"127.0.0.1:{v3hub.port}"]
    client = make_client(v3hub, password=None, identity=NodeIdentity(ident.path))
    client.connect()
    assert ask(client, "new") == "echo: new"
    assert get_pin(NodeIdentity(ident.path), f"127.0.0.1:{v3hub.port}") == hub_public(v3hub)


def test_big_message_is_chunked(v3hub: V3FakeHub, make_client: MakeClient) -> None:
    client = make_client(v3hub, password=PASSWORD)
    client.connect()
    big = "x" * 150_000
    client.emit(Message("big.thing", {"blob": big}))
    wait_until(lambda: any(m.payload.msg_type == "big.thing" for m in v3hub.of_type(T.BUS)))
    got = next(m for m in v3hub.of_type(T.BUS) if m.payload.msg_type == "big.thing")
    assert got.payload.data["blob"] == big
    # and the other way: a 150 KB answer from the hub
    reply = client.wait_for_response(utterance("y" * 150_000), reply_type="speak", timeout=5)
    assert reply is not None and reply.payload.data["utterance"] == "echo: " + "y" * 150_000


def test_v1_hub_unchanged_and_no_key_file(
    hub: FakeHub, make_client: MakeClient, identity: Any
) -> None:
    """A hub whose offer has no noise: v1 as before, and no Noise key file is written."""
    client = make_client(hub)
    client.connect()
    assert client._engine.handshake.protocol == 1
    assert not noise_key_path(identity).exists()


def test_max_protocol_version_1_never_tries_v3(v3hub: V3FakeHub, make_client: MakeClient) -> None:
    client = make_client(v3hub, password=PASSWORD, max_protocol_version=1)
    with pytest.raises(AuthenticationFailed):
        client.connect()
    assert v3hub.patterns == []


def test_cache_bounded(tmp_path: Path) -> None:
    cache = PskCache(tmp_path / "k_psks.json")
    for n in range(40):
        cache.put("key", f"node-{n}", bytes([n]) * 32)
    assert len(cache) == 32
    assert cache.get("key", "node-0") is None and cache.get("key", "node-39") == bytes([39]) * 32
    assert cache.drop("key", "node-39") and not cache.drop("key", "node-39")
    raw = (tmp_path / "k_psks.json").read_text()
    assert "key" not in json.loads(raw)  # the access key is hashed
    assert stat.S_IMODE(os.stat(tmp_path / "k_psks.json").st_mode) == 0o600
    cache.clear()
    assert len(cache) == 0


def test_psk_is_derived_off_the_event_loop(
    v3hub: V3FakeHub, ident: NodeIdentity, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from hivemind_bus_client.client import v3client

    threads: list[threading.Thread] = []
    real = v3client.derive_psk

    def spy(password: str, node_id: str) -> bytes:
        threads.append(threading.current_thread())
        return real(password, node_id)

    monkeypatch.setattr(v3client, "derive_psk", spy)

    async def main() -> threading.Thread:
        client = AsyncHiveMessageBusClient(
            key="sat-key", host="ws://127.0.0.1", port=v3hub.port, identity=ident
        )
        await client.connect()
        await client.close()
        return threading.current_thread()

    loop_thread = asyncio.run(main())
    assert len(threads) == 1 and threads[0] is not loop_thread


def test_binarized_v3_session(ident: NodeIdentity, make_client: MakeClient) -> None:
    with V3FakeHub([Account("sat-key", PASSWORD)], binarize=True) as hub:
        client = make_client(hub, password=None)
        client.connect()
        assert client._engine.handshake.binarize is True
        assert ask(client, "bits") == "echo: bits"
        wait_until(lambda: hub.frame_kinds)
        assert (T.BUS, True) in hub.frame_kinds  # the utterance came as a bitstring
        assert not hub.errors
