"""audit_record_many: a batch appends under one head lock and chains like single records."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from collab.audit import canonical
from collab.audit.models import AuditCheckpoint, AuditEvent, AuditHead
from collab.audit.services import (
    AuditAction,
    AuditRecord,
    Outcome,
    RequestMeta,
    audit_record,
    audit_record_many,
)
from collab.audit.verify import chain_verify, event_fields
from tests.audit.support import record_events
from tests.support.users import make_user

pytestmark = pytest.mark.django_db

FIXED_NOW = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


class _RolledBack(Exception):
    pass


def _records(count: int, actor=None) -> list[AuditRecord]:
    return [
        AuditRecord(
            action=AuditAction.MESSAGE_STORED if i % 2 else AuditAction.HISTORY_READ,
            actor=actor,
            outcome=Outcome.SUCCESS if i % 3 else Outcome.FAILURE,
            reason="" if i % 3 else "why",
            target=f"message:{i}",
            meta=RequestMeta(address="10.0.0.7", user_agent="pytest"),
            details={"seq": i, "size": 10 * i},
        )
        for i in range(count)
    ]


def _single(record: AuditRecord) -> AuditEvent:
    return audit_record(
        action=record.action,
        actor=record.actor,
        device_id=record.device_id,
        outcome=record.outcome,
        reason=record.reason,
        case_id=record.case_id,
        target=record.target,
        meta=record.meta,
        details=record.details,
    )


def _head() -> tuple[int, str]:
    head = AuditHead.objects.get(pk=1)
    return head.seq, head.hash


def test_a_batch_chains_exactly_like_as_many_single_records(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(timezone, "now", lambda: FIXED_NOW)
    actor = make_user("auditor")
    record_events(2)
    records = _records(7, actor)
    with pytest.raises(_RolledBack), transaction.atomic():
        singles = [(e.seq, e.prev_hash, e.hash) for e in map(_single, records)]
        raise _RolledBack
    assert AuditEvent.objects.count() == 2
    batch = audit_record_many(records)
    assert [(e.seq, e.prev_hash, e.hash) for e in batch] == singles
    assert [e.seq for e in batch] == list(range(3, 10))
    stored = list(AuditEvent.objects.filter(seq__gt=2).order_by("seq"))
    assert [e.hash for e in stored] == [e.hash for e in batch]
    assert all(e.pk is not None and not e._state.adding for e in batch)
    assert _head() == (9, batch[-1].hash)
    report = chain_verify()
    assert report.ok, report.problems
    assert report.events == 9


def test_a_batch_event_hashes_what_it_stores() -> None:
    batch = audit_record_many(_records(4))
    for event in AuditEvent.objects.filter(pk__in=[e.pk for e in batch]):
        assert canonical.event_hash(event_fields(event)) == event.hash


def test_checkpoints_land_on_every_multiple_crossed_inside_a_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLLAB_AUDIT_CHECKPOINT_EVERY", "3")
    record_events(1)                      # seq 1
    batch = audit_record_many(_records(8))  # seq 2..9: multiples 3, 6, 9
    audit_record_many(_records(2))          # 10, 11: none
    audit_record_many(_records(1))          # 12
    checkpoints = list(AuditCheckpoint.objects.order_by("seq"))
    assert [c.seq for c in checkpoints] == [3, 6, 9, 12]
    by_seq = {e.seq: e.hash for e in AuditEvent.objects.all()}
    assert all(c.event_hash == by_seq[c.seq] for c in checkpoints)
    assert checkpoints[2].event_hash == batch[-1].hash
    report = chain_verify()
    assert report.ok, report.problems
    assert report.checkpoints == 4


def test_a_rolled_back_batch_leaves_no_events_and_the_head_unchanged() -> None:
    record_events(2)
    head = _head()
    with pytest.raises(_RolledBack), transaction.atomic():
        audit_record_many(_records(5))
        assert _head()[0] == 7
        raise _RolledBack
    assert AuditEvent.objects.count() == 2
    assert _head() == head
    after = audit_record_many(_records(2))
    assert [e.seq for e in after] == [3, 4]
    assert after[0].prev_hash == head[1]
    assert chain_verify().ok


def test_one_refused_detail_refuses_the_whole_batch_before_writing() -> None:
    record_events(1)
    head = _head()
    bad = AuditRecord(action=AuditAction.AUDIT_VIEWED, details={"ciphertext": "x"})
    with pytest.raises(ValueError, match="ciphertext"):
        audit_record_many([*_records(3), bad])
    assert AuditEvent.objects.count() == 1
    assert _head() == head


def test_a_batch_costs_the_same_queries_whatever_its_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLLAB_AUDIT_CHECKPOINT_EVERY", "0")
    record_events(1)  # the head row exists
    counts = []
    for size in (1, 10, 50):
        with CaptureQueriesContext(connection) as ctx:
            audit_record_many(_records(size))
        counts.append(len(ctx.captured_queries))
    assert counts[0] == counts[1] == counts[2], counts
    with CaptureQueriesContext(connection) as ctx:
        assert audit_record_many([]) == []
    assert len(ctx.captured_queries) == 0
    assert chain_verify().ok
