"""exceptions.py: the close-code story and the tree drawn in the module docstring."""

from __future__ import annotations

import re

import pytest

from hivemind_bus_client import exceptions as exc_mod
from hivemind_bus_client.exceptions import (
    AuthenticationFailed,
    CloseCode,
    ConfigurationError,
    ConnectionClosedError,
    ConnectTimeout,
    CryptoError,
    DecodingError,
    DecryptionError,
    HiveMindConnectionError,
    HiveMindError,
    InvalidCipher,
    InvalidEncoding,
    InvalidState,
    NegotiationFailed,
    PayloadTooBig,
    PermissionDenied,
    ProtocolError,
)

REMOTE = {
    ProtocolError: CloseCode.PROTOCOL_ERROR,
    DecodingError: CloseCode.PROTOCOL_ERROR,
    PayloadTooBig: CloseCode.TOO_BIG,
    InvalidEncoding: CloseCode.PROTOCOL_ERROR,
    InvalidCipher: CloseCode.PROTOCOL_ERROR,
    CryptoError: CloseCode.POLICY,
    DecryptionError: CloseCode.POLICY,
    AuthenticationFailed: CloseCode.POLICY,
    NegotiationFailed: CloseCode.POLICY,
    PermissionDenied: CloseCode.PERMISSION,
}


@pytest.mark.parametrize(("cls", "code"), REMOTE.items(), ids=lambda v: getattr(v, "__name__", v))
def test_remote_errors_carry_the_code_the_link_closes_with(cls: type, code: int) -> None:
    assert cls("x").close_code == code


@pytest.mark.parametrize(
    "cls",
    [
        HiveMindError,
        InvalidState,
        ConfigurationError,
        HiveMindConnectionError,
        ConnectTimeout,
        ConnectionClosedError,
    ],
)
def test_local_errors_have_no_close_code(cls: type[HiveMindError]) -> None:
    assert cls().close_code is None


def test_connection_closed_keeps_what_the_closing_side_said() -> None:
    closed = ConnectionClosedError(1013, "busy")
    assert (closed.code, closed.reason, closed.close_code) == (1013, "busy", None)
    assert str(closed) == "connection closed (code 1013): busy"


def _tree() -> list[tuple[int, str]]:
    doc = exc_mod.__doc__ or ""
    rows = []
    for line in doc.splitlines():
        m = re.match(r"^    ((?:[│ ] {3})*)(?:[├└]── )?([A-Z]\w+)", line)
        if m and ("──" in line or line.strip().startswith("HiveMindError")):
            rows.append((len(m.group(1)) // 4 + ("──" in line), m.group(2)))
    return rows


def test_the_docstring_tree_is_the_class_tree() -> None:
    rows = _tree()
    assert rows[0] == (0, "HiveMindError") and len(rows) > 20
    parents: dict[int, str] = {}
    drawn = set()
    for depth, name in rows:
        cls = getattr(exc_mod, name)
        drawn.add(cls)
        parents[depth] = name
        if depth:
            parent = getattr(exc_mod, parents[depth - 1])
            assert parent in cls.__bases__, f"{name} is drawn under {parent.__name__}"
    every = {
        obj
        for obj in vars(exc_mod).values()
        if isinstance(obj, type) and issubclass(obj, HiveMindError)
    }
    assert every == drawn, "every error class is drawn once, aliases aside"
