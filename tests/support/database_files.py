"""The test database as a forensic reader sees it: a full dump, and on SQLite the raw bytes
of the file and its logs."""

import os
import sqlite3
import subprocess
from pathlib import Path

from django.db import connection


def sqlite_files() -> bytes:
    """The database file, its write-ahead log and any rollback journal, concatenated.

    Read by a child process, never by this one: closing any descriptor of the database
    file cancels every POSIX lock this process holds on it (SQLite's "how to corrupt"
    §2.2), so a live server process could then take the exclusive lock, checkpoint and
    delete the log under this process's open connections ("file is not a database")."""
    name = Path(connection.settings_dict["NAME"])
    parts = [name, name.with_name(name.name + "-wal"), name.with_name(name.name + "-journal")]
    present = [str(p) for p in parts if p.exists()]
    if not present:
        return b""
    return subprocess.run(["cat", *present], check=True, capture_output=True, timeout=60).stdout


def full_dump() -> bytes:
    """Every table's rows: SQLite's iterdump, or pg_dump of the test database."""
    name = connection.settings_dict["NAME"]
    if connection.vendor == "sqlite":
        # Through SQLite itself, which keeps this process's locks across its own closes.
        db = sqlite3.connect(name)
        try:
            return "\n".join(db.iterdump()).encode()
        finally:
            db.close()
    cfg = connection.settings_dict
    env = {**os.environ, "PGPASSWORD": cfg.get("PASSWORD") or ""}
    return subprocess.run(
        [
            "pg_dump",
            "-h",
            cfg.get("HOST") or "127.0.0.1",
            "-p",
            str(cfg.get("PORT") or 5432),
            "-U",
            cfg.get("USER") or "postgres",
            name,
        ],
        check=True,
        capture_output=True,
        env=env,
        timeout=120,
    ).stdout
