from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction
from django.test import override_settings

from collab.audit.models import AppendOnlyError, AuditCheckpoint, AuditEvent
from collab.audit.services import checkpoint_sign
from tests.audit.support import record_events

pytestmark = pytest.mark.django_db


def test_saving_an_existing_event_is_refused() -> None:
    event = record_events(1)[0]
    event.target = "rewritten"
    with pytest.raises(AppendOnlyError):
        event.save()
    assert AuditEvent.objects.get().target == "t0"


def test_deleting_an_event_is_refused() -> None:
    event = record_events(1)[0]
    with pytest.raises(AppendOnlyError):
        event.delete()
    assert AuditEvent.objects.count() == 1


def test_queryset_update_and_delete_are_refused() -> None:
    record_events(2)
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(seq=1).update(target="x")
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.all().delete()
    assert AuditEvent.objects.count() == 2


def test_checkpoints_are_append_only_too() -> None:
    record_events(1)
    checkpoint = checkpoint_sign()
    checkpoint.seq = 99
    with pytest.raises(AppendOnlyError):
        checkpoint.save()
    with pytest.raises(AppendOnlyError):
        checkpoint.delete()
    with pytest.raises(AppendOnlyError):
        AuditCheckpoint.objects.all().update(seq=1)
    assert AuditCheckpoint.objects.get().seq == 1


@pytest.mark.postgres
@pytest.mark.parametrize("table", ["audit_auditevent", "audit_auditcheckpoint"])
@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE {table} SET seq = seq + 100",
        "DELETE FROM {table}",
        "TRUNCATE {table}",
    ],
)
def test_postgres_trigger_refuses_update_delete_and_truncate(table: str, statement: str) -> None:
    record_events(2)
    checkpoint_sign()
    with pytest.raises(DatabaseError, match="append-only"):  # noqa: SIM117
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(statement.format(table=table))
    assert AuditEvent.objects.count() == 2
    assert AuditCheckpoint.objects.count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_postgres_flush_empties_the_trail_outside_production_only() -> None:
    record_events(2)
    checkpoint_sign()
    with override_settings(PRODUCTION=True), pytest.raises(CommandError) as refused:
        call_command("flush", interactive=False, verbosity=0)
    assert "couldn't be flushed" in str(refused.value)
    assert "append-only" in str(refused.value.__cause__)  # the trigger said no
    assert (AuditEvent.objects.count(), AuditCheckpoint.objects.count()) == (2, 1)
    call_command("flush", interactive=False, verbosity=0)
    assert (AuditEvent.objects.count(), AuditCheckpoint.objects.count()) == (0, 0)
    # The session setting went with the command: TRUNCATE is refused again.
    record_events(1)
    with pytest.raises(DatabaseError, match="append-only"):  # noqa: SIM117
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("TRUNCATE audit_auditevent")
    assert AuditEvent.objects.count() == 1
