"""SQLite refuses UPDATE and DELETE of audit rows, as PostgreSQL does since 0002.

UPDATE is refused always, and so is an INSERT that would take the place of a stored
row: ``INSERT OR REPLACE`` (``REPLACE INTO``) deletes the conflicting row without
firing DELETE triggers (unless recursive_triggers is on) and fires no UPDATE
trigger, so a BEFORE INSERT trigger refuses a new row whose unique key (``id``, and
``seq`` for events) is already stored; ``INSERT ... ON CONFLICT DO UPDATE`` is
refused by it too (and by the UPDATE trigger). A normal append passes: its id and
seq are new, and the check costs one lookup in each unique index.

DELETE passes only when collab_audit_may_delete() returns true: the audit app
registers that function on Django's own connections, closed, and opens it only for
its ``flush`` command outside production (collab/audit/sqlite_guard.py). A
connection without the function (the sqlite3 shell) cannot prepare a DELETE on these
tables at all. Nothing happens on PostgreSQL.

SQLite drops a table's triggers with the table: a later migration that makes Django
rebuild an audit table on SQLite must create these triggers again.
"""

from django.db import migrations

TABLES = ("audit_auditevent", "audit_auditcheckpoint")
# The columns with a unique index: the ones a REPLACE can collide on. A checkpoint's
# seq is not unique (an archive checkpoint may sign the same seq as a periodic one).
UNIQUE = {"audit_auditevent": ("id", "seq"), "audit_auditcheckpoint": ("id",)}
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
        clash = " OR ".join(f"{column} = NEW.{column}" for column in UNIQUE[table])
        schema_editor.execute(
            f"CREATE TRIGGER IF NOT EXISTS {table}_no_replace BEFORE INSERT ON {table} "  # noqa: S608 - fixed names
            f"WHEN EXISTS (SELECT 1 FROM {table} WHERE {clash}) "
            f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END",
            params=None,
        )


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor != "sqlite":
        return
    for table in TABLES:
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_no_update", params=None)
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete", params=None)
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_no_replace", params=None)


class Migration(migrations.Migration):
    dependencies = [("audit", "0006_more_reads_and_changes")]

    operations = [migrations.RunPython(forwards, backwards)]
