"""The purge: closed cases past the retention period lose their ciphertext and files,
keep their tombstones, membership log and audit trail; held, reopened and young cases
are skipped; a dry run changes nothing; a second run does nothing. Clocks are
controlled with time_machine (no sleeps)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from io import StringIO

import pytest
import time_machine
from django.core.files.storage import default_storage
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.utils import timezone

from collab.audit.models import AuditAction, AuditEvent
from collab.cases import models as m
from collab.crypto.wire import b64e
from collab.retention.services import purge_expired, retention_policy_set
from tests.retention.support import Content, case_with_content, close, fresh, reopen, send
from tests.support.actor import Actor
from tests.support.database_files import full_dump, sqlite_files


@pytest.fixture
def clock() -> Iterator[time_machine.Traveller]:
    with time_machine.travel(datetime.fromisoformat("2026-12-03T09:00:00+00:00"), tick=False) as c:
        yield c


def actors() -> tuple[Actor, Actor]:
    return Actor("pcp").register(), Actor("derm", specialty="Dermatology").register()


def snapshot(content: Content) -> dict[str, object]:
    """Everything about the case the purge may change."""
    case = m.Case.objects.get(pk=content.case_id)
    return {
        "messages": list(
            m.Message.objects.filter(case_id=content.case_id)
            .order_by("seq")
            .values_list("seq", "ciphertext", "removed_at", "removed_reason")
        ),
        "blobs": sorted(
            m.Blob.objects.filter(case_id=content.case_id).values_list("pk", "status")
        ),
        "files": [default_storage.exists(name) for name in content.files],
        "purged_at": case.purged_at,
    }


def audit_seq() -> int:
    last = AuditEvent.objects.order_by("-seq").first()
    return last.seq if last else 0


def purged(content: Content) -> bool:
    return m.Case.objects.get(pk=content.case_id).purged_at is not None


@pytest.mark.django_db
def test_a_purge_removes_ciphertext_past_the_lifespan_keeps_the_tombstones_and_the_audit_and_skips_held_cases(  # noqa: E501
    clock: time_machine.Traveller,
) -> None:
    pcp, derm = actors()
    expired = case_with_content(pcp, derm)
    held = case_with_content(pcp, derm)
    retention_policy_set(actor=None, lifespan_days=30)
    close(pcp, expired.case_id)
    close(pcp, held.case_id)
    admin = Actor("admin", role="admin")
    hold = admin.call("POST", f"/api/retention/cases/{held.case_id}/hold", device=False)
    assert hold.status_code == 200, hold.content
    log_entries = m.LogEntry.objects.filter(case_id=expired.case_id).count()
    events_before = list(AuditEvent.objects.order_by("seq").values_list("seq", "hash"))
    held_before = snapshot(held)

    clock.shift(timedelta(days=30) - timedelta(seconds=1))  # a second short of the lifespan
    assert purge_expired() == []
    assert not purged(expired)

    clock.shift(timedelta(seconds=1))
    results = purge_expired()
    assert [(r.case_id, r.messages, r.blobs) for r in results] == [(expired.case_id, 3, 3)]
    # The ciphertext is gone; the rows stay as tombstones, in order, with their seqs.
    rows = list(m.Message.objects.filter(case_id=expired.case_id).order_by("seq"))
    assert [r.seq for r in rows] == [1, 2, 3]
    assert all(bytes(r.ciphertext) == b"" for r in rows)
    assert {r.removed_reason for r in rows} == {m.RemovedReason.PURGED}
    assert all(r.removed_at == timezone.now() for r in rows)
    # The files are gone; complete and unfinished uploads are marked removed.
    assert not any(default_storage.exists(name) for name in expired.files)
    assert set(
        m.Blob.objects.filter(case_id=expired.case_id).values_list("status", flat=True)
    ) == {m.BlobStatus.REMOVED}
    assert m.Case.objects.get(pk=expired.case_id).purged_at == timezone.now()
    # The membership log and every earlier audit event are untouched; one event is added.
    assert m.LogEntry.objects.filter(case_id=expired.case_id).count() == log_entries
    after = list(AuditEvent.objects.order_by("seq").values_list("seq", "hash"))
    assert after[: len(events_before)] == events_before
    assert [e.action for e in AuditEvent.objects.filter(seq__gt=events_before[-1][0])] == [
        AuditAction.CASE_CONTENT_PURGED
    ]
    # The held case keeps everything.
    assert snapshot(held) == held_before
    assert all(default_storage.exists(name) for name in held.files)
    # The chain still verifies.
    out = StringIO()
    call_command("audit_verify", stdout=out)
    assert out.getvalue().startswith("OK: "), out.getvalue()


@pytest.mark.django_db
def test_a_second_run_purges_nothing_and_records_nothing(clock: time_machine.Traveller) -> None:
    pcp, derm = actors()
    content = case_with_content(pcp, derm)
    retention_policy_set(actor=None, lifespan_days=1)
    close(pcp, content.case_id)
    clock.shift(timedelta(days=2))
    assert len(purge_expired()) == 1
    state, seq = snapshot(content), audit_seq()
    clock.shift(timedelta(hours=1))
    assert purge_expired() == []
    assert snapshot(content) == state
    assert audit_seq() == seq


@pytest.mark.django_db
def test_a_reopened_case_is_not_purged_and_its_clock_restarts_at_the_next_closing(
    clock: time_machine.Traveller,
) -> None:
    pcp, derm = actors()
    content = case_with_content(pcp, derm)
    retention_policy_set(actor=None, lifespan_days=10)
    close(pcp, content.case_id)
    clock.shift(timedelta(days=5))
    reopen(pcp, content.case_id)
    clock.shift(timedelta(days=20))  # 25 days after the first closing, still open
    before = snapshot(content)
    assert purge_expired() == []
    assert snapshot(content) == before
    close(pcp, content.case_id)
    clock.shift(timedelta(days=9))
    assert purge_expired() == []  # 9 days after the second closing
    clock.shift(timedelta(days=1))
    assert [r.case_id for r in purge_expired()] == [content.case_id]


@pytest.mark.django_db
def test_an_empty_closed_case_is_marked_purged_once(clock: time_machine.Traveller) -> None:
    """So that its line says "were deleted on …" instead of waiting for a purge forever."""
    pcp = Actor("pcp").register()
    state = pcp.open_case()
    retention_policy_set(actor=None, lifespan_days=1)
    close(pcp, state.case_id)
    clock.shift(timedelta(days=1))
    assert [(r.case_id, r.messages, r.blobs) for r in purge_expired(dry_run=True)] == [
        (state.case_id, 0, 0)
    ]
    assert m.Case.objects.get(pk=state.case_id).purged_at is None
    assert [(r.case_id, r.messages, r.blobs) for r in purge_expired()] == [(state.case_id, 0, 0)]
    assert m.Case.objects.get(pk=state.case_id).purged_at == timezone.now()
    seq = audit_seq()
    assert purge_expired() == [] and purge_expired(dry_run=True) == []
    assert audit_seq() == seq


@pytest.mark.django_db
def test_no_retention_period_purges_nothing(clock: time_machine.Traveller) -> None:
    pcp, derm = actors()
    content = case_with_content(pcp, derm)
    close(pcp, content.case_id)
    clock.shift(timedelta(days=3650))
    before, seq = snapshot(content), audit_seq()
    assert purge_expired() == []
    assert snapshot(content) == before and audit_seq() == seq


@pytest.mark.django_db
def test_a_dry_run_lists_the_cases_and_changes_nothing(clock: time_machine.Traveller) -> None:
    pcp, derm = actors()
    content = case_with_content(pcp, derm)
    retention_policy_set(actor=None, lifespan_days=30)
    close(pcp, content.case_id)
    clock.shift(timedelta(days=31))
    before, seq = snapshot(content), audit_seq()
    out = StringIO()
    call_command("purge_expired", "--dry-run", stdout=out)
    assert f"would purge case {content.case_id} (closed 2026-12-03): 3 message(s), 3 file(s)" in (
        out.getvalue()
    )
    assert "1 case(s) would be purged" in out.getvalue()
    assert snapshot(content) == before
    assert all(default_storage.exists(name) for name in content.files)
    assert audit_seq() == seq
    out = StringIO()
    call_command("purge_expired", stdout=out)
    assert "1 case(s) purged" in out.getvalue()
    assert purged(content)


@pytest.mark.django_db
def test_releasing_a_hold_lets_the_next_run_purge(clock: time_machine.Traveller) -> None:
    pcp, derm = actors()
    content = case_with_content(pcp, derm)
    retention_policy_set(actor=None, lifespan_days=30)
    close(pcp, content.case_id)
    admin = Actor("admin", role="admin")
    path = f"/api/retention/cases/{content.case_id}/hold"
    assert admin.call("POST", path, device=False).status_code == 200
    clock.shift(timedelta(days=400))
    assert purge_expired() == []
    assert fresh(admin).call("DELETE", path, device=False).status_code == 200
    assert [r.case_id for r in purge_expired()] == [content.case_id]


# --- purge_expired --case: refusals change nothing ---------------------------------------


def _refused(*args: str) -> str:
    with pytest.raises(CommandError) as failure:
        call_command("purge_expired", *args, stdout=StringIO())
    return str(failure.value)


@pytest.mark.django_db
def test_a_purge_of_a_case_on_legal_hold_is_refused_and_changes_nothing(
    clock: time_machine.Traveller,
) -> None:
    pcp, derm = actors()
    content = case_with_content(pcp, derm)
    retention_policy_set(actor=None, lifespan_days=30)
    close(pcp, content.case_id)
    call_command("legal_hold", "place", str(content.case_id), "--by",
                 Actor("admin", role="admin").user.username, stdout=StringIO())
    clock.shift(timedelta(days=31))
    before, seq = snapshot(content), audit_seq()
    assert _refused("--case", str(content.case_id)).startswith("case_on_legal_hold:")
    assert snapshot(content) == before and audit_seq() == seq
    out = StringIO()
    call_command("purge_expired", "--dry-run", stdout=out)
    assert out.getvalue() == (
        f"kept case {content.case_id}: past the retention period, on legal hold\n"
        "0 case(s) would be purged\n"
    )


@pytest.mark.django_db
def test_a_purge_of_one_case_is_refused_unless_it_is_due(clock: time_machine.Traveller) -> None:
    pcp, derm = actors()
    content = case_with_content(pcp, derm)
    case = str(content.case_id)
    before, seq = snapshot(content), audit_seq()
    assert _refused("--case", case).startswith("not_closed:")
    close(pcp, content.case_id)
    before, seq = snapshot(content), audit_seq()
    assert _refused("--case", case).startswith("no_retention_period:")
    retention_policy_set(actor=None, lifespan_days=30)
    seq = audit_seq()
    assert _refused("--case", case).startswith("not_due:")
    assert _refused("--case", "00000000-0000-4000-8000-000000000000").startswith("no_case:")
    assert snapshot(content) == before and audit_seq() == seq
    clock.shift(timedelta(days=30))
    out = StringIO()
    call_command("purge_expired", "--case", case, stdout=out)
    assert f"purged case {case}" in out.getvalue()
    seq = audit_seq()
    assert _refused("--case", case).startswith("already_purged:")
    assert audit_seq() == seq


@pytest.mark.django_db
def test_content_sent_after_a_purge_is_purged_by_a_later_run(
    clock: time_machine.Traveller,
) -> None:
    """A purged case reopened, written to and closed again starts a new clock."""
    pcp, derm = actors()
    content = case_with_content(pcp, derm)
    retention_policy_set(actor=None, lifespan_days=1)
    close(pcp, content.case_id)
    clock.shift(timedelta(days=1))
    assert len(purge_expired()) == 1
    reopen(pcp, content.case_id)
    send(pcp, content.state, "after the purge")
    close(pcp, content.case_id)
    assert purge_expired() == []
    clock.shift(timedelta(days=1))
    assert [(r.messages, r.blobs) for r in purge_expired()] == [(1, 0)]
    assert not m.Message.objects.filter(case_id=content.case_id, removed_at__isnull=True).exists()


# --- the database dump ----------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_purged_ciphertext_is_not_in_a_database_dump() -> None:
    pcp, derm = actors()
    content = case_with_content(pcp, derm)
    retention_policy_set(actor=None, lifespan_days=1)
    close(pcp, content.case_id)
    dump = full_dump()
    assert all(ct.hex().encode() in dump.lower() for ct in content.ciphertexts)
    if connection.vendor == "sqlite":
        assert all(ct[16:80] in sqlite_files() for ct in content.ciphertexts)
    with time_machine.travel(timezone.now() + timedelta(days=2), tick=False):
        assert len(purge_expired()) == 1
    dump = full_dump().lower()
    for ciphertext in content.ciphertexts:
        assert ciphertext.hex().encode() not in dump
        assert b64e(ciphertext).encode()[:64].lower() not in dump
    assert b"cases_message" in dump
    if connection.vendor == "sqlite":  # nor in the database file or its write-ahead log
        files = sqlite_files()
        assert not any(ct[16:80] in files for ct in content.ciphertexts)


@pytest.mark.django_db
def test_after_a_purge_history_serves_tombstones_and_the_files_are_gone(
    clock: time_machine.Traveller,
) -> None:
    pcp, derm = actors()
    content = case_with_content(pcp, derm)
    retention_policy_set(actor=None, lifespan_days=1)
    close(pcp, content.case_id)
    clock.shift(timedelta(days=1))
    purge_expired()
    fresh(derm)
    page = derm.call("GET", f"/api/cases/{content.case_id}/messages?after=0")
    assert page.status_code == 200, page.content
    items = page.json()["messages"]
    assert [i["seq"] for i in items] == [1, 2, 3]
    assert all("envelope" not in i and i["removed"]["reason"] == "purged" for i in items)
    assert [i["removed"]["sender_user_id"] for i in items] == [
        str(pcp.user.pk), str(derm.user.pk), str(pcp.user.pk)
    ]
    image = content.blob_ids[0]
    download = derm.call("GET", f"/api/blobs/{image}")
    assert (download.status_code, download.json()["error"]) == (404, "no_blob")


# --- several purgers at once (PostgreSQL: row locks with SKIP LOCKED) -----------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_purger_skips_a_case_another_purger_holds() -> None:
    pcp, derm = actors()
    content = case_with_content(pcp, derm)
    retention_policy_set(actor=None, lifespan_days=1)
    close(pcp, content.case_id)
    later = timezone.now() + timedelta(days=2)
    found: list[object] = []

    def other_purger() -> None:
        try:
            found.extend(purge_expired(now=later))
        finally:
            connection.close()

    with transaction.atomic():
        m.Case.objects.select_for_update().get(pk=content.case_id)  # a purger at work
        worker = threading.Thread(target=other_purger)
        worker.start()
        worker.join(timeout=60)
    assert not worker.is_alive()
    assert found == []  # skipped, not waited for
    assert not purged(content)
    assert [r.case_id for r in purge_expired(now=later)] == [content.case_id]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_purgers_at_once_purge_and_record_each_case_once() -> None:
    pcp, derm = actors()
    cases = [case_with_content(pcp, derm) for _ in range(3)]
    retention_policy_set(actor=None, lifespan_days=1)
    for content in cases:
        close(pcp, content.case_id)
    later = timezone.now() + timedelta(days=2)
    start = threading.Barrier(2)
    results: list[list[object]] = [[], []]

    def purger(slot: int) -> None:
        try:
            start.wait(timeout=30)
            results[slot].extend(purge_expired(now=later))
        finally:
            connection.close()

    workers = [threading.Thread(target=purger, args=(i,)) for i in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    done = sorted(str(r.case_id) for r in results[0] + results[1])  # type: ignore[attr-defined]
    assert done == sorted(str(c.case_id) for c in cases)
    events = AuditEvent.objects.filter(action=AuditAction.CASE_CONTENT_PURGED)
    assert sorted(str(e.case_id) for e in events) == done
