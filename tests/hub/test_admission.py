"""The one admission step: authorization parsing, lookups, refusals and the throttle."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from hivemind_bus_client.exceptions import CloseCode
from hivemind_core.admission import (
    Admission,
    Admitted,
    Refusal,
    Refused,
    authorization_token,
    parse_authorization,
    parse_token,
)
from hivemind_core.agents.embedded import EmbeddedAgent
from hivemind_core.config import HubConfig
from hivemind_core.node import HubNode
from hivemind_core.throttle import AuthThrottle

from .hubkit import HUB_KEY


class Record:
    def __init__(self, key: str) -> None:
        self.api_key = key


class FakeDB:
    def __init__(self, *keys: str, broken: bool = False) -> None:
        self.keys = set(keys)
        self.broken = broken

    def get_client_by_api_key(self, key: str) -> Any:
        if self.broken:
            raise OSError("database down")
        return Record(key) if key in self.keys else None


def admission(db: FakeDB, budget: int = 3) -> tuple[Admission, HubNode, list[float]]:
    now = [100.0]
    cfg = HubConfig(identity_trust=False)
    node = HubNode(cfg, db, EmbeddedAgent(cfg), private_key=HUB_KEY, clock=lambda: now[0])
    return Admission(node, AuthThrottle(budget, 60.0)), node, now


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        (authorization_token("ua", "key"), ("ua", "key")),
        (base64.urlsafe_b64encode(b"u:k>?").decode().rstrip("="), ("u", "k>?")),
        (base64.b64encode(b":key").decode(), ("", "key")),
        (base64.b64encode(b"ua-without-colon").decode(), None),
        (base64.b64encode(b"ua:").decode(), None),
        ("%%%", None),
        (base64.b64encode(b"\xff\xfe:k").decode(), None),
    ],
)
def test_parse_token(token: str, expected: tuple[str, str] | None) -> None:
    assert parse_token(token) == expected


def test_parse_authorization_reads_the_query() -> None:
    token = authorization_token("ua", "key")
    assert parse_authorization(f"/?authorization={token}") == ("ua", "key")
    assert parse_authorization(f"/x?a=1&authorization={token}") == ("ua", "key")
    assert parse_authorization("/") is None
    assert parse_authorization("/?authorization=") is None


def test_check_admits_known_keys() -> None:
    adm, node, now = admission(FakeDB("good"))
    verdict = adm.check(("ua", "good"), "10.0.0.1", now[0])
    assert isinstance(verdict, Admitted)
    assert (verdict.useragent, verdict.key, verdict.client.api_key) == ("ua", "good", "good")
    assert node.stats.get("auth_failures", 0) == 0


def test_refusals_say_why_and_count_against_the_address() -> None:
    adm, node, now = admission(FakeDB("good", "revoked"), budget=10)
    malformed = adm.check(None, "a", now[0])
    unknown = adm.check(("ua", "nope"), "a", now[0])
    tombstone = adm.check(("ua", "revoked"), "a", now[0])
    assert isinstance(malformed, Refusal) and malformed.why is Refused.MALFORMED
    assert (malformed.code, malformed.status) == (CloseCode.POLICY, 401)
    assert isinstance(unknown, Refusal) and unknown.why is Refused.UNKNOWN_KEY
    assert isinstance(tombstone, Refusal) and tombstone.why is Refused.UNKNOWN_KEY
    assert node.stats["auth_failures"] == 3


def test_a_broken_database_is_unavailable_not_a_failed_login() -> None:
    adm, node, now = admission(FakeDB(broken=True))
    verdict = adm.check(("ua", "any"), "a", now[0])
    assert isinstance(verdict, Refusal) and verdict.why is Refused.UNAVAILABLE
    assert (verdict.code, verdict.status) == (CloseCode.INTERNAL, 500)
    assert node.stats["errors"] == 1 and node.stats.get("auth_failures", 0) == 0


def test_an_address_over_budget_refuses_guessed_keys_but_admits_a_good_key() -> None:
    adm, node, now = admission(FakeDB("good"), budget=2)
    for _ in range(2):
        assert isinstance(adm.check(("ua", "bad"), "a", now[0]), Refusal)
    verdict = adm.check(("ua", "bad2"), "a", now[0])
    assert isinstance(verdict, Refusal) and verdict.why is Refused.THROTTLED
    assert (verdict.code, verdict.status) == (CloseCode.TRY_AGAIN, 429)
    assert verdict.retry_after is not None and verdict.retry_after >= 1
    assert node.stats["auth_throttled"] == 1
    # a right key from the same address (a shared NAT) still gets in
    assert isinstance(adm.check(("ua", "good"), "a", now[0]), Admitted)
    now[0] += 61
    assert not isinstance(adm.check(("ua", "bad"), "a", now[0]), Admitted)
    assert adm.check(("ua", "bad"), "a", now[0]).why is Refused.UNKNOWN_KEY  # type: ignore[union-attr]


def test_wrong_passwords_throttle_that_key_at_that_address_only() -> None:
    adm, _node, now = admission(FakeDB("good"), budget=2)
    for _ in range(2):
        adm.failed("a", "wrong password", "good")
    verdict = adm.check(("ua", "good"), "a", now[0])
    assert isinstance(verdict, Refusal) and verdict.why is Refused.THROTTLED
    assert isinstance(adm.check(("ua", "good"), "b", now[0]), Admitted)
    assert adm.blocked("a", now[0]) is None  # the address itself is not locked out
    now[0] += 61
    assert isinstance(adm.check(("ua", "good"), "a", now[0]), Admitted)
