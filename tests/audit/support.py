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
    """A cursor that may change audit rows: on PostgreSQL the trigger is off meanwhile."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER {TRIGGERS[table]}")
        try:
            yield cursor
        finally:
            if connection.vendor == "postgresql":
                cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER {TRIGGERS[table]}")


def record_events(count: int, **kwargs: Any) -> list[Any]:
    return [
        audit_record(action=AuditAction.AUDIT_VIEWED, target=f"t{i}", **kwargs)
        for i in range(count)
    ]
