"""The v3 commands of ``hivemind-core`` (click's CliRunner) on a real database, every backend.

``reset-noise-pin``, ``set-min-protocol``, ``derive-psk`` and ``listen
--min-protocol-version``; and the pin written by a hub (``record_pin``) read
back through each backend, so the row fields survive sqlite, json and redis.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from click.testing import CliRunner

from hivemind_core.cli import cli
from hivemind_core.config import HubConfig
from hivemind_core.database import ClientDatabase, open_database
from hivemind_core.noise_keys import (
    MIN_VERSION_FIELD,
    PIN_FIELD,
    NoiseHub,
    create_noise_key,
    record_pin,
)

PIN = "8f40c5adb68f25624ae5b214ea767a6ec94d829d3d7b5e1ad1ba6f3e2138285f"


class Backend:
    def __init__(self, env: dict[str, str], config: HubConfig) -> None:
        self.env, self.config = env, config

    def open(self) -> ClientDatabase:
        return open_database(self.config)


@pytest.fixture(params=["sqlite", "json", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    name = request.param
    env = {
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "HIVEMIND_DB_BACKEND": name,
    }
    if name == "redis":
        url = request.getfixturevalue("redis_server")
        prefix = f"test-{uuid.uuid4().hex[:8]}"
        env.update(HIVEMIND_REDIS_URL=url, HIVEMIND_REDIS_PREFIX=prefix)
        config = HubConfig(database="redis", redis_url=url, redis_prefix=prefix)
    else:
        path = str(tmp_path / ("clients.db" if name == "sqlite" else "clients.json"))
        env["HIVEMIND_DB_PATH"] = path
        config = HubConfig(database=name, db_path=path)
    yield Backend(env, config)


def run(backend: Backend, *args: str) -> Any:
    result = CliRunner().invoke(cli, list(args), env=backend.env, catch_exceptions=False)
    return result


def test_a_pin_written_by_the_hub_is_reset_by_the_cli(backend: Backend) -> None:
    db = backend.open()
    try:
        row = db.add_client("sat", password="pw-long-enough-for-v3")
        assert record_pin(db, row.client_id, PIN)
        assert not record_pin(db, row.client_id, "00" * 32)  # first use wins
    finally:
        db.close()
    db = backend.open()
    try:
        assert db.get_client(row.client_id).metadata[PIN_FIELD] == PIN
    finally:
        db.close()
    result = run(backend, "reset-noise-pin", str(row.client_id))
    assert result.exit_code == 0, result.output
    assert PIN in result.output
    db = backend.open()
    try:
        assert PIN_FIELD not in db.get_client(row.client_id).metadata
    finally:
        db.close()
    again = run(backend, "reset-noise-pin", str(row.client_id))
    assert again.exit_code == 0 and "has no Noise pin" in again.output


def test_set_min_protocol_sets_and_clears_the_rows_floor(backend: Backend) -> None:
    db = backend.open()
    try:
        row = db.add_client("sat", password="pw-long-enough-for-v3")
    finally:
        db.close()
    noise = NoiseHub(create_noise_key())
    result = run(backend, "set-min-protocol", str(row.client_id), "3")
    assert result.exit_code == 0, result.output
    db = backend.open()
    try:
        stored = db.get_client(row.client_id)
        assert stored.metadata[MIN_VERSION_FIELD] == 3
        assert noise.min_version(stored) == 3
        settings = noise.settings_for(stored, "node")
        assert settings is not None and settings.min_protocol_version == 3
    finally:
        db.close()
    assert run(backend, "set-min-protocol", str(row.client_id), "1").exit_code == 0
    db = backend.open()
    try:
        assert noise.min_version(db.get_client(row.client_id)) == 1
    finally:
        db.close()
    bad = CliRunner().invoke(cli, ["set-min-protocol", str(row.client_id), "2"], env=backend.env)
    assert bad.exit_code != 0


def test_derive_psk_prints_the_vector_psk() -> None:
    result = CliRunner().invoke(
        cli,
        ["derive-psk", "--password", "hivemind-v3-vector-2026-Kx9q", "--node-id", "test-node-id"],
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip() == (
        "9978aa4eefff56bffad03405579332207f1e1e4606fda241e5bd31137d8f6084"
    )


def test_listen_takes_the_hub_wide_floor(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path / "c"), "XDG_DATA_HOME": str(tmp_path / "d")}
    seen: list[HubConfig] = []
    with mock.patch("hivemind_core.service.run", seen.append):
        result = CliRunner().invoke(cli, ["listen", "--min-protocol-version", "3"], env=env)
        assert result.exit_code == 0, result.output
        plain = CliRunner().invoke(cli, ["listen"], env=env)
        assert plain.exit_code == 0, plain.output
    assert [c.min_protocol_version for c in seen] == [3, 1]
    assert HubConfig.from_dict({"min_protocol_version": 3}).min_protocol_version == 3
