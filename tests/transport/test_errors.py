"""transport.errors: the one translation table, and how a close becomes the user's error."""

from __future__ import annotations

import socket
import ssl

import pytest

from hivemind_bus_client.exceptions import (
    AuthenticationFailed,
    CloseCode,
    ConnectionClosedError,
    ConnectionClosedOK,
    ConnectTimeout,
    HandshakeError,
    HiveMindConnectionError,
    HiveMindEntryPointNotFound,
    NegotiationFailed,
    SecureConnectionFailed,
    UnauthorizedKeyError,
)
from hivemind_bus_client.transport.channel import ChannelClosed
from hivemind_bus_client.transport.errors import (
    close_error,
    http_status_error,
    is_negotiation_reason,
    map_errors,
)

WHERE = "hub.local:5678"


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (ConnectionRefusedError(), HiveMindEntryPointNotFound),
        (socket.gaierror(-2, "Name or service not known"), HiveMindEntryPointNotFound),
        (ssl.SSLError(1, "bad cert"), SecureConnectionFailed),
        (TimeoutError(), ConnectTimeout),
        (OSError(113, "No route to host"), HiveMindEntryPointNotFound),
    ],
)
def test_map_errors_while_connecting(raised: BaseException, expected: type) -> None:
    with pytest.raises(expected) as info, map_errors(WHERE, connecting=True):
        raise raised
    assert WHERE in str(info.value) or isinstance(info.value, ConnectTimeout)


def test_socket_error_on_an_open_link_is_a_connection_error() -> None:
    with pytest.raises(HiveMindConnectionError) as info, map_errors(WHERE, connecting=False):
        raise OSError(104, "Connection reset by peer")
    assert not isinstance(info.value, HiveMindEntryPointNotFound)


def test_our_errors_and_bugs_pass_through() -> None:
    with pytest.raises(NegotiationFailed), map_errors(WHERE):
        raise NegotiationFailed("x")
    with pytest.raises(KeyError), map_errors(WHERE):
        raise KeyError("a bug stays a bug")


def test_http_status() -> None:
    assert isinstance(http_status_error(401, WHERE), UnauthorizedKeyError)
    assert isinstance(http_status_error(403, WHERE), UnauthorizedKeyError)
    other = http_status_error(500, WHERE)
    assert isinstance(other, HiveMindConnectionError)
    assert not isinstance(other, UnauthorizedKeyError)


def test_negotiation_reasons_are_ours() -> None:
    assert is_negotiation_reason("no common encoding: client offers ['JSON-B64']")
    assert is_negotiation_reason("No handshake possible: need a password")
    assert not is_negotiation_reason("wrong password")
    assert not is_negotiation_reason("")


def _closed(code: int, reason: str = "", **kw: object) -> ChannelClosed:
    return ChannelClosed(code, reason, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("closed", "mode", "expected"),
    [
        (_closed(1008, "no common cipher: ..."), "password", NegotiationFailed),
        (_closed(1008, "wrong password"), "password", AuthenticationFailed),
        (_closed(1008, "refused"), "rsa", AuthenticationFailed),
        (_closed(1002, "bad frame"), "rsa", HandshakeError),
        (_closed(1008, "", greeted=False), None, UnauthorizedKeyError),
        (_closed(1013, "busy"), "password", ConnectionClosedError),
        (_closed(4003, "kicked"), "password", ConnectionClosedError),
        (_closed(1006, ""), None, ConnectionClosedError),
    ],
)
def test_close_during_the_handshake(
    closed: ChannelClosed, mode: str | None, expected: type
) -> None:
    error = close_error(closed, WHERE, handshaking=True, mode=mode)
    assert type(error) is expected, error


def test_close_after_the_handshake() -> None:
    ok = close_error(_closed(1000, "bye"), WHERE, handshaking=False)
    assert isinstance(ok, ConnectionClosedOK) and ok.code == 1000
    going = close_error(_closed(1001), WHERE, handshaking=False)
    assert isinstance(going, ConnectionClosedOK)
    err = close_error(_closed(1011, "oops"), WHERE, handshaking=False)
    assert isinstance(err, ConnectionClosedError) and err.code == 1011


def test_a_local_cause_wins() -> None:
    cause = ConnectTimeout("no completed handshake within 0.5 s")
    closed = _closed(CloseCode.TRY_AGAIN, "handshake timed out", by_peer=False, error=cause)
    assert close_error(closed, WHERE, handshaking=True) is cause
