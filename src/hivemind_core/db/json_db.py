"""JSON backend: the reference's ``clients.json`` layout, read and written.

The file is one JSON object keyed by client id (as a string), each value a
full client record with the reference's field names (docs/hub.md, permissions)::

    {"1": {"client_id": 1, "api_key": "...", "name": "kitchen", ...}, ...}

It exists for compatibility: pointing the reference hub and this one at the
same file, importing, exporting. SQLite is the better default.

What it does differently from the reference's JSON plugin:

* every write takes an advisory lock, re-reads the file, applies the change
  and replaces the file atomically, so a CLI edit never overwrites the hub's
  and vice versa;
* :meth:`touch` is buffered and flushed at most every ``flush_interval``
  seconds (and on close), instead of rewriting the whole file per message;
* the reference's tombstones (rows with the key ``revoked``) are never
  returned, never match a lookup, and are dropped on the next write;
* :meth:`revision` is per process: it changes whenever the records (other
  than ``last_seen``) differ from what this process saw last.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hivemind_core.db.model import (
    RESERVED_KEYS,
    BackendUnavailable,
    Client,
    ClientDatabase,
    DuplicateClientError,
    InvalidClientError,
    keys_equal,
)
from hivemind_core.db.private import FILE_MODE, private_dir

try:  # advisory locking is POSIX only; elsewhere writes are atomic but unlocked
    import fcntl
except ImportError:  # pragma: no cover - not on the platforms CI runs
    fcntl = None  # type: ignore[assignment]

__all__ = ["JsonDatabase", "default_json_path"]

LOG = logging.getLogger(__name__)


def default_json_path() -> Path:
    """``data_dir()/clients.json``, where the reference keeps its clients."""
    from hivemind_core.config import data_dir

    return data_dir() / "clients.json"


def _is_tombstone(data: dict[str, Any]) -> bool:
    return data.get("api_key") in RESERVED_KEYS


class JsonDatabase(ClientDatabase):
    """Client database in a reference-format ``clients.json`` (see the module docstring)."""

    backend_name = "json"

    def __init__(
        self,
        path: str | Path,
        *,
        legacy: bool = False,
        flush_interval: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Open ``path`` (created on the first write).

        Args:
            path: the JSON file.
            legacy: load records with the reference's load-time rules (see
                :meth:`Client.from_dict`); used when importing.
            flush_interval: seconds between writes of buffered ``last_seen`` values.
            clock: monotonic clock for the flush interval.

        Raises:
            BackendUnavailable: the file exists but is not a reference client file.
        """
        self.path = Path(path)
        self.legacy = legacy
        self.flush_interval = flush_interval
        self._clock = clock
        self._lock = threading.RLock()
        self._records: dict[int, Client] = {}
        self._tombstones: set[int] = set()
        self._stamp: tuple[int, int, int] | None = None
        self._fingerprint = ""
        self._revision = 0
        self._pending_seen: dict[int, float] = {}
        self._last_flush = clock()
        self._reload()

    @classmethod
    def from_config(
        cls, config: Any, *, path: str | None = None, url: str | None = None
    ) -> JsonDatabase:
        """Open ``path``, else ``config.db_path``, else ``data_dir()/clients.json``."""
        return cls(path or getattr(config, "db_path", None) or default_json_path())

    # ---- file I/O -------------------------------------------------------
    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _parse(self, text: str) -> tuple[dict[int, Client], set[int]]:
        try:
            raw = json.loads(text) if text.strip() else {}
        except ValueError as exc:
            raise BackendUnavailable(f"{self.path} is not valid JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise BackendUnavailable(f"{self.path} must hold a JSON object keyed by client id")
        if "ciphertext" in raw:
            raise BackendUnavailable(
                f"{self.path} is encrypted (a database password was set); decrypt it with the reference tools first"
            )
        records: dict[int, Client] = {}
        tombstones: set[int] = set()
        for key, data in raw.items():
            if not isinstance(data, dict):
                raise BackendUnavailable(f"{self.path}: entry {key!r} is not a client record")
            data = dict(data)
            data.setdefault("client_id", int(key) if str(key).isdigit() else key)
            if _is_tombstone(data):
                if isinstance(data["client_id"], int):
                    tombstones.add(data["client_id"])
                continue
            try:
                client = Client.from_dict(data, legacy=self.legacy)
            except InvalidClientError as exc:
                raise BackendUnavailable(f"{self.path}: entry {key!r}: {exc}") from None
            records[client.client_id] = client
        return records, tombstones

    @staticmethod
    def _fingerprint_of(records: dict[int, Client]) -> str:
        digest = hashlib.sha256()
        for cid in sorted(records):
            data = records[cid].to_dict()
            data.pop("last_seen")
            digest.update(json.dumps(data, sort_keys=True).encode())
        return digest.hexdigest()

    def _adopt(self, records: dict[int, Client], tombstones: set[int]) -> None:
        for cid, when in self._pending_seen.items():
            if cid in records:
                records[cid].last_seen = when
        self._records = records
        self._tombstones = tombstones
        fingerprint = self._fingerprint_of(records)
        if fingerprint != self._fingerprint:
            self._fingerprint = fingerprint
            self._revision += 1

    def _reload(self) -> None:
        """Re-read the file if another process changed it."""
        stamp = self._file_stamp()
        if stamp == self._stamp and (stamp is not None or not self._records):
            return
        if stamp is None:
            records: dict[int, Client] = {}
            tombstones: set[int] = set()
        else:
            try:
                text = self.path.read_text(encoding="utf-8")
            except OSError as exc:
                raise BackendUnavailable(f"cannot read {self.path}: {exc}") from None
            records, tombstones = self._parse(text)
        self._stamp = stamp
        self._adopt(records, tombstones)

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        try:
            private_dir(self.path.parent)
        except OSError as exc:
            raise BackendUnavailable(f"cannot create {self.path.parent}: {exc}") from None
        if fcntl is None:  # pragma: no cover
            yield
            return
        lock_path = self.path.with_name(self.path.name + ".lock")
        with open(os.open(lock_path, os.O_RDWR | os.O_CREAT, FILE_MODE), "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _mutate(self, change: Callable[[dict[int, Client]], Any]) -> Any:
        """Lock, re-read, apply ``change`` to the records, write back; returns what ``change`` returns."""
        with self._lock, self._file_lock():
            self._stamp = None  # force a fresh read under the lock
            self._reload()
            records = {cid: Client.from_dict(c.to_dict()) for cid, c in self._records.items()}
            result = change(records)
            self._write(records)
            self._pending_seen.clear()
            self._last_flush = self._clock()
            self._adopt(records, self._tombstones)
            return result

    def _write(self, records: dict[int, Client]) -> None:
        data = {str(cid): records[cid].to_dict() for cid in sorted(records)}
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
            with open(fd, "w", encoding="utf-8") as handle:
                handle.write(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True))
            os.replace(tmp, self.path)
        except OSError as exc:
            raise BackendUnavailable(f"cannot write {self.path}: {exc}") from None
        self._stamp = self._file_stamp()

    # ---- contract -----------------------------------------------------
    def _insert(self, client: Client, *, keep_id: bool) -> Client:
        def change(records: dict[int, Client]) -> Client:
            for other in records.values():
                if keys_equal(other.api_key, client.api_key):
                    raise DuplicateClientError("that access key is already in use")
            if keep_id:
                if client.client_id in records:
                    raise DuplicateClientError(f"client id {client.client_id} is already in use")
            else:
                used = set(records) | self._tombstones
                client.client_id = max(used, default=0) + 1
            records[client.client_id] = client
            return client

        return self._mutate(change)

    def get_client(self, client_id: int) -> Client | None:
        with self._lock:
            self._reload()
            client = self._records.get(int(client_id))
            return Client.from_dict(client.to_dict()) if client else None

    def get_client_by_api_key(self, api_key: str) -> Client | None:
        if not isinstance(api_key, str) or not api_key or api_key in RESERVED_KEYS:
            return None
        with self._lock:
            self._reload()
            found = None
            for client in self._records.values():  # scan all: no early exit on a match
                if keys_equal(client.api_key, api_key):
                    found = client
            return Client.from_dict(found.to_dict()) if found else None

    def update_client(self, client: Client) -> None:
        client.validate()
        self._check_key(client.api_key)
        updated = Client.from_dict(client.to_dict())

        def change(records: dict[int, Client]) -> None:
            if updated.client_id not in records:
                raise KeyError(updated.client_id)
            for other in records.values():
                if other.client_id != updated.client_id and keys_equal(
                    other.api_key, updated.api_key
                ):
                    raise DuplicateClientError("that access key belongs to another client")
            records[updated.client_id] = updated

        self._mutate(change)

    def delete_client(self, client_id: int) -> bool:
        def change(records: dict[int, Client]) -> bool:
            return records.pop(int(client_id), None) is not None

        with self._lock:
            self._reload()
            if int(client_id) not in self._records:
                return False
            return bool(self._mutate(change))

    def list_clients(self) -> list[Client]:
        with self._lock:
            self._reload()
            return [Client.from_dict(self._records[cid].to_dict()) for cid in sorted(self._records)]

    def touch(self, client_id: int, when: float) -> None:
        with self._lock:
            cid = int(client_id)
            if cid not in self._records:
                return
            self._records[cid].last_seen = float(when)
            self._pending_seen[cid] = float(when)
            if self._clock() - self._last_flush >= self.flush_interval:
                self.flush()

    def flush(self) -> None:
        """Write buffered ``last_seen`` values now."""
        with self._lock:
            if not self._pending_seen:
                return
            pending = dict(self._pending_seen)

            def change(records: dict[int, Client]) -> None:
                for cid, when in pending.items():
                    if cid in records:
                        records[cid].last_seen = when

            self._mutate(change)

    def revision(self) -> int:
        with self._lock:
            self._reload()
            return self._revision

    def tombstones(self) -> set[int]:
        """Ids of the reference's ``revoked`` rows found in the file."""
        with self._lock:
            self._reload()
            return set(self._tombstones)

    def reserve_id(self, client_id: int) -> None:
        with self._lock:
            self._tombstones.add(int(client_id))

    def close(self) -> None:
        try:
            self.flush()
        except BackendUnavailable as exc:
            LOG.warning("could not save last_seen values: %s", exc)
