"""Sanity checks of the interop harness: reference client <-> reference hub, none of our code.

Stock ``HiveMessageBusClient`` 0.4.4 -> ``hivemind-core listen`` 4.0.0 -> real
ovos-messagebus -> echo responder, and back.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from . import harness

pytestmark = pytest.mark.interop

HUB_ENCODINGS = {"JSON-B64", "JSON-URLSAFE-B64", "JSON-B91", "JSON-Z85B", "JSON-Z85P", "JSON-B32"}
HUB_ENCODINGS |= {"JSON-HEX"}
HUB_CIPHERS = {"CHACHA20-POLY1305", "AES-GCM"}

RunClient = Callable[..., dict[str, Any]]


def _events(report: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e for e in report.get("events", []) if e["kind"] == kind]


def _frame_types(report: dict[str, Any]) -> list[str | None]:
    return [e.get("msg_type") for e in _events(report, "frame")]


def _both(run: Callable[[], dict[str, Any]], other: Callable[[], dict[str, Any]]) -> list[Any]:
    """Run two client scenarios at once (each one spends seconds waiting)."""
    with ThreadPoolExecutor(2) as pool:
        return [f.result() for f in [pool.submit(run), pool.submit(other)]]


@pytest.fixture(scope="module")
def hub(module_reference_hub: Callable[..., harness.ReferenceHub]) -> harness.ReferenceHub:
    """One reference hub (default config and clients) shared by this module."""
    return module_reference_hub()


@pytest.fixture(scope="module")
def exchange(
    hub: harness.ReferenceHub, refpython: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """One stock-client round trip with the password-only client ``sat``."""
    creds = hub.client("sat")
    return harness.run_reference_client(
        refpython,
        hub.host,
        hub.port,
        creds.access_key,
        creds.password or "",
        utterance="hello",
        site_id="kitchen",
        timeout=40,
        workdir=tmp_path_factory.mktemp("exchange"),
    )


def test_stock_client_round_trip(exchange: dict[str, Any]) -> None:
    assert exchange["connected"], exchange
    assert exchange["error"] is None, exchange
    assert exchange["answer"] == "echo: hello"
    assert exchange["rtt_s"] is not None and exchange["rtt_s"] < 5
    assert exchange["negotiated"]["encoding"] in HUB_ENCODINGS
    assert exchange["negotiated"]["cipher"] in HUB_CIPHERS
    context = exchange["answer_message"]["context"]
    assert context["source"] == "hive"
    assert context["destination"].endswith("::" + exchange["session_id"])
    assert _frame_types(exchange)[:2] == ["hello", "shake"]


def test_responder_saw_client_session(
    hub: harness.ReferenceHub, exchange: dict[str, Any], ovos_bus: harness.OvosBus
) -> None:
    session_id = exchange["session_id"]
    assert session_id and session_id != "default"
    seen = ovos_bus.seen_by_session(session_id)
    assert len(seen) == 1, ovos_bus.seen()
    message = seen[0]
    assert message["data"]["utterances"] == ["hello"]
    session = message["context"]["session"]
    assert session["site_id"] == "kitchen"
    row = next(r for r in hub.db_rows if r["api_key"] == hub.client("sat").access_key)
    peer = f"{exchange['useragent']}::{row['client_id']}::sat::{session_id}"
    assert message["context"]["peer"] == peer
    assert message["context"]["source"] == peer


def test_wrong_key_is_refused(hub: harness.ReferenceHub, run_reference_client: RunClient) -> None:
    report = run_reference_client(
        hub.host,
        hub.port,
        "not-a-registered-key",
        hub.client("sat").password,
        mode="connect",
        timeout=20,
        stop_on_error=True,
    )
    assert not report["connected"], report
    assert _frame_types(report) == []  # no HELLO for an unknown key
    errors = _events(report, "error")
    assert errors and "closed" in errors[0]["error"].lower(), report
    status, rest = harness.probe_hub(hub.host, hub.port)
    assert " 101 " in status
    assert rest[:2] == b"\x88\x00"  # close frame with no status code


def test_wrong_password_never_completes(
    hub: harness.ReferenceHub, run_reference_client: RunClient
) -> None:
    creds = hub.client("sat")
    report = run_reference_client(
        hub.host,
        hub.port,
        creds.access_key,
        "not-the-password",
        mode="connect",
        timeout=40,
        stop_on_error=True,
    )
    assert not report["connected"], report
    # the hub answers the envelope without checking it; the client chokes on the reply
    assert report["hub_shake_reply"] is not None, report
    assert _events(report, "handler_error"), report


def test_crypto_key_row_with_and_without_key(
    hub: harness.ReferenceHub, run_reference_client: RunClient
) -> None:
    creds = hub.client("sat_ck")
    assert creds.crypto_key and creds.password

    def run(crypto_key: str | None) -> dict[str, Any]:
        return run_reference_client(
            hub.host, hub.port, creds.access_key, creds.password, crypto_key=crypto_key, timeout=40
        )

    with_key, without_key = _both(lambda: run(creds.crypto_key), lambda: run(None))
    for report in (with_key, without_key):
        assert report["connected"], report
        assert report["answer"] == "echo: hello", report
        assert report["hub_shake"]["preshared_key"] is True


def test_no_password_row_cannot_handshake(
    hub: harness.ReferenceHub, run_reference_client: RunClient
) -> None:
    creds = hub.client("nopass")
    assert creds.password is None

    def run(force_rsa: bool) -> dict[str, Any]:
        return run_reference_client(
            hub.host,
            hub.port,
            creds.access_key,
            "any-password",
            mode="connect",
            timeout=40,
            stop_on_error=True,
            force_rsa=force_rsa,
        )

    stock, rsa = _both(lambda: run(False), lambda: run(True))
    assert not stock["connected"] and not rsa["connected"]
    assert stock["hub_shake"]["password"] is False
    assert stock["hub_shake"]["handshake"] is True
    # stock client sends a password envelope: the hub just drops the socket
    assert stock["hub_shake_reply"] is None and _events(stock, "error"), stock
    # pubkey offered: the hub answers with an RSA envelope the 0.4.4 client cannot open
    reply = rsa["hub_shake_reply"]
    assert reply and len(reply["envelope"]) == 1024, rsa
    assert (reply["encoding"], reply["cipher"]) == ("JSON-HEX", "AES-GCM")
    assert _events(rsa, "handler_error"), rsa


def test_hub_options_are_applied(
    reference_hub: Callable[..., harness.ReferenceHub], run_reference_client: RunClient
) -> None:
    creds = harness.make_client("only")
    hub = reference_hub(
        allowed_encodings=["JSON-HEX"],
        allowed_ciphers=["CHACHA20-POLY1305"],
        binarize=True,
        clients=[creds],
    )
    assert set(hub.clients) == {"only"}
    report = run_reference_client(
        hub.host, hub.port, creds.access_key, creds.password, count=2, timeout=40
    )
    assert report["answers"] == ["echo: hello", "echo: hello"], report
    assert len(report["rtts"]) == 2
    assert report["negotiated"] == {"encoding": "JSON-HEX", "cipher": "CHACHA20-POLY1305"}
    assert report["hub_shake"]["binarize"] is True
    assert report["hub_shake"]["encodings"] == ["JSON-HEX"]
