"""``hivemind-client`` as a subprocess against the in-process fake hub."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from support.net import free_port

from .clirun import assert_one_line_error, run_cli
from .fakehub import FakeHub


def hellos(hub: FakeHub) -> list[dict]:
    """The HELLOs the hub got, waiting a moment for one still in flight."""
    deadline = time.monotonic() + 5
    while not hub.hellos and time.monotonic() < deadline:
        time.sleep(0.01)
    return hub.hellos


def conn_args(hub: FakeHub, key: str = "sat-key", password: str = "hunter22") -> list[str]:
    return ["--key", key, "--password", password, "--host", hub.host, "--port", str(hub.port)]


def test_set_identity_then_test_identity(hub: FakeHub, tmp_path: Path) -> None:
    config = tmp_path / "cfg"
    proc = run_cli(
        "set-identity",
        "--key",
        "sat-key",
        "--password",
        "hunter22",
        "--host",
        "127.0.0.1",
        "--port",
        str(hub.port),
        "--siteid",
        "Büro",
        config=config,
    )
    assert proc.returncode == 0, proc.stderr
    path = config / "hivemind" / "_identity.json"
    assert f"identity saved: {path}" in proc.stdout
    assert "PUBKEY: -----BEGIN PUBLIC KEY-----" in proc.stdout
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["default_master"] == "ws://127.0.0.1" and data["site_id"] == "Büro"
    assert (path.stat().st_mode & 0o777) == 0o600
    proc = run_cli("test-identity", config=config)
    assert proc.returncode == 0, proc.stderr
    assert "== Identity successfully connected to HiveMind!" in proc.stdout
    assert hellos(hub)[-1]["site_id"] == "Büro"
    assert hub.hellos[-1]["pubkey"] == data["public_key"]


def test_set_identity_needs_something(tmp_path: Path) -> None:
    proc = run_cli("set-identity", "--host", "h", config=tmp_path / "cfg")
    assert_one_line_error(proc, "at least one")


def test_test_identity_without_identity(tmp_path: Path) -> None:
    proc = run_cli("test-identity", config=tmp_path / "cfg")
    assert_one_line_error(proc, "ConfigurationError", "set-identity")


def test_send_mycroft_with_response(hub: FakeHub, tmp_path: Path) -> None:
    proc = run_cli(
        "send-mycroft",
        *conn_args(hub),
        "--msg",
        "recognizer_loop:utterance",
        "--payload",
        '{"utterances": ["olá"]}',
        "--response",
        "speak",
        config=tmp_path / "cfg",
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "== connected to HiveMind"
    assert json.loads(lines[1]) == {"utterance": "echo: olá"}


@pytest.mark.parametrize("command", ["send-mycroft", "escalate", "propagate"])
def test_one_shot_commands_reach_the_hub(hub: FakeHub, tmp_path: Path, command: str) -> None:
    proc = run_cli(
        command,
        *conn_args(hub),
        "--msg",
        "my.event",
        "--payload",
        '{"n": 1}',
        config=tmp_path / "cfg",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("== connected to HiveMind")
    expected = {"send-mycroft": "bus", "escalate": "escalate", "propagate": "propagate"}[command]
    got = [m for m in hub.received if m.msg_type.value == expected]
    assert got, [m.msg_type for m in hub.received]
    bus = got[-1] if expected == "bus" else got[-1].payload
    assert bus.payload.msg_type == "my.event" and bus.payload.data == {"n": 1}


def test_terminal(hub: FakeHub, tmp_path: Path) -> None:
    proc = run_cli(
        "terminal",
        *conn_args(hub),
        "--siteid",
        "den",
        config=tmp_path / "cfg",
        stdin="hello\n\nhow are you\n",
    )
    assert proc.returncode == 0, proc.stderr
    assert "== connected to HiveMind" in proc.stdout
    assert "> echo: hello" in proc.stdout
    assert "> echo: how are you" in proc.stdout
    assert hellos(hub)[-1]["site_id"] == "den"


def test_query_cascade_ping(hub: FakeHub, tmp_path: Path) -> None:
    cfg = tmp_path / "cfg"
    utt = ["--msg", "recognizer_loop:utterance", "--payload", '{"utterances": ["q"]}']
    proc = run_cli("query", *conn_args(hub), *utt, config=cfg)
    assert proc.returncode == 0, proc.stderr
    assert 'node-0: {"type": "speak", "data": {"utterance": "answer 0: q"}}' in proc.stdout
    proc = run_cli("cascade", *conn_args(hub), *utt, "--timeout", "0.5", config=cfg)
    assert proc.returncode == 0, proc.stderr
    assert "* node-0:" in proc.stdout and "  node-1:" in proc.stdout
    proc = run_cli("ping", *conn_args(hub), "--timeout", "0.5", "--json", config=cfg)
    assert proc.returncode == 0, proc.stderr
    nodes = json.loads(proc.stdout)["nodes"]
    assert [(n["peer"], n["hops"]) for n in nodes] == [("fakehub", 1)]
    assert nodes[0]["rtt_ms"] is not None and nodes[0]["rtt_ms"] < 1000


def test_wrong_key(hub: FakeHub, tmp_path: Path) -> None:
    proc = run_cli(
        "send-mycroft", *conn_args(hub, key="wrong"), "--msg", "x", config=tmp_path / "cfg"
    )
    assert_one_line_error(proc, "UnauthorizedKeyError", "access key")


def test_wrong_password(hub: FakeHub, tmp_path: Path) -> None:
    proc = run_cli("terminal", *conn_args(hub, password="wrong"), config=tmp_path / "cfg")
    assert_one_line_error(proc, "AuthenticationFailed", "password")


def test_no_hub_listening(tmp_path: Path) -> None:
    port = free_port()
    proc = run_cli(
        "ping",
        "--key",
        "k",
        "--password",
        "p",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        config=tmp_path / "cfg",
    )
    assert_one_line_error(proc, "HiveMindEntryPointNotFound", str(port))


def test_bad_payload(hub: FakeHub, tmp_path: Path) -> None:
    proc = run_cli(
        "send-mycroft", *conn_args(hub), "--msg", "x", "--payload", "{nope", config=tmp_path / "cfg"
    )
    assert_one_line_error(proc, "--payload")
