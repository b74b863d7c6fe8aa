"""On SQLite the database itself refuses to change or remove audit rows (audit.0007).

Transactional tests: the rows are committed, so a second connection to the same file
(the sqlite3 shell of an operator) sees them, and the runner's flush between tests
goes through the guarded DELETE.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, connections, transaction
from django.test import override_settings

from collab.audit.models import AppendOnlyError, AuditCheckpoint, AuditEvent
from collab.audit.services import checkpoint_sign
from collab.audit.sqlite_guard import audit_deletes_allowed
from tests.audit.support import record_events

pytestmark = [pytest.mark.sqlite, pytest.mark.django_db(transaction=True)]

TABLES = ("audit_auditevent", "audit_auditcheckpoint")
STATEMENTS = {
    "update": "UPDATE {table} SET seq = seq + 100",
    "delete one": "DELETE FROM {table} WHERE id = (SELECT min(id) FROM {table})",
    "delete all": "DELETE FROM {table}",
}


@pytest.fixture
def trail() -> None:
    record_events(2)
    checkpoint_sign()


def _counts() -> tuple[int, int]:
    return AuditEvent.objects.count(), AuditCheckpoint.objects.count()


def _shell() -> sqlite3.Connection:
    """A plain connection to the same file, as the sqlite3 shell would open it."""
    path = Path(connection.settings_dict["NAME"])
    assert path.is_file()
    return sqlite3.connect(path, timeout=5, isolation_level=None)


# The column a forger rewrites when replacing a row, per table.
FORGED = {"audit_auditevent": "target", "audit_auditcheckpoint": "signature"}


def _replace_sql(cursor: Any, table: str, *, by: str, verb: str = "INSERT OR REPLACE") -> str:
    """A statement that puts a forged copy of the first row in its place: the same id
    (a new seq for events), or for events the same seq under a new id."""
    cursor.execute(f"PRAGMA table_info({table})")
    columns = [row[1] for row in cursor.fetchall()]
    values = []
    for column in columns:
        if column == FORGED[table]:
            values.append("'forged'")
        elif column == "id" and by == "seq":
            values.append("NULL")
        elif column == "seq" and by == "id" and table == "audit_auditevent":
            values.append("seq + 1000")
        else:
            values.append(column)
    return (
        f"{verb} INTO {table} ({', '.join(columns)}) "  # noqa: S608 - fixed names
        f"SELECT {', '.join(values)} FROM {table} WHERE id = (SELECT min(id) FROM {table})"
    )


REPLACES = [
    ("audit_auditevent", "id"),
    ("audit_auditevent", "seq"),
    ("audit_auditcheckpoint", "id"),
]


def _forged() -> int:
    return (
        AuditEvent.objects.filter(target="forged").count()
        + AuditCheckpoint.objects.filter(signature="forged").count()
        + AuditEvent.objects.filter(seq__gt=100).count()
    )


def test_migrate_put_the_triggers_on_both_tables() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT tbl_name, name FROM sqlite_master WHERE type = 'trigger'")
        triggers = set(cursor.fetchall())
    kinds = ("no_update", "no_delete", "no_replace")
    wanted = {(t, f"{t}_{kind}") for t in TABLES for kind in kinds}
    assert wanted <= triggers


@pytest.mark.parametrize(("table", "by"), REPLACES)
def test_insert_or_replace_through_django_is_refused(trail: None, table: str, by: str) -> None:
    with connection.cursor() as cursor:
        statement = _replace_sql(cursor, table, by=by)
    for verb in ("INSERT OR REPLACE", "REPLACE"):
        with pytest.raises(DatabaseError, match="append-only"):  # noqa: SIM117
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(statement.replace("INSERT OR REPLACE", verb, 1))
    assert _counts() == (2, 1)
    assert _forged() == 0


@pytest.mark.parametrize(("table", "by"), REPLACES)
def test_insert_or_replace_from_a_plain_sqlite3_connection_is_refused(
    trail: None, table: str, by: str
) -> None:
    """Also with recursive_triggers on (then REPLACE's delete fires the DELETE trigger)
    and off (then nothing but the INSERT trigger stands in the way)."""
    shell = _shell()
    try:
        statement = _replace_sql(shell.cursor(), table, by=by)
        for recursive in ("OFF", "ON"):
            shell.execute(f"PRAGMA recursive_triggers = {recursive}")
            # ON: the DELETE trigger's function is missing here, which refuses it too
            with pytest.raises(sqlite3.DatabaseError, match=r"append-only|collab_audit_may"):
                shell.execute(statement)
    finally:
        shell.close()
    assert _counts() == (2, 1)
    assert _forged() == 0


@pytest.mark.parametrize("table", TABLES)
def test_upsert_do_update_is_refused(trail: None, table: str) -> None:
    """ON CONFLICT DO UPDATE: refused by the INSERT trigger, and by the UPDATE trigger
    when only that one is left."""
    shell = _shell()
    try:
        base = _replace_sql(shell.cursor(), table, by="id", verb="INSERT")
        statement = f"{base} ON CONFLICT(id) DO UPDATE SET {FORGED[table]} = 'forged'"
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            shell.execute(statement)
        shell.execute("BEGIN")
        shell.execute(f"DROP TRIGGER {table}_no_replace")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            shell.execute(statement)
        shell.execute("ROLLBACK")
    finally:
        shell.close()
    assert _counts() == (2, 1)
    assert _forged() == 0


def test_appends_still_pass_the_insert_trigger(trail: None) -> None:
    record_events(3)
    checkpoint_sign()
    checkpoint_sign()  # a second checkpoint at the same seq: seq is not unique there
    assert _counts() == (5, 3)


@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize("statement", STATEMENTS.values(), ids=STATEMENTS.keys())
def test_raw_sql_through_django_is_refused(trail: None, table: str, statement: str) -> None:
    with pytest.raises(DatabaseError, match="append-only"):  # noqa: SIM117
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(statement.format(table=table))
    assert _counts() == (2, 1)
    assert AuditEvent.objects.filter(seq__gt=100).count() == 0


@pytest.mark.parametrize("table", TABLES)
def test_plain_sqlite3_connection_cannot_update(trail: None, table: str) -> None:
    shell = _shell()
    try:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            shell.execute(f"UPDATE {table} SET seq = seq + 100")  # noqa: S608
    finally:
        shell.close()
    assert AuditEvent.objects.filter(seq__gt=100).count() == 0


@pytest.mark.parametrize("table", TABLES)
def test_plain_sqlite3_connection_cannot_delete(trail: None, table: str) -> None:
    """Without the function the trigger asks, the DELETE does not even prepare."""
    shell = _shell()
    try:
        for statement in (STATEMENTS["delete one"], STATEMENTS["delete all"]):
            with pytest.raises(sqlite3.OperationalError, match="collab_audit_may_delete"):
                shell.execute(statement.format(table=table))
        (left,) = shell.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608
    finally:
        shell.close()
    assert left > 0
    assert _counts()[1] == 1


def test_update_is_refused_even_while_deletes_are_allowed(trail: None) -> None:
    with audit_deletes_allowed(connection):
        for table in TABLES:
            with pytest.raises(DatabaseError, match="append-only"):  # noqa: SIM117
                with transaction.atomic(), connection.cursor() as cursor:
                    cursor.execute(f"UPDATE {table} SET seq = seq + 100")  # noqa: S608
    assert AuditEvent.objects.filter(seq__gt=100).count() == 0


def test_the_permit_is_this_connection_only_and_closes_after(trail: None) -> None:
    refused: list[BaseException] = []

    def other_thread() -> None:
        try:
            with connections["default"].cursor() as cursor:
                cursor.execute("DELETE FROM audit_auditevent")
        except DatabaseError as exc:
            refused.append(exc)
        finally:
            connections.close_all()

    with audit_deletes_allowed(connection):
        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join(30)
    assert len(refused) == 1
    assert "append-only" in str(refused[0])
    with pytest.raises(DatabaseError, match="append-only"):  # noqa: SIM117
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("DELETE FROM audit_auditevent")
    assert _counts()[0] == 2


def test_flush_empties_the_audit_tables_outside_production(trail: None) -> None:
    call_command("flush", interactive=False, verbosity=0)
    assert _counts() == (0, 0)
    # The permit closed again with the command.
    record_events(1)
    with pytest.raises(DatabaseError, match="append-only"):  # noqa: SIM117
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("DELETE FROM audit_auditevent")
    assert _counts()[0] == 1


def test_flush_is_refused_in_production(trail: None) -> None:
    with override_settings(PRODUCTION=True), pytest.raises(CommandError) as refused:
        call_command("flush", interactive=False, verbosity=0)
    assert "couldn't be flushed" in str(refused.value)
    assert "append-only" in str(refused.value.__cause__)  # the trigger said no
    assert _counts() == (2, 1)


def test_orm_guards_still_raise_before_the_database(trail: None) -> None:
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.all().delete()
    with pytest.raises(AppendOnlyError):
        AuditCheckpoint.objects.all().update(seq=1)
    assert _counts() == (2, 1)
