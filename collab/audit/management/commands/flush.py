"""Django's flush, able to empty the audit tables outside production.

Django's test runner empties every table between transactional tests: one TRUNCATE
on PostgreSQL, a DELETE per table on SQLite. The append-only triggers refuse both
unless this connection allows it: on PostgreSQL the session setting
collab.audit_allow_truncate (UPDATE and DELETE stay refused), on SQLite the
collab_audit_may_delete() permit of collab.audit.sqlite_guard (UPDATE stays refused).
In production neither is opened, the triggers stay in force and flush fails, as it
should.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.core.management.commands.flush import Command as FlushCommand
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper

from collab.audit.sqlite_guard import audit_deletes_allowed


@contextmanager
def _truncate_allowed(connection: BaseDatabaseWrapper) -> Iterator[None]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('collab.audit_allow_truncate', 'on', false)")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('collab.audit_allow_truncate', '', false)")


class Command(FlushCommand):
    def handle(self, **options: Any) -> None:
        connection = connections[options["database"]]
        if settings.PRODUCTION:
            super().handle(**options)
        elif connection.vendor == "postgresql":
            with _truncate_allowed(connection):
                super().handle(**options)
        else:
            with audit_deletes_allowed(connection):
                super().handle(**options)
