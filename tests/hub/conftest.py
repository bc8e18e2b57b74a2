"""Fixtures for the hub tests: a throwaway Redis server and isolated XDG dirs."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.net import free_port


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private ``redis-server`` (no persistence) for the session; yields its URL.

    Skips only when the binary is not installed (CI installs Debian's redis-server).
    """
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    pytest.importorskip("redis")
    import redis

    workdir: Path = tmp_path_factory.mktemp("redis")
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        yield url
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the XDG config/data dirs at ``tmp_path`` (for in-process code and subprocesses)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path


# What the reference 4.0.0 writes: records keyed by id,
# null lists from its add-client, a "revoked" tombstone for a deleted client,
# and (a quirk of its JSON store) the same id twice, the later one winning.
REFERENCE_CLIENTS_JSON = """{
  "1": {"client_id": 1, "api_key": "k1-old", "name": "stale", "description": "", "is_admin": false,
        "last_seen": -1, "intent_blacklist": null, "skill_blacklist": null, "message_blacklist": null,
        "allowed_types": ["recognizer_loop:utterance"], "crypto_key": null, "password": "p-old",
        "can_broadcast": true, "can_escalate": true, "can_propagate": true, "metadata": {}},
  "2": {"client_id": 2, "api_key": "revoked", "name": "", "description": "", "is_admin": false,
        "last_seen": -1, "intent_blacklist": [], "skill_blacklist": [], "message_blacklist": [],
        "allowed_types": [], "crypto_key": null, "password": null,
        "can_broadcast": true, "can_escalate": true, "can_propagate": true, "metadata": {}},
  "3": {"client_id": 3, "api_key": "a93ec3076d86f8b173c63a3398c73725", "name": "B\\u00fcro",
        "description": "upstairs", "is_admin": true, "last_seen": 1700000000.5,
        "intent_blacklist": ["weather.skill:WeatherIntent"], "skill_blacklist": ["jokes.skill"],
        "message_blacklist": ["speak"], "allowed_types": ["speak:b64_audio"],
        "crypto_key": "177a4da72c846cab", "password": "7e7f7301f6b25eca",
        "can_broadcast": false, "can_escalate": false, "can_propagate": true,
        "metadata": {"noise_pubkey": "abcd"}, "site_id": "kitchen", "extra_list": [1, 2]},
  "4": {"client_id": 4, "api_key": "k4", "name": "empty-role", "is_admin": false,
        "allowed_types": [], "password": null},
  "1": {"client_id": 1, "api_key": "k1", "name": "sat1", "description": "", "is_admin": false,
        "last_seen": -1, "intent_blacklist": null, "skill_blacklist": null, "message_blacklist": null,
        "allowed_types": ["recognizer_loop:utterance", "recognizer_loop:record_begin"],
        "crypto_key": "adfd20a5f9bba4a0", "password": "p1",
        "can_broadcast": true, "can_escalate": true, "can_propagate": true, "metadata": {}}
}
"""


@pytest.fixture
def reference_json() -> str:
    """A ``clients.json`` as the reference hub 4.0.0 writes it (see the comment above)."""
    return REFERENCE_CLIENTS_JSON
