"""Socket-free tests: CASCADE aggregation, reconnect policy, handler registry, config, identity."""

from __future__ import annotations

import json
import random
from pathlib import Path
from urllib.parse import quote

import pytest
from ovos_bus_client.message import Message

from hivemind_bus_client.cascade import CascadeAggregator
from hivemind_bus_client.client import config as client_config
from hivemind_bus_client.client.handlers import HandlerRegistry, Waiter
from hivemind_bus_client.exceptions import (
    AuthenticationFailed,
    ConfigurationError,
    ConnectionClosedError,
    ConnectTimeout,
    DecryptionKeyError,
    HiveMindEntryPointNotFound,
    NegotiationFailed,
    UnauthorizedKeyError,
)
from hivemind_bus_client.identity import NodeIdentity
from hivemind_bus_client.message import HiveMessage, HiveMessageType
from hivemind_bus_client.reconnect import backoff, is_fatal

T = HiveMessageType


def response(qid: str, responder: str, text: str = "x") -> HiveMessage:
    inner = HiveMessage(T.BUS, Message("speak", {"utterance": text}))
    return HiveMessage(
        T.CASCADE,
        payload=inner,
        metadata={"query_id": qid, "is_response": True, "responder_peer": responder},
    )


# -- CascadeAggregator -------------------------------------------------------------------


def test_cascade_waits_for_the_window() -> None:
    agg = CascadeAggregator(cascade_timeout=5.0)
    agg.start("q", now=100.0)
    assert agg.add(response("q", "a"), now=101.0) == []
    assert agg.add(response("q", "b"), now=102.0) == []
    assert agg.next_deadline() == 105.0
    assert agg.poll(104.9) == []
    (result,) = agg.poll(105.0)
    assert [r.metadata["responder_peer"] for r in result.responses] == ["a", "b"]
    assert result.selected is result.responses[0] and not result.complete
    assert agg.next_deadline() is None


def test_cascade_resolves_early_and_ignores_duplicates_and_strangers() -> None:
    agg = CascadeAggregator(cascade_select_callback=lambda rs: rs[-1])
    agg.start("q", now=0.0, expected=2)
    assert agg.add(response("other", "a"), now=0.1) == []
    assert agg.add(response("q", "a"), now=0.2) == []
    assert agg.add(response("q", "a"), now=0.3) == []  # same responder twice
    (result,) = agg.add(response("q", "b", "best"), now=0.4)
    assert result.complete and len(result.responses) == 2
    assert result.selected.metadata["responder_peer"] == "b"


def test_cascade_uses_the_hive_mapper_count_and_survives_a_bad_selector() -> None:
    class Mapper:
        nodes = {"a": 1, "b": 2, "c": 3}

    def broken(responses: list[HiveMessage]) -> HiveMessage:
        raise RuntimeError("boom")

    agg = CascadeAggregator(cascade_select_callback=broken, hive_mapper=Mapper())
    agg.start("q", now=0.0)
    agg.add(response("q", "a"), 0.1)
    agg.add(response("q", "b"), 0.2)
    (result,) = agg.add(response("q", "c"), 0.3)
    assert result.complete and result.selected is result.responses[0]


def test_cascade_without_answers_selects_nothing() -> None:
    agg = CascadeAggregator(cascade_timeout=1)
    agg.start("q", now=0.0)
    (result,) = agg.poll(1.0)
    assert result.responses == [] and result.selected is None


# -- reconnect policy ---------------------------------------------------------------------


def test_backoff_first_retry_under_a_second_and_capped() -> None:
    delays = backoff(initial=0.5, max_delay=4.0, rng=random.Random(1))
    values = [next(delays) for _ in range(12)]
    assert 0 < values[0] <= 0.5
    assert max(values) <= 4.0
    assert values[-1] >= 2.0  # grew towards the cap (jitter at most halves it)
    assert len(set(values)) > 6  # jittered


def test_backoff_rejects_bad_jitter() -> None:
    with pytest.raises(ValueError):
        next(backoff(jitter=1.5))


@pytest.mark.parametrize(
    ("exc", "fatal"),
    [
        (UnauthorizedKeyError("x"), True),
        (AuthenticationFailed("x"), True),
        (NegotiationFailed("x"), True),
        (ConfigurationError("x"), True),
        (ConnectionClosedError(1008, "policy"), True),
        (ConnectionClosedError(1002, "protocol"), True),
        (ConnectionClosedError(1006, ""), False),
        (ConnectionClosedError(1011, ""), False),
        (ConnectionClosedError(1012, "restart"), False),
        (ConnectionClosedError(4003, "kick"), False),
        (ConnectTimeout("x"), False),
        (HiveMindEntryPointNotFound("x"), False),
        (DecryptionKeyError("stale key"), False),
        (OSError("net"), False),
    ],
)
def test_is_fatal(exc: BaseException, fatal: bool) -> None:
    assert is_fatal(exc) is fatal


# -- handler registry -------------------------------------------------------------------


