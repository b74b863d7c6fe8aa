"""The raw bytes of the SQLite test database and its logs, as a forensic reader sees them."""

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
