"""The ``hivemind-core`` admin CLI, run as a separate process like an operator would."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from hivemind_bus_client.router import Permissions
from hivemind_core.database import DEFAULT_ALLOWED_TYPES, Client, ClientDatabase, open_database

Run = Callable[..., Any]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIVEMIND_")}
    env.update(
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        XDG_DATA_HOME=str(tmp_path / "data"),
        XDG_STATE_HOME=str(tmp_path / "state"),
        PYTHONIOENCODING="utf-8",
    )
    env.update(extra)
    return env


class _Result:
    """What one CLI invocation produced (the shape of ``subprocess.CompletedProcess``)."""

    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def _invoke_in_process(args: Sequence[str], env: dict[str, str], stdin: str | None) -> _Result:
    """Run ``hivemind_core.cli.main`` here, with ``env`` and captured streams.

    Same code path as the console script (``main`` and its error handling), a
    lot faster than a new interpreter; a few tests below still spawn real
    processes to cover the entry point and the cross-process cases.
    """
    from hivemind_core import cli

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with (
        mock.patch.dict(os.environ, env, clear=True),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        mock.patch("sys.stdin", io.StringIO(stdin or "")),
    ):
        try:
            cli.main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return _Result(code, out.getvalue(), err.getvalue())


def _runner(env: dict[str, str], *, spawn: bool = False) -> Run:
    def run(*args: str, ok: bool = True, stdin: str | None = None) -> Any:
        if spawn:
            proc: Any = subprocess.run(
                [sys.executable, "-m", "hivemind_core.cli", *args],
                env=env,
                capture_output=True,
                text=True,
                encoding="utf-8",
                timeout=60,
                input=stdin,
            )
        else:
            proc = _invoke_in_process(args, env, stdin)
        assert "Traceback" not in proc.stderr, proc.stderr
        if ok:
            assert proc.returncode == 0, proc.stderr
        else:
            assert proc.returncode != 0, proc.stdout
            lines = proc.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
        return proc

    return run


@pytest.fixture
def run(tmp_path: Path) -> Run:
    """The CLI on the default (sqlite) database under a private XDG tree."""
    return _runner(_env(tmp_path))


@pytest.fixture
def spawn(tmp_path: Path) -> Run:
    """Like ``run``, but as a separate ``python -m hivemind_core.cli`` process."""
    return _runner(_env(tmp_path), spawn=True)


@pytest.fixture
def db(tmp_path: Path, xdg: Path) -> Iterator[ClientDatabase]:
    """The database the CLI of ``run`` uses, opened in this process (like the hub)."""
    database = open_database()
    yield database
    database.close()


def _add(run: Run, *args: str) -> dict[str, str]:
    out = run("add-client", *args).stdout
    fields = {}
    for line in out.splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            fields[key] = value
    return fields


# ---- add-client -------------------------------------------------------------


def test_add_client_prints_credentials_and_default_role(spawn: Run, db: ClientDatabase) -> None:
    proc = spawn("add-client")
    out = proc.stdout
    assert "Credentials added to database!" in out and "Database backend: sqlite" in out
    for msg_type in DEFAULT_ALLOWED_TYPES:
        assert f"  - {msg_type}" in out
    info = {k: v for k, _, v in (line.partition(": ") for line in out.splitlines()) if v}
    client = db.get_client_by_api_key(info["Access Key"])
    assert client is not None
    assert str(client.client_id) == info["Node ID"]
    assert client.password == info["Password"] and len(client.password) == 32
    assert client.name == info["Friendly Name"] == "HiveMind-Node-0"
    assert info["Admin Privileges"] == "False"
    assert "Encryption Key" not in info and client.crypto_key is None


def test_add_client_with_every_option(run: Run, db: ClientDatabase) -> None:
    proc = run(
        "add-client",
        "--name",
        "Büro",
        "--access-key",
        "k1",
        "--password",
        "pw",
        "--crypto-key",
        "0123456789abcdef",
        "--admin",
        "true",
    )
    assert "Encryption Key: 0123456789abcdef" in proc.stdout
    assert "deprecated" in proc.stderr
    client = db.get_client_by_api_key("k1")
    assert (client.name, client.password, client.crypto_key, client.is_admin) == (
        "Büro",
        "pw",
        "0123456789abcdef",
        True,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--crypto-key", "short"), "exactly 16 characters"),
        (("--access-key", "revoked"), "reserved"),
        (("--access-key", "a:b"), "':'"),
        (("--admin", "maybe"), "--admin"),
        (("--bogus",), "--bogus"),
    ],
)
def test_add_client_errors(
    spawn: Run, db: ClientDatabase, args: tuple[str, ...], message: str
) -> None:
    proc = spawn("add-client", *args, ok=False)
    assert message in proc.stderr
    assert db.list_clients() == []


def test_add_client_duplicate_key_is_refused(run: Run, db: ClientDatabase) -> None:
    run("add-client", "--access-key", "k1", "--password", "first")
    proc = run("add-client", "--access-key", "k1", ok=False)
    assert "already in use" in proc.stderr
    assert db.get_client_by_api_key("k1").password == "first"
    assert len(db.list_clients()) == 1


# ---- list / rename / admin --------------------------------------------------


def test_list_clients_table(run: Run) -> None:
    assert "No clients" in run("list-clients").stdout
    _add(run, "--name", "sat1", "--access-key", "key-one", "--password", "pw1")
    _add(run, "--name", "Büro", "--access-key", "key-two", "--admin", "true")
    out = run("list-clients").stdout
    assert out.startswith("HiveMind Credentials:")
    header = next(line for line in out.splitlines() if line.startswith("| ID"))
    assert [h.strip() for h in header.strip("|").split("|")] == [
        "ID",
        "Name",
        "Access Key",
        "Password",
        "Crypto Key",
        "Admin",
        "Last Seen",
    ]
    rows = [
        line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| ID")
    ]
    assert len(rows) == 2
    assert "sat1" in rows[0] and "key-one" in rows[0] and "pw1" in rows[0] and "never" in rows[0]
    assert "Büro" in rows[1] and "yes" in rows[1]


def test_rename_by_id_and_by_key(run: Run, db: ClientDatabase) -> None:
    info = _add(run, "--name", "old", "--access-key", "k1")
    assert (
        run("rename-client", info["Node ID"], "--name", "new").stdout.strip()
        == "Renamed 'old' to new"
    )
    assert run("rename-client", "k1", "--name", "Küche").stdout.strip() == "Renamed 'new' to Küche"
    assert db.get_client_by_api_key("k1").name == "Küche"
    proc = run("rename-client", "k1", ok=False)
    assert "--name" in proc.stderr


def test_make_and_revoke_admin(run: Run, db: ClientDatabase) -> None:
    _add(run, "--name", "sat", "--access-key", "k1")
    assert run("make-admin", "k1").stdout.strip() == "Gave administrator powers to sat"
    assert db.get_client_by_api_key("k1").is_admin is True
    assert run("make-admin", "k1").stdout.strip() == "sat is already an administrator!"
    assert run("revoke-admin", "k1").stdout.strip() == "Revoked administrator powers for sat"
    assert db.get_client_by_api_key("k1").is_admin is False
    assert run("revoke-admin", "k1").stdout.strip() == "sat is not an administrator"


@pytest.mark.parametrize("what", ["escalate", "propagate", "broadcast"])
def test_flag_commands(run: Run, db: ClientDatabase, what: str) -> None:
    _add(run, "--name", "sat", "--access-key", "k1")
    field = f"can_{what}"
    assert getattr(db.get_client_by_api_key("k1"), field) is True
    assert "already allowed" in run(f"allow-{what}", "k1").stdout
    assert run(f"blacklist-{what}", "k1").stdout.strip() == f"Blacklisted sat from {what} messages"
    assert getattr(db.get_client_by_api_key("k1"), field) is False
    assert "already blacklisted" in run(f"blacklist-{what}", "k1").stdout
    assert run(f"allow-{what}", "1").stdout.strip() == f"Allowed sat to {what} messages"
    assert getattr(db.get_client_by_api_key("k1"), field) is True


# ---- lists ------------------------------------------------------------------


def test_allow_and_blacklist_msg(run: Run, db: ClientDatabase) -> None:
    _add(run, "--name", "sat", "--access-key", "k1")
    assert run("allow-msg", "speak", "k1").stdout.strip() == "Allowed 'speak' for sat"
    assert db.get_client_by_api_key("k1").allowed_types[-1] == "speak"
    assert run("allow-msg", "speak", "k1").stdout.strip() == "Client sat already allowed 'speak'"
    assert db.get_client_by_api_key("k1").allowed_types.count("speak") == 1
    assert (
        run("blacklist-msg", "speak:b64_audio", "k1").stdout.strip()
        == "Blacklisted 'speak:b64_audio' for sat"
    )
    allowed = db.get_client_by_api_key("k1").allowed_types
    assert "speak:b64_audio" not in allowed and "speak" in allowed
    assert "already blacklisted" in run("blacklist-msg", "speak:b64_audio", "k1").stdout
    # removing the utterance type sticks (the reference silently re-adds it)
    run("blacklist-msg", "recognizer_loop:utterance", "k1")
    assert "recognizer_loop:utterance" not in db.get_client_by_api_key("k1").allowed_types


@pytest.mark.parametrize(
    ("noun", "field", "item"),
    [
        ("skill", "skill_blacklist", "jokes.skill"),
        ("intent", "intent_blacklist", "weather.skill:WeatherIntent"),
    ],
)
def test_skill_and_intent_blacklists(
    run: Run, db: ClientDatabase, noun: str, field: str, item: str
) -> None:
    _add(run, "--name", "sat", "--access-key", "k1")
    assert "is not blacklisted" in run(f"allow-{noun}", item, "k1").stdout
    assert run(f"blacklist-{noun}", item, "k1").stdout.strip() == f"Blacklisted '{item}' for sat"
    assert getattr(db.get_client_by_api_key("k1"), field) == [item]
    assert "already blacklisted" in run(f"blacklist-{noun}", item, "k1").stdout
    assert run(f"allow-{noun}", item, "k1").stdout.strip() == f"Allowed '{item}' for sat"
    assert getattr(db.get_client_by_api_key("k1"), field) == []


def test_cli_edit_bumps_revision_seen_by_a_running_hub(spawn: Run, db: ClientDatabase) -> None:
    client = db.add_client("sat", api_key="k1")
    before = db.revision()
    spawn("blacklist-escalate", "k1")
    after = db.revision()
    assert after != before
    assert Permissions.from_record(db.get_client(client.client_id)).can_escalate is False
    spawn("blacklist-msg", "recognizer_loop:utterance", "k1")
    assert db.revision() != after
    assert (
        "recognizer_loop:utterance"
        not in Permissions.from_record(db.get_client(client.client_id)).allowed_types
    )


# ---- delete -----------------------------------------------------------------


def test_delete_client_removes_credentials_for_good(run: Run, db: ClientDatabase) -> None:
    _add(run, "--name", "gone", "--access-key", "k1")
    _add(run, "--name", "stays", "--access-key", "k2")
    out = run("delete-client", "k1").stdout
    assert "Deleted client" in out and "Access Key: k1" in out
    assert db.get_client_by_api_key("k1") is None
    assert db.get_client_by_api_key("revoked") is None
    assert [c.name for c in db.list_clients()] == ["stays"]
    listing = run("list-clients").stdout
    assert "gone" not in listing and "revoked" not in listing
    assert "no client" in run("delete-client", "k1", ok=False).stderr
    assert "no client" in run("delete-client", "1", ok=False).stderr
    assert "no client" in run("delete-client", "revoked", ok=False).stderr


# ---- addressing errors --------------------------------------------------------

ADDRESSED = [
    ("delete-client",),
    ("rename-client", "--name", "x"),
    ("make-admin",),
    ("revoke-admin",),
    ("allow-msg", "t"),
    ("blacklist-msg", "t"),
    ("allow-skill", "s"),
    ("blacklist-skill", "s"),
    ("allow-intent", "i"),
    ("blacklist-intent", "i"),
    ("allow-escalate",),
    ("blacklist-escalate",),
    ("allow-propagate",),
    ("blacklist-propagate",),
    ("allow-broadcast",),
    ("blacklist-broadcast",),
]


@pytest.mark.parametrize("command", ADDRESSED, ids=lambda c: c[0])
def test_unknown_client_is_one_line_error(run: Run, command: tuple[str, ...]) -> None:
    proc = run(*command, ok=False)
    assert "there are no clients" in proc.stderr
    _add(run, "--name", "a")
    _add(run, "--name", "b")
    name, *rest = command
    args = [name, *rest[:1]] if name != "rename-client" else [name]
    proc = (
        run(*args, "99", *rest[1:], ok=False)
        if name != "rename-client"
        else run(name, "99", "--name", "x", ok=False)
    )
    assert "no client with id or access key '99'" in proc.stderr
    proc = (
        run(*args, *rest[1:], ok=False)
        if name != "rename-client"
        else run(name, "--name", "x", ok=False)
    )
    assert "several clients exist" in proc.stderr


def test_single_client_is_selected_without_an_id(run: Run, db: ClientDatabase) -> None:
    _add(run, "--name", "only", "--access-key", "k1")
    assert run("make-admin").stdout.strip() == "Gave administrator powers to only"
    assert db.get_client_by_api_key("k1").is_admin is True


# ---- export / config / misc -------------------------------------------------


def test_export_clients(run: Run, tmp_path: Path) -> None:
    _add(run, "--name", "sat1", "--access-key", "k1", "--password", "p1")
    _add(
        run,
        "--name",
        "Büro",
        "--access-key",
        "k2",
        "--password",
        "p2",
        "--crypto-key",
        "0123456789abcdef",
    )
    rows = list(csv.reader(io.StringIO(run("export-clients").stdout)))
    assert rows == [
        ["client_id", "name", "is_admin", "access_key", "password", "crypto_key"],
        ["1", "sat1", "False", "k1", "p1", ""],
        ["2", "Büro", "False", "k2", "p2", "0123456789abcdef"],
    ]
    out_file = tmp_path / "x" / "clients.csv"
    assert "Exported 2 client(s)" in run("export-clients", "--path", str(out_file)).stdout
    assert out_file.read_text(encoding="utf-8").splitlines()[1] == "1,sat1,False,k1,p1,"
    run("export-clients", "--path", str(tmp_path))
    assert (tmp_path / "hivemind_clients.csv").read_text(encoding="utf-8").count("\n") == 3


def test_print_config(run: Run, tmp_path: Path) -> None:
    data = json.loads(run("print-config").stdout)
    assert data["port"] == 5678 and data["database"] == "sqlite"
    custom = tmp_path / "server.json"
    custom.write_text(json.dumps({"port": 9999, "my_key": "kept"}))
    data = json.loads(run("--config", str(custom), "--db-backend", "json", "print-config").stdout)
    assert data["port"] == 9999 and data["my_key"] == "kept" and data["database"] == "json"
    custom.write_text("{broken")
    assert "not valid JSON" in run("--config", str(custom), "print-config", ok=False).stderr


def test_unknown_command_and_backend_are_one_line_errors(spawn: Run) -> None:
    assert "No such command" in spawn("no-such-command", ok=False).stderr
    assert (
        "unknown database backend 'nope'"
        in spawn("--db-backend", "nope", "list-clients", ok=False).stderr
    )


def test_unusable_redis_is_one_line_error(run: Run) -> None:
    proc = run(
        "--db-backend", "redis", "--redis-url", "redis://127.0.0.1:1/0", "list-clients", ok=False
    )
    assert "cannot reach redis" in proc.stderr


def test_every_reference_command_exists(run: Run) -> None:
    out = run("--help").stdout
    for name in [
        "add-client",
        "delete-client",
        "list-clients",
        "rename-client",
        "make-admin",
        "revoke-admin",
        "allow-msg",
        "blacklist-msg",
        "allow-skill",
        "blacklist-skill",
        "allow-intent",
        "blacklist-intent",
        "allow-escalate",
        "blacklist-escalate",
        "allow-propagate",
        "blacklist-propagate",
        "export-clients",
        "print-config",
        "listen",
        "allow-broadcast",
        "blacklist-broadcast",
        "migrate-db",
    ]:
        assert f"  {name} " in out, name
        assert run(name, "--help").returncode == 0


# ---- other backends and databases -------------------------------------------


@pytest.mark.parametrize("backend", ["json", "redis"])
def test_commands_on_other_backends(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str
) -> None:
    extra = {"HIVEMIND_DB_BACKEND": backend}
    if backend == "redis":
        extra["HIVEMIND_REDIS_URL"] = request.getfixturevalue("redis_server")
        extra["HIVEMIND_REDIS_PREFIX"] = f"cli-{uuid.uuid4().hex[:8]}"
    else:
        extra["HIVEMIND_DB_PATH"] = str(tmp_path / "c.json")
    run = _runner(_env(tmp_path, **extra))
    assert (
        f"Database backend: {backend}"
        in run("add-client", "--name", "sat", "--access-key", "k1").stdout
    )
    run("allow-msg", "speak", "k1")
    run("blacklist-propagate", "k1")
    assert "sat" in run("list-clients").stdout
    if backend == "json":
        record = json.loads((tmp_path / "c.json").read_text(encoding="utf-8"))["1"]
        assert record["api_key"] == "k1" and "speak" in record["allowed_types"]
        assert record["can_propagate"] is False
    run("delete-client", "k1")
    assert "No clients" in run("list-clients").stdout


def test_db_path_option_points_at_another_file(run: Run, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere" / "hub.db"
    run("--db-path", str(other), "add-client", "--name", "x", "--access-key", "k1")
    assert other.is_file()
    assert "No clients" in run("list-clients").stdout
    assert "k1" in run("--db-path", str(other), "list-clients").stdout


# ---- migrate-db ---------------------------------------------------------------


def test_migrate_db_from_reference_json(
    run: Run, db: ClientDatabase, tmp_path: Path, reference_json: str
) -> None:
    source = tmp_path / "old" / "clients.json"
    source.parent.mkdir()
    source.write_text(reference_json, encoding="utf-8")
    out = run("migrate-db", "--from-path", str(source)).stdout
    assert "3 imported, 0 updated, 0 skipped" in out
    assert "1 deleted (revoked) record(s) not imported" in out
    assert db.get_client_by_api_key("k1").password == "p1"
    assert db.get_client(3).metadata["site_id"] == "kitchen"
    assert db.get_client_by_api_key("revoked") is None
    assert "0 imported, 3 updated" in run("migrate-db", "--from-path", str(source)).stdout


def test_migrate_db_default_source_and_auto_import(tmp_path: Path, reference_json: str) -> None:
    run = _runner(_env(tmp_path))
    data = tmp_path / "data" / "hivemind-core"
    data.mkdir(parents=True)
    (data / "clients.json").write_text(reference_json, encoding="utf-8")
    # migrate-db imports explicitly (and reports it), not through the first-start import
    assert "3 imported" in run("migrate-db").stdout
    (data / "clients.db").unlink()
    for sidecar in data.glob("clients.db-*"):
        sidecar.unlink()
    # any first use of the sqlite db imports the reference file automatically
    assert "k1" in run("list-clients").stdout


def test_migrate_db_between_backends(run: Run, tmp_path: Path) -> None:
    _add(run, "--name", "sat1", "--access-key", "k1")
    _add(run, "--name", "sat2", "--access-key", "k2")
    run("delete-client", "k1")
    target = tmp_path / "copy.json"
    sqlite_path = tmp_path / "data" / "hivemind-core" / "clients.db"
    out = run(
        "--db-backend",
        "json",
        "--db-path",
        str(target),
        "migrate-db",
        "--from",
        "sqlite",
        "--from-path",
        str(sqlite_path),
    ).stdout
    assert "1 imported" in out
    data = json.loads(target.read_text(encoding="utf-8"))
    assert list(data) == ["2"] and data["2"]["api_key"] == "k2"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--from-path", "missing.json"), "does not exist"),
        (("--from", "nope"), "unknown database backend"),
    ],
)
def test_migrate_db_errors(run: Run, args: tuple[str, ...], message: str) -> None:
    assert message in run("migrate-db", *args, ok=False).stderr


def test_migrate_db_refuses_same_database(run: Run, tmp_path: Path) -> None:
    path = tmp_path / "same.db"
    proc = run(
        "--db-path", str(path), "migrate-db", "--from", "sqlite", "--from-path", str(path), ok=False
    )
    assert "same database" in proc.stderr


def test_migrate_db_reports_collisions_with_nonzero_exit(
    db: ClientDatabase, tmp_path: Path, reference_json: str
) -> None:
    db.add_client("filler", api_key="f")  # takes id 1, which the reference file also uses
    db.add_client("other", api_key="k4")  # the key of the reference's client 4, under id 2
    source = tmp_path / "clients.json"
    source.write_text(reference_json, encoding="utf-8")
    proc = _invoke_in_process(["migrate-db", "--from-path", str(source)], _env(tmp_path), None)
    assert proc.returncode == 1
    assert "1 imported, 0 updated, 2 skipped" in proc.stdout
    assert "skipped client 1: the id belongs to another client" in proc.stdout
    assert "skipped client 4: its access key belongs to client 2" in proc.stdout
    assert db.get_client(1).api_key == "f" and db.get_client(3).name == "Büro"


# ---- listen -------------------------------------------------------------------


def _listen(monkeypatch: pytest.MonkeyPatch, *args: str) -> list:
    from hivemind_core import cli, service

    seen: list = []
    monkeypatch.setattr(service, "run", seen.append)
    with pytest.raises(SystemExit) as exc_info:
        cli.main([*args])
        raise SystemExit(0)
    assert exc_info.value.code == 0
    return seen


def test_listen_builds_config_and_runs_the_service(
    monkeypatch: pytest.MonkeyPatch, xdg: Path
) -> None:
    seen = _listen(
        monkeypatch,
        "--db-backend",
        "json",
        "--db-path",
        "c.json",
        "listen",
        "--host",
        "127.0.0.1",
        "--port",
        "6000",
        "--ssl",
        "--agent",
        "embedded",
    )
    assert len(seen) == 1
    config = seen[0]
    assert (config.host, config.port, config.ssl, config.agent) == (
        "127.0.0.1",
        6000,
        True,
        "embedded",
    )
    assert (config.database, config.db_path) == ("json", "c.json")
    seen = _listen(monkeypatch, "listen", "--cert", "a.pem", "--key", "a.key")
    assert (seen[0].ssl, seen[0].cert, seen[0].key, seen[0].port) == (True, "a.pem", "a.key", 5678)


def test_listen_cert_without_key_is_an_error(run: Run) -> None:
    assert "--cert and --key go together" in run("listen", "--cert", "a.pem", ok=False).stderr
    assert "--port" in run("listen", "--port", "70000", ok=False).stderr


def test_client_record_fields_match_cli_columns() -> None:
    """The CSV export names map onto record fields (guards renames of the model)."""
    assert {"client_id", "name", "is_admin", "api_key", "password", "crypto_key"} <= set(
        Client.FIELD_NAMES
    )
