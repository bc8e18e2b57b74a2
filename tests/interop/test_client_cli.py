"""``hivemind-client`` (ours) as a subprocess against the reference hub 4.0.0."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from client.clirun import assert_one_line_error, run_cli

from . import harness

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def hub(module_reference_hub: Callable[..., harness.ReferenceHub]) -> harness.ReferenceHub:
    return module_reference_hub()


def creds(
    hub: harness.ReferenceHub, key: str | None = None, password: str | None = None
) -> list[str]:
    row = hub.client("sat")
    return [
        "--key",
        key or row.access_key,
        "--password",
        password or row.password or "",
        "--host",
        f"ws://{hub.host}",
        "--port",
        str(hub.port),
    ]


def test_send_mycroft_round_trip(hub: harness.ReferenceHub, tmp_path: Path) -> None:
    proc = run_cli(
        "send-mycroft",
        *creds(hub),
        "--siteid",
        "kitchen",
        "--msg",
        "recognizer_loop:utterance",
        "--payload",
        '{"utterances": ["hello"]}',
        "--response",
        "speak",
        config=tmp_path / "cfg",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "== connected to HiveMind"
    assert json.loads(proc.stdout.splitlines()[1])["utterance"] == "echo: hello"


def test_identity_then_terminal(hub: harness.ReferenceHub, tmp_path: Path) -> None:
    config = tmp_path / "cfg"
    row = hub.client("sat")
    proc = run_cli(
        "set-identity",
        "--key",
        row.access_key,
        "--password",
        row.password or "",
        "--host",
        hub.host,
        "--port",
        str(hub.port),
        "--siteid",
        "hall",
        config=config,
    )
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("test-identity", config=config)
    assert proc.returncode == 0, proc.stderr
    assert "== Identity successfully connected to HiveMind!" in proc.stdout
    proc = run_cli("terminal", config=config, stdin="one\ntwo\n")
    assert proc.returncode == 0, proc.stderr
    assert "> echo: one" in proc.stdout and "> echo: two" in proc.stdout


def test_wrong_key(hub: harness.ReferenceHub, tmp_path: Path) -> None:
    proc = run_cli(
        "send-mycroft",
        *creds(hub, key="not-registered"),
        "--msg",
        "x",
        config=tmp_path / "cfg",
        timeout=30,
    )
    assert_one_line_error(proc, "UnauthorizedKeyError")


def test_wrong_password(hub: harness.ReferenceHub, tmp_path: Path) -> None:
    proc = run_cli(
        "terminal", *creds(hub, password="not-the-password"), config=tmp_path / "cfg", timeout=30
    )
    assert_one_line_error(proc, "AuthenticationFailed", "password")


def test_no_hub_listening(tmp_path: Path) -> None:
    port = harness.free_port()
    proc = run_cli(
        "send-mycroft",
        "--key",
        "k",
        "--password",
        "p",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--msg",
        "x",
        config=tmp_path / "cfg",
        timeout=30,
    )
    assert_one_line_error(proc, "HiveMindEntryPointNotFound")
