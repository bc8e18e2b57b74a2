"""Moving clients between databases, and importing the reference's ``clients.json``.

Records keep their ``client_id`` and every field (unknown ones ride in
``metadata``). The reference's tombstones (rows whose key is ``revoked``,
docs/hub.md, admission) are not imported; their ids are reserved in the target so a
new client never inherits a deleted client's id.

Running an import twice is harmless: a record whose id and key already match a
target record updates it; a record that collides with a *different* client
(same id, other key, or same key, other id) is skipped and reported.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from hivemind_core.db.model import (
    Client,
    ClientDatabase,
    DatabaseError,
    InvalidClientError,
    keys_equal,
)

__all__ = ["MigrationReport", "copy_clients", "import_reference_json"]

LOG = logging.getLogger(__name__)


@dataclass
class MigrationReport:
    """What an import did."""

    imported: int = 0
    updated: int = 0
    #: (client_id, reason) of records not copied.
    skipped: list[tuple[int, str]] = field(default_factory=list)
    #: Ids of the reference's tombstoned (deleted) rows, reserved in the target.
    tombstones: list[int] = field(default_factory=list)


def _copy_one(client: Client, target: ClientDatabase, report: MigrationReport) -> None:
    existing = target.get_client(client.client_id)
    if existing is not None:
        if keys_equal(existing.api_key, client.api_key):
            target.update_client(client)
            report.updated += 1
        else:
            report.skipped.append(
                (client.client_id, "the id belongs to another client in the target")
            )
        return
    holder = target.get_client_by_api_key(client.api_key)
    if holder is not None:
        report.skipped.append(
            (client.client_id, f"its access key belongs to client {holder.client_id} in the target")
        )
        return
    try:
        target.import_client(client)
    except (InvalidClientError, DatabaseError) as exc:
        report.skipped.append((client.client_id, str(exc)))
        return
    report.imported += 1


def copy_clients(source: ClientDatabase, target: ClientDatabase) -> MigrationReport:
    """Copy every client of ``source`` into ``target`` (ids kept)."""
    report = MigrationReport()
    for client in source.list_clients():
        _copy_one(client, target, report)
    for skipped_id, reason in report.skipped:
        LOG.warning("client %s not migrated: %s", skipped_id, reason)
    return report


def import_reference_json(path: str | Path, target: ClientDatabase) -> MigrationReport:
    """Import a ``clients.json`` written by the reference hub.

    The reference's load-time rules are applied (``null`` lists, the default
    role for an empty ``allowed_types``, the always-present utterance type),
    so every client keeps the permissions it had there.

    Raises:
        BackendUnavailable: the file is missing, encrypted or not a client file.
    """
    from hivemind_core.db.json_db import JsonDatabase
    from hivemind_core.db.model import BackendUnavailable

    p = Path(path)
    if not p.is_file():
        raise BackendUnavailable(f"{p} does not exist")
    source = JsonDatabase(p, legacy=True)  # only read: nothing here writes the source back
    report = copy_clients(source, target)
    for tomb in sorted(source.tombstones()):
        if target.get_client(tomb) is None:
            target.reserve_id(tomb)
        report.tombstones.append(tomb)
    return report
