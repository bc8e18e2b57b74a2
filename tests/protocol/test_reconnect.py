"""protocol/reconnect.py: which closes are final, which say "come back", and the delays."""

from __future__ import annotations

import random

import pytest

from hivemind_bus_client.exceptions import (
    AuthenticationFailed,
    CloseCode,
    ConfigurationError,
    ConnectionClosedError,
    ConnectTimeout,
    NegotiationFailed,
)
from hivemind_bus_client.protocol.reconnect import (
    FATAL_CLOSE_CODES,
    RETRY_CLOSE_CODES,
    backoff,
    is_fatal,
)


def test_the_close_code_sets_are_named_codes_and_disjoint() -> None:
    assert all(isinstance(c, CloseCode) for c in FATAL_CLOSE_CODES | RETRY_CLOSE_CODES)
    assert {int(c) for c in FATAL_CLOSE_CODES} == {1002, 1003, 1007, 1008, 1010}
    assert {int(c) for c in RETRY_CLOSE_CODES} == {1001, 1006, 1011, 1012, 1013}
    assert FATAL_CLOSE_CODES.isdisjoint(RETRY_CLOSE_CODES)


@pytest.mark.parametrize("code", sorted(FATAL_CLOSE_CODES))
def test_a_close_with_a_fatal_code_is_fatal(code: int) -> None:
    assert is_fatal(ConnectionClosedError(int(code)))


@pytest.mark.parametrize("code", [*sorted(RETRY_CLOSE_CODES), 1000, 1005, 4003, None])
def test_other_closes_are_retried(code: int | None) -> None:
    assert not is_fatal(ConnectionClosedError(code))


def test_refusals_and_misconfiguration_are_fatal_timeouts_are_not() -> None:
    assert is_fatal(AuthenticationFailed("wrong password"))
    assert is_fatal(NegotiationFailed("no common cipher"))
    assert is_fatal(ConfigurationError("no access key"))
    assert not is_fatal(ConnectTimeout("slow hub"))
    assert not is_fatal(OSError("refused"))


def test_backoff_starts_under_initial_grows_and_is_capped() -> None:
    delays = backoff(initial=0.5, factor=2.0, max_delay=4.0, jitter=0.5, rng=random.Random(7))
    got = [next(delays) for _ in range(8)]
    assert 0.25 <= got[0] <= 0.5
    bases = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    assert all(base * 0.5 <= d <= base for d, base in zip(got, bases, strict=True))
    assert list(zip(range(3), backoff(initial=1.0, jitter=0.0), strict=False)) == [
        (0, 1.0),
        (1, 2.0),
        (2, 4.0),
    ]


def test_backoff_refuses_a_jitter_outside_0_1() -> None:
    with pytest.raises(ValueError, match="jitter"):
        next(backoff(jitter=1.5))
