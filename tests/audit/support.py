"""Tampering with audit rows the way an attacker with database access would."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connection

from collab.audit.services import AuditAction, audit_record

TRIGGERS = {
    "audit_auditevent": "audit_auditevent_no_change",
    "audit_auditcheckpoint": "audit_auditcheckpoint_no_change",
}


@contextmanager
def raw_sql(table: str = "audit_auditevent") -> Iterator[Any]:
    """A cursor that may change audit rows: the triggers are off meanwhile (on SQLite,
    which has no privileges, anyone who can write the file may drop them). On SQLite
    every trigger of the table is dropped and created again from its stored SQL:
    ``_no_update``, ``_no_delete`` and ``_no_replace`` (the INSERT trigger that
    refuses a row with a stored id or seq, which forged re-inserts would hit)."""
    with connection.cursor() as cursor:
        sqlite_triggers: list[tuple[str, str]] = []
        if connection.vendor == "postgresql":
            cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER {TRIGGERS[table]}")
        else:
            cursor.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = %s",
                [table],
            )
            sqlite_triggers = list(cursor.fetchall())
            for name, _ in sqlite_triggers:
                cursor.execute(f'DROP TRIGGER "{name}"')
        try:
            yield cursor
        finally:
            if connection.vendor == "postgresql":
                cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER {TRIGGERS[table]}")
            for _, sql in sqlite_triggers:
                cursor.execute(sql)


def record_events(count: int, **kwargs: Any) -> list[Any]:
    return [
        audit_record(action=AuditAction.AUDIT_VIEWED, target=f"t{i}", **kwargs)
        for i in range(count)
    ]
