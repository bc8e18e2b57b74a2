"""SQLite backend: the default client database, one file, stdlib only.

Layout (schema version 1)::

    clients(client_id INTEGER PRIMARY KEY AUTOINCREMENT,  -- ids are never reused
            key_digest TEXT UNIQUE,                       -- sha256 of the access key
            name TEXT, last_seen REAL,
            record TEXT)                                  -- the whole Client as JSON
    meta(key TEXT PRIMARY KEY, value INTEGER)             -- 'revision', 'schema'

Keeping the record as JSON means every field, including ``metadata`` and
fields a newer version adds, survives a round trip; the indexed columns are
what lookups need. ``last_seen`` lives in its own column so :meth:`touch` does
not rewrite the record or bump the revision.

The file is opened in WAL mode with a busy timeout, and every write is one
``BEGIN IMMEDIATE`` transaction that also increments ``meta.revision``, so the
hub and the CLI can use it from separate processes.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hivemind_core.db.model import (
    BackendUnavailable,
    Client,
    ClientDatabase,
    DuplicateClientError,
    key_digest,
    keys_equal,
    record_json,
)
from hivemind_core.db.private import private_dir, private_file

__all__ = ["SQLiteDatabase", "default_sqlite_path"]

LOG = logging.getLogger(__name__)

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS clients (
    client_id INTEGER PRIMARY KEY AUTOINCREMENT,
    key_digest TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL DEFAULT '',
    last_seen REAL NOT NULL DEFAULT -1,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta(key, value) VALUES ('revision', 0);
"""


def default_sqlite_path() -> Path:
    """``data_dir()/clients.db``."""
    from hivemind_core.config import data_dir

    return data_dir() / "clients.db"


