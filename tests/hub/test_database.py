"""Client database contract, run against every built-in backend (sqlite, redis, json)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hivemind_bus_client.router import Permissions
from hivemind_core.config import HubConfig
from hivemind_core.database import (
    DEFAULT_ALLOWED_TYPES,
    BackendUnavailable,
    Client,
    ClientDatabase,
    DuplicateClientError,
    InvalidClientError,
    available_backends,
    open_database,
)
from hivemind_core.db.json_db import JsonDatabase
from hivemind_core.db.sqlite_db import SQLiteDatabase

BACKENDS = ["sqlite", "redis", "json"]


@pytest.fixture(params=BACKENDS)
def opener(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[], ClientDatabase]]:
    """A factory opening the same database again (a second connection), per backend."""
    backend = request.param
    opened: list[ClientDatabase] = []
    if backend == "redis":
        url = request.getfixturevalue("redis_server")
        config = HubConfig(
            database="redis", redis_url=url, redis_prefix=f"test-{uuid.uuid4().hex[:8]}"
        )
    else:
        suffix = "db" if backend == "sqlite" else "json"
        config = HubConfig(database=backend, db_path=str(tmp_path / f"clients.{suffix}"))

    def open_() -> ClientDatabase:
        db = open_database(config)
        opened.append(db)
        return db

    open_.config = config  # type: ignore[attr-defined]
    yield open_
    for db in opened:
        db.close()


@pytest.fixture
def db(opener: Callable[[], ClientDatabase]) -> ClientDatabase:
    return opener()


# ---- add / get ----------------------------------------------------------


def test_add_client_generates_credentials_and_default_role(db: ClientDatabase) -> None:
    client = db.add_client("kitchen")
    assert client.client_id >= 1
    assert len(client.api_key) == 32 and int(client.api_key, 16) >= 0
    assert client.password and len(client.password) == 32 and client.password != client.api_key
    assert client.crypto_key is None
    assert client.allowed_types == list(DEFAULT_ALLOWED_TYPES)
    assert "recognizer_loop:utterance" in client.allowed_types
    assert not client.is_admin
    stored = db.get_client(client.client_id)
    assert stored == client
    other = db.add_client("hall")
    assert other.client_id > client.client_id
    assert other.api_key != client.api_key and other.password != client.password


def test_add_client_with_given_fields(db: ClientDatabase) -> None:
    client = db.add_client(
        "Büro",
        api_key="key-1",
        password="pw",
        crypto_key="0123456789abcdef",
        is_admin=True,
        allowed_types=["speak"],
        skill_blacklist=["skill.x"],
        metadata={"site": "Büro"},
    )
    got = db.get_client_by_api_key("key-1")
    assert got is not None
    assert (got.name, got.password, got.crypto_key, got.is_admin) == (
        "Büro",
        "pw",
        "0123456789abcdef",
        True,
    )
    assert got.allowed_types == ["speak"] and got.skill_blacklist == ["skill.x"]
    assert got.metadata == {"site": "Büro"}
    assert got.client_id == client.client_id


def test_add_client_rejects_duplicate_reserved_and_bad_keys(db: ClientDatabase) -> None:
    db.add_client("a", api_key="same")
    with pytest.raises(DuplicateClientError):
        db.add_client("b", api_key="same")
    for bad in ("revoked", "", "  ", "a:b"):
        with pytest.raises(InvalidClientError):
            db.add_client("c", api_key=bad)
    with pytest.raises(InvalidClientError):
        db.add_client("d", is_admin="yes")
    with pytest.raises(InvalidClientError):
        db.add_client("e", no_such_field=1)
    assert [c.name for c in db.list_clients()] == ["a"]


def test_lookups_of_unknown_return_none(db: ClientDatabase) -> None:
    db.add_client("a", api_key="k")
    assert db.get_client(999) is None
    assert db.get_client_by_api_key("nope") is None
    assert db.get_client_by_api_key("") is None
    assert db.get_client_by_api_key("K") is None  # case matters
    assert db.find("999") is None
    assert db.find("") is None


def test_find_by_id_or_key(db: ClientDatabase) -> None:
    a = db.add_client("a", api_key="alpha")
    b = db.add_client("b", api_key="12345")  # numeric key, no client with that id
    assert db.find(str(a.client_id)).name == "a"
    assert db.find("alpha").name == "a"
    assert db.find(" alpha ").name == "a"
    assert db.find("12345").client_id == b.client_id


def test_list_clients_ordered_and_len(db: ClientDatabase) -> None:
    ids = [db.add_client(f"n{i}").client_id for i in range(5)]
    assert [c.client_id for c in db.list_clients()] == sorted(ids)
    assert len(db) == 5
    assert [c.name for c in db.get_clients_by_name("n3")] == ["n3"]


# ---- update / delete ----------------------------------------------------


def test_update_client_round_trips_every_field(db: ClientDatabase) -> None:
    client = db.add_client("a")
    client.name = "Wohnzimmer ✓"
    client.description = "d"
    client.is_admin = True
    client.intent_blacklist = ["skill:intent"]
    client.skill_blacklist = ["skill"]
    client.message_blacklist = ["speak"]
    client.allowed_types = ["recognizer_loop:utterance", "x"]
    client.crypto_key = "k" * 16
    client.password = "new"
    client.can_broadcast = client.can_escalate = client.can_propagate = False
    client.metadata = {"noise_pubkey": "abc", "nested": {"a": [1, 2]}}
    client.last_seen = 12.5
    db.update_client(client)
    assert db.get_client(client.client_id) == client
    assert db.get_client_by_api_key(client.api_key) == client


def test_update_changes_key_and_old_key_stops_matching(db: ClientDatabase) -> None:
    client = db.add_client("a", api_key="old")
    db.add_client("b", api_key="taken")
    client.api_key = "new"
    db.update_client(client)
    assert db.get_client_by_api_key("old") is None
    assert db.get_client_by_api_key("new").client_id == client.client_id
    client.api_key = "taken"
    with pytest.raises(DuplicateClientError):
        db.update_client(client)
    assert db.get_client_by_api_key("new").client_id == client.client_id
    client.api_key = "revoked"
    with pytest.raises(InvalidClientError):
        db.update_client(client)


def test_update_unknown_client_raises_key_error(db: ClientDatabase) -> None:
    with pytest.raises(KeyError):
        db.update_client(Client(client_id=42, api_key="x"))
    assert db.list_clients() == []


def test_delete_is_for_good(db: ClientDatabase) -> None:
    a = db.add_client("a", api_key="gone", password="pw")
    b = db.add_client("b")
    assert db.delete_client(a.client_id) is True
    assert db.get_client(a.client_id) is None
    assert db.get_client_by_api_key("gone") is None
    assert db.find("gone") is None and db.find(str(a.client_id)) is None
    # the reference's tombstone key authenticates nothing
    assert db.get_client_by_api_key("revoked") is None
    assert [c.client_id for c in db.list_clients()] == [b.client_id]
    assert db.delete_client(a.client_id) is False
    # ids are never reused, and the key may be issued again to a new client
    c = db.add_client("c", api_key="gone")
    assert c.client_id > b.client_id
    assert db.get_client_by_api_key("gone").name == "c"


# ---- touch / revision ---------------------------------------------------


def test_revision_bumps_on_writes_not_on_touch(db: ClientDatabase) -> None:
    r0 = db.revision()
    client = db.add_client("a")
    r1 = db.revision()
    assert r1 > r0
    db.touch(client.client_id, 1234.5)
    assert db.revision() == r1
    assert db.get_client(client.client_id).last_seen == 1234.5
    client = db.get_client(client.client_id)
    client.allowed_types.append("speak")
    db.update_client(client)
    r2 = db.revision()
    assert r2 > r1
    db.delete_client(client.client_id)
    assert db.revision() > r2
    db.touch(client.client_id, 1.0)  # deleted: a no-op, no resurrection
    assert db.get_client(client.client_id) is None


def test_second_connection_sees_changes_and_revision(opener: Callable[[], ClientDatabase]) -> None:
    hub, cli = opener(), opener()
    client = cli.add_client("a", api_key="shared")
    assert hub.get_client_by_api_key("shared") is not None
    before = hub.revision()
    edited = cli.get_client(client.client_id)
    edited.can_escalate = False
    cli.update_client(edited)
    assert hub.revision() != before
    assert Permissions.from_record(hub.get_client(client.client_id)).can_escalate is False
    after_edit = hub.revision()
    cli.delete_client(client.client_id)
    assert hub.revision() != after_edit
    assert hub.get_client_by_api_key("shared") is None


def test_revision_changes_across_processes(opener: Callable[[], ClientDatabase]) -> None:
    """A permission edit by another process (the CLI) is visible to the hub's poll."""
    hub = opener()
    client = hub.add_client("a")
    config = opener.config  # type: ignore[attr-defined]
    before = hub.revision()
    code = (
        "import sys; from hivemind_core.config import HubConfig; from hivemind_core.database import open_database\n"
        f"db = open_database(HubConfig(database={config.database!r}, db_path={config.db_path!r}, "
        f"redis_url={config.redis_url!r}, redis_prefix={config.redis_prefix!r}))\n"
        f"c = db.get_client({client.client_id}); c.is_admin = True; db.update_client(c); db.close()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert hub.revision() != before
    assert hub.get_client(client.client_id).is_admin is True


def test_permissions_from_record(db: ClientDatabase) -> None:
    client = db.add_client("a", message_blacklist=["speak"], can_broadcast=False)
    perms = Permissions.from_record(db.get_client(client.client_id))
    assert perms.allowed_types == frozenset(DEFAULT_ALLOWED_TYPES)
    assert perms.message_blacklist == frozenset({"speak"})
    assert perms.can_broadcast is False and perms.is_admin is False


def test_concurrent_adds_from_threads(db: ClientDatabase) -> None:
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(5):
                db.add_client(f"t{n}-{i}")
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    clients = db.list_clients()
    assert len(clients) == 20
    assert len({c.client_id for c in clients}) == 20
    assert len({c.api_key for c in clients}) == 20


# ---- open_database ------------------------------------------------------


def test_open_database_default_is_sqlite_under_xdg_data(xdg: Path) -> None:
    with open_database() as db:
        assert isinstance(db, SQLiteDatabase)
        db.add_client("a")
    assert (xdg / "data" / "hivemind-core" / "clients.db").is_file()


def test_open_database_backends_and_aliases(tmp_path: Path) -> None:
    assert {"sqlite", "redis", "json"} <= set(available_backends())
    with open_database(backend="hivemind-json-db-plugin", path=str(tmp_path / "c.json")) as db:
        assert isinstance(db, JsonDatabase)
    with pytest.raises(BackendUnavailable, match="unknown database backend 'nope'"):
        open_database(backend="nope")


def test_open_redis_without_server_is_a_clear_error() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(BackendUnavailable, match="cannot reach redis"):
        open_database(backend="redis", url=f"redis://user:secret@127.0.0.1:{port}/0")
    try:
        open_database(backend="redis", url=f"redis://user:secret@127.0.0.1:{port}/0")
    except BackendUnavailable as exc:
        assert "secret" not in str(exc)


def test_sqlite_unusable_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "clients.db"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(BackendUnavailable):
        open_database(backend="sqlite", path=str(bad))


def test_json_backend_writes_reference_layout(tmp_path: Path) -> None:
    path = tmp_path / "clients.json"
    with JsonDatabase(path) as db:
        client = db.add_client("a", api_key="k", metadata={"x": 1})
    data = json.loads(path.read_text(encoding="utf-8"))
    assert list(data) == [str(client.client_id)]
    record = data[str(client.client_id)]
    assert set(record) == set(Client.FIELD_NAMES)
    assert record["api_key"] == "k" and record["metadata"] == {"x": 1}


def test_json_backend_buffers_touch_until_flush(tmp_path: Path) -> None:
    now = [0.0]
    path = tmp_path / "clients.json"
    db = JsonDatabase(path, flush_interval=30, clock=lambda: now[0])
    client = db.add_client("a")
    db.touch(client.client_id, 50.0)
    assert json.loads(path.read_text())[str(client.client_id)]["last_seen"] == -1
    assert db.get_client(client.client_id).last_seen == 50.0
    now[0] = 31.0
    db.touch(client.client_id, 60.0)
    assert json.loads(path.read_text())[str(client.client_id)]["last_seen"] == 60.0
    db.touch(client.client_id, 70.0)
    db.close()
    assert json.loads(path.read_text())[str(client.client_id)]["last_seen"] == 70.0


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[1, 2]",
        '{"1": "x"}',
        '{"ciphertext": "abc", "nonce": "x"}',
        '{"1": {"name": "no key"}}',
    ],
)
def test_json_backend_rejects_bad_files(tmp_path: Path, text: str) -> None:
    path = tmp_path / "clients.json"
    path.write_text(text)
    with pytest.raises(BackendUnavailable):
        JsonDatabase(path)
