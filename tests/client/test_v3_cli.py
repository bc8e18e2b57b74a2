"""``hivemind-client forget-server`` and ``set-identity --password`` (the v3 files),
as subprocesses; the last test runs the whole cycle against the v3-only fake hub."""

from __future__ import annotations

import json
from pathlib import Path

from hivemind_bus_client.client.noisekeys import PskCache, psk_cache_path

from .clirun import run_cli
from .fakehub import Account
from .v3fakehub import V3FakeHub

PASSWORD = "correct horse battery staple v3"


def write_identity(config: Path, **data: object) -> Path:
    path = config / "hivemind" / "_identity.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def pins(path: Path) -> dict[str, str]:
    return dict(json.loads(path.read_text()).get("pinned_noise_keys") or {})


def test_forget_server_by_host_port_default_and_all(tmp_path: Path) -> None:
    config = tmp_path / "cfg"
    ident = write_identity(
        config,
        default_master="ws://hub.lan",
        default_port=5678,
        pinned_noise_keys={"hub.lan:5678": "aa" * 32, "10.0.0.2:5700": "bb" * 32, "x:1": "cc" * 32},
    )
    proc = run_cli("forget-server", "--host", "10.0.0.2", "--port", "5700", config=config)
    assert proc.returncode == 0, proc.stderr
    assert "forgot the pinned key of 10.0.0.2:5700" in proc.stdout
    assert set(pins(ident)) == {"hub.lan:5678", "x:1"}
    proc = run_cli("forget-server", config=config)  # the identity's hub
    assert proc.returncode == 0 and "hub.lan:5678" in proc.stdout
    assert set(pins(ident)) == {"x:1"}
    proc = run_cli("forget-server", "--host", "nowhere", config=config)
    assert proc.returncode == 0 and "no pinned key for nowhere:5678" in proc.stdout
    proc = run_cli("forget-server", "--all", config=config)
    assert proc.returncode == 0 and "x:1" in proc.stdout
    assert pins(ident) == {}
    assert json.loads(ident.read_text())["default_master"] == "ws://hub.lan"


def test_set_identity_password_clears_the_psk_cache(tmp_path: Path) -> None:
    config = tmp_path / "cfg"
    write_identity(config, access_key="k", password="old")
    cache = PskCache(psk_cache_path(config / "hivemind" / "unnamed-node_noise.key"))
    cache.put("k", "node", b"\x01" * 32)
    assert len(cache) == 1
    proc = run_cli("set-identity", "--siteid", "attic", config=config)
    assert proc.returncode == 0, proc.stderr
    assert len(cache) == 1  # no new password: kept
    proc = run_cli("set-identity", "--password", "new", config=config)
    assert proc.returncode == 0, proc.stderr
    assert len(cache) == 0


def test_reinstalled_hub_cycle(tmp_path: Path) -> None:
    """Pinned hub, hub key changes: refused naming forget-server; after it, connects again."""
    config = tmp_path / "cfg"
    with V3FakeHub([Account("sat-key", PASSWORD)]) as hub:
        where = ["--host", hub.host, "--port", str(hub.port)]
        proc = run_cli(
            "set-identity", "--key", "sat-key", "--password", PASSWORD, *where, config=config
        )
        assert proc.returncode == 0, proc.stderr
        assert run_cli("test-identity", config=config).returncode == 0
        hub.hub_static = bytes(range(100, 132))
        hub.client_pins.clear()
        proc = run_cli("test-identity", config=config)
        assert proc.returncode == 1 and "forget-server" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
        proc = run_cli("forget-server", config=config)
        assert proc.returncode == 0 and f"127.0.0.1:{hub.port}" in proc.stdout
        proc = run_cli("test-identity", config=config)
        assert proc.returncode == 0, proc.stderr
        assert hub.patterns == ["XXpsk2", "XXpsk2"]
