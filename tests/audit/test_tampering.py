"""Every way of changing stored rows is caught and described (raw SQL, as an attacker)."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from collab.audit import canonical
from collab.audit.models import AuditEvent, AuditHead
from collab.audit.services import checkpoint_sign
from collab.audit.verify import Problem, ProblemKind, chain_verify, event_fields
from tests.audit.support import raw_sql, record_events

pytestmark = pytest.mark.django_db


def first_problem() -> Problem:
    report = chain_verify()
    assert not report.ok
    return report.problems[0]


def forged_copy(of: AuditEvent, *, seq: int, prev_hash: str, target: str) -> AuditEvent:
    """A row built by someone who knows the public hashing rule (the strongest forger)."""
    forged = AuditEvent(
        seq=seq,
        prev_hash=prev_hash,
        recorded_at=of.recorded_at,
        action=of.action,
        outcome=of.outcome,
        target=target,
        details={},
    )
    forged.hash = canonical.event_hash(event_fields(forged))
    return forged


def test_untouched_chain_verifies() -> None:
    record_events(5)
    checkpoint_sign()
    assert chain_verify().ok


def test_altered_field_is_reported_as_altered() -> None:
    record_events(5)
    with raw_sql() as cursor:
        cursor.execute("UPDATE audit_auditevent SET target = 'nothing to see' WHERE seq = 3")
    problem = first_problem()
    assert (problem.kind, problem.seq) == (ProblemKind.ALTERED, 3)
    assert "event seq 3 altered" in problem.description


def test_altered_details_are_reported_as_altered() -> None:
    record_events(3)
    with raw_sql() as cursor:
        cursor.execute("UPDATE audit_auditevent SET outcome = 'failure' WHERE seq = 2")
    assert first_problem().kind is ProblemKind.ALTERED


def test_deleted_row_is_reported_missing() -> None:
    record_events(5)
    with raw_sql() as cursor:
        cursor.execute("DELETE FROM audit_auditevent WHERE seq = 3")
    problem = first_problem()
    assert (problem.kind, problem.seq) == (ProblemKind.MISSING, 3)
    assert "event seq 3 missing" in problem.description


def test_deleted_first_row_is_reported_missing() -> None:
    record_events(3)
    with raw_sql() as cursor:
        cursor.execute("DELETE FROM audit_auditevent WHERE seq = 1")
    problem = first_problem()
    assert problem.kind is ProblemKind.MISSING
    assert "event seq 1 missing" in problem.description


def test_inserted_forged_row_is_reported_inserted() -> None:
    events = record_events(5)
    with raw_sql() as cursor:
        # Make room at seq 3 (one row at a time, keeping seq unique), then insert there.
        for seq in (5, 4, 3):
            cursor.execute("UPDATE audit_auditevent SET seq = seq + 1 WHERE seq = %s", [seq])
    AuditEvent.objects.bulk_create(
        [forged_copy(events[2], seq=3, prev_hash=events[1].hash, target="forged")]
    )
    problem = first_problem()
    assert (problem.kind, problem.seq) == (ProblemKind.INSERTED, 3)
    assert "event seq 3 inserted" in problem.description


def test_forged_row_appended_past_the_head_is_reported_inserted() -> None:
    events = record_events(3)
    AuditEvent.objects.bulk_create(
        [forged_copy(events[2], seq=4, prev_hash=events[2].hash, target="forged")]
    )
    problem = first_problem()
    assert (problem.kind, problem.seq) == (ProblemKind.INSERTED, 4)
    assert "inserted beyond the chain head" in problem.description


def test_swapped_sequence_numbers_are_reported_reordered() -> None:
    record_events(5)
    with raw_sql() as cursor:
        cursor.execute("UPDATE audit_auditevent SET seq = -1 WHERE seq = 2")
        cursor.execute("UPDATE audit_auditevent SET seq = 2 WHERE seq = 3")
        cursor.execute("UPDATE audit_auditevent SET seq = 3 WHERE seq = -1")
    problem = first_problem()
    assert (problem.kind, problem.seq) == (ProblemKind.REORDERED, 2)
    assert "event seq 2 reordered" in problem.description


def test_swapped_row_content_is_reported_reordered() -> None:
    record_events(4)
    columns = "recorded_at, action, outcome, target, details, prev_hash, hash"
    rows = {}
    with raw_sql() as cursor:
        for seq in (2, 3):
            cursor.execute(f"SELECT {columns} FROM audit_auditevent WHERE seq = %s", [seq])  # noqa: S608
            rows[seq] = cursor.fetchone()
        sets = ", ".join(f"{c.strip()} = %s" for c in columns.split(","))
        for seq, other in ((2, 3), (3, 2)):
            cursor.execute(
                f"UPDATE audit_auditevent SET {sets} WHERE seq = %s",  # noqa: S608
                [*rows[other], seq],
            )
    problem = first_problem()
    assert problem.kind is ProblemKind.REORDERED
    assert "reordered" in problem.description


def test_deleted_tail_is_reported_by_the_head() -> None:
    record_events(6)
    with raw_sql() as cursor:
        cursor.execute("DELETE FROM audit_auditevent WHERE seq > 4")
    problem = first_problem()
    assert (problem.kind, problem.seq) == (ProblemKind.MISSING, 5)
    assert "events seq 5..6 missing" in problem.description


def test_deleted_tail_with_rewound_head_is_caught_by_a_checkpoint() -> None:
    events = record_events(6)
    checkpoint_sign()
    with raw_sql() as cursor:
        cursor.execute("DELETE FROM audit_auditevent WHERE seq > 4")
        cursor.execute(
            "UPDATE audit_audithead SET seq = 4, hash = %s WHERE id = 1", [events[3].hash]
        )
    assert AuditHead.objects.get().seq == 4
    problem = first_problem()
    assert (problem.kind, problem.seq) == (ProblemKind.MISSING, 6)
    assert "checkpoint" in problem.description and "not stored" in problem.description


def test_audit_verify_command_exits_non_zero_with_the_description() -> None:
    record_events(4)
    out = StringIO()
    call_command("audit_verify", stdout=out)
    assert out.getvalue().startswith("OK: 4 events")
    with raw_sql() as cursor:
        cursor.execute("DELETE FROM audit_auditevent WHERE seq = 2")
    err = StringIO()
    with pytest.raises(SystemExit) as exit_info:
        call_command("audit_verify", stderr=err)
    assert exit_info.value.code == 1
    assert "FAILED: missing: event seq 2 missing" in err.getvalue()
