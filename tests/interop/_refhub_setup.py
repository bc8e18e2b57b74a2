"""Register clients in an isolated reference hub (run by the reference venv's python).

The caller sets XDG_CONFIG_HOME/XDG_DATA_HOME to throwaway folders and writes
``server.json`` first. This script adds the clients listed in ``--spec`` through
hivemind-core's own ``ClientDatabase`` (so the rows are exactly what the
reference writes, but a row may have no password and/or no crypto key, which the
``add-client`` CLI cannot do), then writes the rows read back from the database
and the effective server config as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from hivemind_core.config import get_server_config
from hivemind_core.database import ClientDatabase


def main() -> int:
    """Add the clients and dump the resulting database."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    spec = json.loads(args.spec.read_text(encoding="utf-8"))
    with ClientDatabase() as db:
        for row in spec["clients"]:
            db.add_client(
                name=row["name"],
                key=row["access_key"],
                admin=bool(row.get("admin", False)),
                intent_blacklist=row.get("intent_blacklist"),
                skill_blacklist=row.get("skill_blacklist"),
                message_blacklist=row.get("message_blacklist"),
                allowed_types=row.get("allowed_types"),
                crypto_key=row.get("crypto_key"),
                password=row.get("password"),
            )

    check = ClientDatabase()
    check.sync()
    rows = [dataclasses.asdict(c) for c in check]
    store = getattr(check.db, "_db", None)
    out = {
        "clients": rows,
        "server": dict(get_server_config()),
        "db_path": str(getattr(store, "path", "")),
    }
    args.out.write_text(json.dumps(out, indent=2, default=repr), encoding="utf-8")
    missing = {r["access_key"] for r in spec["clients"]} - {r["api_key"] for r in rows}
    if missing:
        print(f"clients missing after commit: {sorted(missing)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
