"""SQLite refuses UPDATE and DELETE of audit rows, as PostgreSQL does since 0002.

UPDATE is refused always. DELETE passes only when collab_audit_may_delete() returns
true: the audit app registers that function on Django's own connections, closed,
and opens it only for its ``flush`` command outside production (collab/audit/
sqlite_guard.py). A connection without the function (the sqlite3 shell) cannot
prepare a DELETE on these tables at all. Nothing happens on PostgreSQL.

SQLite drops a table's triggers with the table: a later migration that makes Django
rebuild an audit table on SQLite must create these triggers again.
"""

from django.db import migrations

TABLES = ("audit_auditevent", "audit_auditcheckpoint")
MESSAGE = "audit rows are append-only"


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor != "sqlite":
        return
    for table in TABLES:
        schema_editor.execute(
            f"CREATE TRIGGER IF NOT EXISTS {table}_no_update BEFORE UPDATE ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END",
            params=None,
        )
        schema_editor.execute(
            f"CREATE TRIGGER IF NOT EXISTS {table}_no_delete BEFORE DELETE ON {table} "
            f"WHEN NOT collab_audit_may_delete() "
            f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END",
            params=None,
        )


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor != "sqlite":
        return
    for table in TABLES:
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_no_update", params=None)
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete", params=None)


class Migration(migrations.Migration):
    dependencies = [("audit", "0006_more_reads_and_changes")]

    operations = [migrations.RunPython(forwards, backwards)]
