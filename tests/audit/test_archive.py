from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from collab.audit.models import AuditCheckpoint, AuditEvent
from collab.audit.verify import ProblemKind, chain_verify
from tests.audit.support import raw_sql, record_events

pytestmark = pytest.mark.django_db


def test_archive_writes_events_and_a_signed_anchor_and_keeps_the_rows(tmp_path: Path) -> None:
    old = record_events(3)
    cutoff = timezone.now()
    record_events(2)
    out = tmp_path / "audit-2025.jsonl"
    call_command("audit_archive", "--before", cutoff.isoformat(), "--output", str(out))
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines[0]["type"] == "header"
    assert [line["seq"] for line in lines[1:-1]] == [1, 2, 3]
    anchor = lines[-1]
    assert (anchor["type"], anchor["seq"], anchor["hash"]) == ("anchor", 3, old[-1].hash)
    assert anchor["checkpoint"]["seq"] == 3 and anchor["checkpoint"]["signature"]
    assert AuditEvent.objects.count() == 5  # never silently dropped
    assert AuditCheckpoint.objects.get().reason == "archive"
    with pytest.raises(CommandError, match="never overwritten"):
        call_command("audit_archive", "--before", cutoff.isoformat(), "--output", str(out))


def test_verify_starts_from_the_anchor_after_a_dba_removes_archived_rows(tmp_path: Path) -> None:
    record_events(3)
    cutoff = timezone.now()
    record_events(2)
    call_command("audit_archive", "--before", cutoff.isoformat(), "--output", str(tmp_path / "a"))
    with raw_sql() as cursor:
        cursor.execute("DELETE FROM audit_auditevent WHERE seq <= 3")
    report = chain_verify()
    assert report.ok, report.problems
    assert (report.first_seq, report.events) == (4, 2)


def test_rows_removed_without_an_anchor_are_reported_missing() -> None:
    record_events(5)
    with raw_sql() as cursor:
        cursor.execute("DELETE FROM audit_auditevent WHERE seq <= 2")
    problem = chain_verify().problems[0]
    assert problem.kind is ProblemKind.MISSING
    assert "events seq 1..2 missing" in problem.description


def test_archive_refuses_a_broken_chain_and_a_bad_date(tmp_path: Path) -> None:
    record_events(3)
    with raw_sql() as cursor:
        cursor.execute("UPDATE audit_auditevent SET target = 'x' WHERE seq = 2")
    with pytest.raises(CommandError, match="does not verify"):
        call_command("audit_archive", "--before", "2999-01-01", "--output", str(tmp_path / "b"))
    with pytest.raises(CommandError, match="ISO 8601"):
        call_command("audit_archive", "--before", "soon", "--output", str(tmp_path / "c"))