def test_registry_routes_bus_broadcast_and_nested_ping() -> None:
    reg = HandlerRegistry()
    speak: list[Message] = []
    pings: list[HiveMessage] = []
    reg.on("speak", speak.append)
    reg.on(T.PING, pings.append)
    bus = HiveMessage(T.BUS, Message("speak", {"utterance": "a"}))
    for fn, args in reg.collect(bus, "kitchen"):
        fn(*args)
    for target, expected in (("kitchen", 2), ("garage", 2), (None, 3)):
        msg = HiveMessage(
            T.BROADCAST, payload=HiveMessage(T.BUS, Message("speak", {})), target_site_id=target
        )
        for fn, args in reg.collect(msg, "kitchen"):
            fn(*args)
        assert len(speak) == expected
    route = [{"source": "x", "targets": ["y"]}]
    flood = HiveMessage(T.PROPAGATE, payload=HiveMessage(T.PING, {"ping_id": "1"}), route=route)
    for fn, args in reg.collect(flood, "kitchen"):
        fn(*args)
    assert pings and pings[0].route == route


def test_registry_waiters_resolve_once() -> None:
    reg = HandlerRegistry()
    got: list[HiveMessage] = []
    reg.add_waiter(Waiter(T.BUS, got.append, payload_type="speak"))
    reg.collect(HiveMessage(T.BUS, Message("other", {})), None)
    assert got == []
    reg.collect(HiveMessage(T.BUS, Message("speak", {})), None)
    reg.collect(HiveMessage(T.BUS, Message("speak", {})), None)
    assert len(got) == 1 and reg.counts()["waiters"] == 0


def test_registry_rejects_bad_input() -> None:
    reg = HandlerRegistry()
    with pytest.raises(TypeError):
        reg.on(T.BUS, "not callable")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        reg.on_bin("speak", print)


# -- config and identity -------------------------------------------------------------------


def test_config_url_and_authorization() -> None:
    assert client_config.authorization("HiveMessageBusClientV0.0.1", "ACCESSKEY") == (
        "SGl2ZU1lc3NhZ2VCdXNDbGllbnRWMC4wLjE6QUNDRVNTS0VZ"
    )
    cfg, _ = client_config.resolve(
        identity=NodeIdentity({}),
        key="K",
        password=None,
        crypto_key=None,
        host="wss://hub.local:9000",
        port=None,
        useragent="MyUA",
        site_id=None,
        session_id=None,
    )
    assert cfg.secure and cfg.port == 9000 and cfg.site_id == "unknown"
    assert cfg.url == "wss://hub.local:9000/?authorization=TXlVQTpL"
    assert "K" not in cfg.redacted().replace("KS", "")


def test_config_never_shows_its_secrets() -> None:
    """Neither ``redacted()`` nor ``repr`` may show the key, the password, the
    pre-shared key or the authorization token (which carries the key)."""
    key, password, preshared = "Sup3rSecretAccessKey", "Hunter2Password", "0123456789ABCDEF"
    cfg, _ = client_config.resolve(
        identity=NodeIdentity({}),
        key=key,
        password=password,
        crypto_key=preshared,
        host="ws://hub.local",
        port=5678,
        useragent="MyUA",
        site_id=None,
        session_id=None,
    )
    token = client_config.authorization("MyUA", key)
    assert token in cfg.url  # the token is what a leak of the URL would show
    for text in (cfg.redacted(), repr(cfg), str(cfg)):
        for secret in (key, password, preshared, token, quote(token, safe="")):
            assert secret not in text, (secret, text)


def test_config_requires_key_and_host() -> None:
    with pytest.raises(ConfigurationError, match="access key"):
        client_config.resolve(
            identity=NodeIdentity({}),
            key=None,
            password="p",
            crypto_key=None,
            host="h",
            port=None,
            useragent=None,
            site_id=None,
            session_id=None,
        )
    with pytest.raises(ConfigurationError, match="host"):
        client_config.resolve(
            identity=NodeIdentity({}),
            key="k",
            password="p",
            crypto_key=None,
            host=None,
            port=None,
            useragent=None,
            site_id=None,
            session_id=None,
        )


def test_identity_round_trip_keys_and_trust(tmp_path: Path) -> None:
    ident = NodeIdentity(tmp_path / "hm" / "_identity.json")
    assert ident.name == "unnamed-node" and ident.public_key is None
    ident.site_id = "Büro"
    pub = ident.create_keys()
    assert pub.startswith("-----BEGIN PUBLIC KEY-----")
    key_path = Path(ident.private_key)
    assert (key_path.stat().st_mode & 0o777) == 0o600
    assert ident.load_private_key() is not None
    assert ident.add_trusted_key("me", pub) is True
    assert ident.add_trusted_key("me", pub) is False
    assert ident.is_trusted_key(pub.replace("\n", "\r\n")) and ident.get_trusted_alias(pub) == "me"
    ident.save()
    data = json.loads(ident.path.read_text(encoding="utf-8"))
    assert data["site_id"] == "Büro" and data["trusted_keys"] == {"me": pub}
    assert (ident.path.stat().st_mode & 0o777) == 0o600
    again = NodeIdentity(ident.path)
    assert again.remove_trusted_key("me") and not again.remove_trusted_key("me")
    assert "password" not in repr(again)


def test_identity_tolerates_a_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "_identity.json"
    path.write_text("{not json", encoding="utf-8")
    assert NodeIdentity(path).as_dict() == {}