class SQLiteDatabase(ClientDatabase):
    """Client database in one SQLite file (see the module docstring)."""

    backend_name = "sqlite"

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout: float = 10.0,
        import_legacy: bool = True,
        touch_timeout: float = 0.25,
    ) -> None:
        """Open (and create) the database at ``path``.

        Args:
            path: the database file; ``:memory:`` gives a private in-memory db.
            busy_timeout: seconds to wait for another process's write lock.
            touch_timeout: the same for ``last_seen`` writes, which can wait.
            import_legacy: when the file does not exist yet and a reference
                ``clients.json`` sits next to it, import that file.

        Raises:
            BackendUnavailable: the file cannot be opened or is not a database.
        """
        self.path = str(path)
        self._lock = threading.RLock()
        self._busy_ms = busy_timeout * 1000
        self._touch_ms = touch_timeout * 1000
        legacy: Path | None = None
        if self.path != ":memory:":
            p = Path(self.path)
            if import_legacy and not p.exists():
                candidate = p.with_name("clients.json")
                if candidate.is_file():
                    legacy = candidate
            try:
                private_dir(p.parent)
                private_file(p)
                for suffix in ("-wal", "-shm"):
                    companion = p.with_name(p.name + suffix)
                    if companion.exists():
                        private_file(companion)
            except OSError as exc:
                raise BackendUnavailable(f"cannot create {p}: {exc}") from None
        try:
            self._conn = sqlite3.connect(
                self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(_SCHEMA)
            row = self._conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                self._conn.execute(
                    "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema', ?)", (SCHEMA_VERSION,)
                )
            elif row[0] > SCHEMA_VERSION:
                raise BackendUnavailable(
                    f"{self.path} has schema version {row[0]}, newer than this hivemind-core understands"
                )
        except sqlite3.Error as exc:
            raise BackendUnavailable(f"cannot open sqlite database {self.path}: {exc}") from None
        if legacy is not None:
            self._import_legacy(legacy)

    @classmethod
    def from_config(
        cls, config: Any, *, path: str | None = None, url: str | None = None
    ) -> SQLiteDatabase:
        """Open ``path``, else ``config.db_path``, else ``data_dir()/clients.db``."""
        target = path or getattr(config, "db_path", None) or default_sqlite_path()
        return cls(target, touch_timeout=getattr(config, "last_seen_busy_timeout", 0.25))

    def _import_legacy(self, source: Path) -> None:
        from hivemind_core.db.migration import import_reference_json

        try:
            report = import_reference_json(source, self)
        except Exception as exc:  # first start must not die on a bad legacy file
            LOG.error("could not import %s: %s", source, exc)
            return
        LOG.info("imported %d client(s) from %s into %s", report.imported, source, self.path)

    # ---- helpers ------------------------------------------------------
    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction that bumps the revision."""
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("UPDATE meta SET value = value + 1 WHERE key='revision'")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    @staticmethod
    def _row_to_client(record: str, last_seen: float, client_id: int) -> Client:
        data = json.loads(record)
        data["client_id"] = client_id
        data["last_seen"] = last_seen
        return Client.from_dict(data)

    # ---- contract -----------------------------------------------------
    def _insert(self, client: Client, *, keep_id: bool) -> Client:
        digest = key_digest(client.api_key)
        try:
            with self._write() as conn:
                if keep_id:
                    conn.execute(
                        "INSERT INTO clients(client_id, key_digest, name, last_seen, record) VALUES (?,?,?,?,?)",
                        (
                            client.client_id,
                            digest,
                            client.name,
                            client.last_seen,
                            record_json(client),
                        ),
                    )
                else:
                    cur = conn.execute(
                        "INSERT INTO clients(key_digest, name, last_seen, record) VALUES (?,?,?,?)",
                        (digest, client.name, client.last_seen, record_json(client)),
                    )
                    client.client_id = int(cur.lastrowid or 0)
        except sqlite3.IntegrityError:
            raise DuplicateClientError(
                f"client id {client.client_id} or its access key is already in use"
                if keep_id
                else "that access key is already in use"
            ) from None
        return client

    def get_client(self, client_id: int) -> Client | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT record, last_seen, client_id FROM clients WHERE client_id=?",
                (int(client_id),),
            ).fetchone()
        return self._row_to_client(*row) if row else None

    def get_client_by_api_key(self, api_key: str) -> Client | None:
        if not isinstance(api_key, str) or not api_key:
            return None
        with self._lock:
            row = self._conn.execute(
                "SELECT record, last_seen, client_id FROM clients WHERE key_digest=?",
                (key_digest(api_key),),
            ).fetchone()
        if row is None:
            return None
        client = self._row_to_client(*row)
        return client if keys_equal(client.api_key, api_key) else None

    def update_client(self, client: Client) -> None:
        client.validate()
        self._check_key(client.api_key)
        try:
            with self._write() as conn:
                cur = conn.execute(
                    "UPDATE clients SET key_digest=?, name=?, last_seen=?, record=? WHERE client_id=?",
                    (
                        key_digest(client.api_key),
                        client.name,
                        client.last_seen,
                        record_json(client),
                        client.client_id,
                    ),
                )
                if cur.rowcount == 0:
                    raise KeyError(client.client_id)
        except sqlite3.IntegrityError:
            raise DuplicateClientError("that access key belongs to another client") from None

    def delete_client(self, client_id: int) -> bool:
        with self._write() as conn:
            cur = conn.execute("DELETE FROM clients WHERE client_id=?", (int(client_id),))
            return cur.rowcount > 0

    def list_clients(self) -> list[Client]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT record, last_seen, client_id FROM clients ORDER BY client_id"
            ).fetchall()
        return [self._row_to_client(*row) for row in rows]

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM clients").fetchone()[0])

    def touch(self, client_id: int, when: float) -> None:
        """Record activity; best effort: a busy database only costs a log line, never an error."""
        with self._lock:
            conn = self._conn
            conn.execute(f"PRAGMA busy_timeout={int(self._touch_ms)}")
            try:
                conn.execute(
                    "UPDATE clients SET last_seen=? WHERE client_id=?",
                    (float(when), int(client_id)),
                )
            except sqlite3.OperationalError as exc:
                LOG.debug("last_seen of client %s not recorded: %s", client_id, exc)
            finally:
                conn.execute(f"PRAGMA busy_timeout={int(self._busy_ms)}")

    def revision(self) -> int:
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key='revision'").fetchone()
        return int(row[0]) if row else 0

    def reserve_id(self, client_id: int) -> None:
        """Make sure new clients get ids above ``client_id`` (ids of deleted clients stay unused)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                row = self._conn.execute(
                    "SELECT seq FROM sqlite_sequence WHERE name='clients'"
                ).fetchone()
                if row is None:
                    self._conn.execute(
                        "INSERT INTO sqlite_sequence(name, seq) VALUES ('clients', ?)", (client_id,)
                    )
                elif row[0] < client_id:
                    self._conn.execute(
                        "UPDATE sqlite_sequence SET seq=? WHERE name='clients'", (client_id,)
                    )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            try:
                self._conn.close()
            except sqlite3.Error as exc:  # pragma: no cover - closing never fails in practice
                LOG.debug("closing %s: %s", self.path, exc)
