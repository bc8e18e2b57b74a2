"""Import of the reference hub's clients.json, and copies between backends."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hivemind_core.config import HubConfig
from hivemind_core.database import (
    DEFAULT_ALLOWED_TYPES,
    BackendUnavailable,
    ClientDatabase,
    open_database,
)
from hivemind_core.db.json_db import JsonDatabase
from hivemind_core.db.migration import copy_clients, import_reference_json
from hivemind_core.db.sqlite_db import SQLiteDatabase


@pytest.fixture(params=["sqlite", "redis", "json"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ClientDatabase]:
    if request.param == "redis":
        url = request.getfixturevalue("redis_server")
        config = HubConfig(
            database="redis", redis_url=url, redis_prefix=f"mig-{uuid.uuid4().hex[:8]}"
        )
    else:
        config = HubConfig(
            database=request.param, db_path=str(tmp_path / f"target.{request.param}")
        )
    db = open_database(config)
    yield db
    db.close()


@pytest.fixture
def reference_file(tmp_path: Path, reference_json: str) -> Path:
    path = tmp_path / "ref" / "clients.json"
    path.parent.mkdir()
    path.write_text(reference_json, encoding="utf-8")
    return path


def test_import_keeps_every_field(reference_file: Path, target: ClientDatabase) -> None:
    report = import_reference_json(reference_file, target)
    assert (report.imported, report.updated, report.skipped) == (3, 0, [])
    assert report.tombstones == [2]
    assert [c.client_id for c in target.list_clients()] == [1, 3, 4]

    sat1 = target.get_client_by_api_key("k1")
    assert sat1.client_id == 1 and sat1.name == "sat1" and sat1.password == "p1"
    assert sat1.crypto_key == "adfd20a5f9bba4a0"
    assert (
        sat1.skill_blacklist == [] and sat1.intent_blacklist == [] and sat1.message_blacklist == []
    )
    assert sat1.allowed_types == ["recognizer_loop:utterance", "recognizer_loop:record_begin"]
    assert target.get_client_by_api_key("k1-old") is None

    buero = target.get_client(3)
    assert buero.name == "Büro" and buero.description == "upstairs" and buero.is_admin is True
    assert buero.last_seen == 1700000000.5
    assert buero.intent_blacklist == ["weather.skill:WeatherIntent"]
    assert buero.skill_blacklist == ["jokes.skill"] and buero.message_blacklist == ["speak"]
    # the reference adds the utterance type on every load; the imported client keeps that right
    assert buero.allowed_types == ["speak:b64_audio", "recognizer_loop:utterance"]
    assert (buero.can_broadcast, buero.can_escalate, buero.can_propagate) == (False, False, True)
    assert buero.crypto_key == "177a4da72c846cab" and buero.password == "7e7f7301f6b25eca"
    # unknown fields are kept, nothing lost
    assert buero.metadata == {"noise_pubkey": "abcd", "site_id": "kitchen", "extra_list": [1, 2]}

    empty = target.get_client(4)
    assert empty.allowed_types == list(
        DEFAULT_ALLOWED_TYPES
    )  # the reference's default for an empty list
    assert empty.password is None


def test_tombstone_never_authenticates_and_its_id_stays_unused(
    reference_file: Path, target: ClientDatabase
) -> None:
    import_reference_json(reference_file, target)
    assert target.get_client_by_api_key("revoked") is None
    assert target.find("revoked") is None
    assert target.get_client(2) is None
    new = target.add_client("new")
    assert new.client_id == 5


def test_import_is_idempotent_and_reports_collisions(
    reference_file: Path, target: ClientDatabase
) -> None:
    import_reference_json(reference_file, target)
    again = import_reference_json(reference_file, target)
    assert (again.imported, again.updated, again.skipped) == (0, 3, [])
    assert len(target.list_clients()) == 3
    other = target.get_client(4)
    other.api_key = "changed"
    target.update_client(other)
    collide = import_reference_json(reference_file, target)
    assert [cid for cid, _ in collide.skipped] == [4]
    assert target.get_client(4).api_key == "changed"


def test_export_round_trip_through_reference_layout(
    reference_file: Path, target: ClientDatabase, tmp_path: Path
) -> None:
    import_reference_json(reference_file, target)
    out = tmp_path / "out.json"
    with JsonDatabase(out) as json_db:
        copy_clients(target, json_db)
    data = json.loads(out.read_text(encoding="utf-8"))
    assert sorted(data) == ["1", "3", "4"]
    assert data["3"]["metadata"]["site_id"] == "kitchen"
    with SQLiteDatabase(tmp_path / "again.db") as again:
        report = import_reference_json(out, again)
        assert report.imported == 3
        assert again.list_clients() == target.list_clients()


def test_sqlite_imports_reference_file_on_first_start(xdg: Path, reference_json: str) -> None:
    data = xdg / "data" / "hivemind-core"
    data.mkdir(parents=True)
    (data / "clients.json").write_text(reference_json, encoding="utf-8")
    with open_database() as db:
        assert [c.client_id for c in db.list_clients()] == [1, 3, 4]
        db.delete_client(1)
    assert (data / "clients.json").read_text(encoding="utf-8") == reference_json  # untouched
    with open_database() as db:  # not imported again once the db exists
        assert [c.client_id for c in db.list_clients()] == [3, 4]


def test_import_of_missing_or_encrypted_file_fails_clearly(tmp_path: Path) -> None:
    with SQLiteDatabase(tmp_path / "t.db") as db:
        with pytest.raises(BackendUnavailable, match="does not exist"):
            import_reference_json(tmp_path / "none.json", db)
        enc = tmp_path / "enc.json"
        enc.write_text('{"ciphertext": "x", "tag": "y", "nonce": "z"}')
        with pytest.raises(BackendUnavailable, match="encrypted"):
            import_reference_json(enc, db)


@pytest.mark.interop
def test_import_file_written_by_the_reference_cli(tmp_path: Path) -> None:
    """Generate clients.json with the real reference CLI, then import it."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import refenv

    refenv.ensure()  # builds the throwaway reference venv on first use (cached)
    ref_cli = refenv.python_path().parent / "hivemind-core"
    env = dict(
        os.environ,
        XDG_DATA_HOME=str(tmp_path / "data"),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        XDG_STATE_HOME=str(tmp_path / "state"),
    )

    def ref(*args: str) -> None:
        subprocess.run([str(ref_cli), *args], env=env, check=True, capture_output=True, timeout=120)

    ref("add-client", "--name", "sat1", "--access-key", "k1", "--password", "p1")
    ref("add-client", "--name", "sat2", "--access-key", "k2")
    ref("add-client", "--name", "Büro", "--access-key", "k3", "--admin", "true")
    ref("delete-client", "2")
    ref("blacklist-msg", "speak:b64_audio", "1")
    source = tmp_path / "data" / "hivemind-core" / "clients.json"
    with SQLiteDatabase(tmp_path / "ours.db") as db:
        report = import_reference_json(source, db)
        assert report.imported == 2 and report.tombstones == [2]
        sat1 = db.get_client_by_api_key("k1")
        assert sat1.password == "p1" and len(sat1.crypto_key or "") == 16
        assert "speak:b64_audio" not in sat1.allowed_types
        assert db.get_client_by_api_key("k3").is_admin is True
        assert db.get_client_by_api_key("k3").name == "Büro"
        assert (
            db.get_client_by_api_key("revoked") is None and db.get_client_by_api_key("k2") is None
        )
