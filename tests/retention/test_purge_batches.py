"""The purge of a large case: its statements work PURGE_BATCH rows at a time without
reading the ciphertext, and a run ends with one SQLite checkpoint, whatever the number
of messages or cases (each checkpoint may wait for readers)."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from collab.cases import models as m
from collab.cases.services import tombstones
from collab.retention import services
from collab.retention.services import case_purge, purge_expired, retention_policy_set
from tests.retention.support import Content, case_with_content, close
from tests.support.actor import Actor

pytestmark = pytest.mark.django_db


def grow(content: Content, extra: int) -> None:
    """``extra`` more messages in the case, copies of its first one under new numbers
    (the purge reads no header or ciphertext, so copies stand for sends)."""
    first = m.Message.objects.filter(case_id=content.case_id).order_by("seq").first()
    assert first is not None
    case = m.Case.objects.get(pk=content.case_id)
    top = m.Message.objects.filter(sender_device_id=first.sender_device_id).order_by(
        "-sender_seq").values_list("sender_seq", flat=True).first() or 0
    rows = [
        m.Message(
            case=case, seq=case.last_seq + i, epoch=first.epoch, sender_id=first.sender_id,
            sender_device_id=first.sender_device_id, client_msg_id=os.urandom(16),
            sender_seq=top + i, header=bytes(first.header), signature=bytes(first.signature),
            ciphertext=bytes(first.ciphertext),
        )
        for i in range(1, extra + 1)
    ]
    m.Message.objects.bulk_create(rows, batch_size=500)
    case.last_seq += extra
    case.save(update_fields=["last_seq"])


@pytest.fixture
def checkpoints(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    monkeypatch.setattr(tombstones, "_sqlite_scrub", lambda: calls.append(connection.vendor))
    return calls


def big_closed_cases(count: int, extra: int) -> list[Content]:
    pcp, derm = Actor("pcp").register(), Actor("derm", specialty="Dermatology").register()
    contents = []
    for _ in range(count):
        content = case_with_content(pcp, derm)
        grow(content, extra)
        close(pcp, content.case_id)
        contents.append(content)
    retention_policy_set(actor=None, lifespan_days=1)
    return contents


def assert_purged(content: Content, messages: int) -> None:
    rows = m.Message.objects.filter(case_id=content.case_id)
    assert rows.count() == messages
    assert not rows.filter(removed_at__isnull=True).exists()
    assert not rows.exclude(ciphertext=b"").exists()
    assert set(rows.values_list("removed_reason", flat=True)) == {m.RemovedReason.PURGED}
    assert not m.Blob.objects.filter(case_id=content.case_id).filter(
        status__in=(m.BlobStatus.UPLOADING, m.BlobStatus.COMPLETE)).exists()


def test_two_large_cases_purge_in_batched_queries_and_one_checkpoint(
    checkpoints: list[str], django_capture_on_commit_callbacks: Any,
) -> None:
    extra = 2 * services.PURGE_BATCH + 7  # three batches of messages per case
    contents = big_closed_cases(2, extra)
    with (
        time_machine.travel(timezone.now() + timedelta(days=2), tick=False),
        django_capture_on_commit_callbacks(execute=True),
        CaptureQueriesContext(connection) as queries,
    ):
        results = purge_expired()
    assert [r.messages for r in results] == [extra + 3, extra + 3]
    assert [r.blobs for r in results] == [3, 3]  # the image, the orphan, the unfinished one
    for content in contents:
        assert_purged(content, extra + 3)
    assert checkpoints == [connection.vendor]  # one for the run, not one per message
    sql = [q["sql"] for q in queries.captured_queries]
    # Per case: the lock, its schedule reads, 3 id reads + 3 updates, a blob batch, the
    # audit (about 18); a few more for the run. Never one per message (over 1,000 here).
    assert len(sql) <= 20 * len(contents), len(sql)
    reads = [s for s in sql if s.lstrip().upper().startswith("SELECT")]
    assert not [s for s in reads if "ciphertext" in s], "the purge read the ciphertext"
    assert not [s for s in reads if "chunk_hashes" in s], "the purge read the chunk hashes"


def test_one_case_purged_by_the_operator_checkpoints_once(
    checkpoints: list[str], django_capture_on_commit_callbacks: Any,
) -> None:
    (content,) = big_closed_cases(1, services.PURGE_BATCH)
    with (
        time_machine.travel(timezone.now() + timedelta(days=2), tick=False),
        django_capture_on_commit_callbacks(execute=True),
    ):
        result = case_purge(case_id=content.case_id)
    assert result.messages == services.PURGE_BATCH + 3
    assert_purged(content, services.PURGE_BATCH + 3)
    assert checkpoints == [connection.vendor]


def test_a_dry_run_reads_no_ciphertext_and_checkpoints_nothing(
    checkpoints: list[str], django_capture_on_commit_callbacks: Any,
) -> None:
    (content,) = big_closed_cases(1, 20)
    with (
        time_machine.travel(timezone.now() + timedelta(days=2), tick=False),
        django_capture_on_commit_callbacks(execute=True),
    ):
        (result,) = purge_expired(dry_run=True)
    assert (result.messages, result.dry_run) == (23, True)
    assert m.Message.objects.filter(case_id=content.case_id, removed_at__isnull=True).count() == 23
    assert checkpoints == []
