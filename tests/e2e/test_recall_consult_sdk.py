"""Removed consult messages through the SDK against live daphne: a recalled time entry
leaves the consultant's time and the next report's minutes, a recalled report un-supersedes
the one it replaced, a time entry the server removes (no valid recall) is left out too, and
a recalled request leaves the record, for the sender and the reader, also from a fresh
keystore."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from collab.cases import models as m
from collab.client import consult
from collab.client.consult import ConsultRecord
from collab.client.recall import RECALLED
from collab.client.sdk import CollabClient
from tests.support.clients import new_member, reload
from tests.support.live import daphne_servers

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

# Keyword arguments of consult.request_body, passed through **fields.
REQUEST: dict[str, Any] = {
    "reason": "Pigmented lesion SECRET-REASON", "question": "Excise or watch?",
    "history": "Noticed 3 months ago", "medications": "None", "tried": "Nothing",
    "urgency": "soon", "callback_method": "message", "patient_consent": True}


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker) -> Iterator[str]:
    with django_db_blocker.unblock(), daphne_servers(1) as urls:
        yield urls[0]


def minutes_of(record: ConsultRecord, user: uuid.UUID) -> tuple[int, int]:
    time = record.time_of(user)
    return time.minutes, time.entries


def test_removed_consult_messages_leave_the_record(server: str, tmp_path: Path) -> None:
    pcp = new_member(server, "pcp", tmp_path)
    derm = new_member(server, "derm", tmp_path, specialty="Dermatology")
    case_id = pcp.open_case(specialty="Dermatology", urgency="soon")
    request = asyncio.run(pcp.send_consult_request(case_id, **REQUEST))
    pcp.add_member(case_id, derm.user_id)

    wrong = asyncio.run(derm.add_time(case_id, minutes=600, note="the wrong chart"))
    kept = asyncio.run(derm.add_time(case_id, minutes=7))
    first = asyncio.run(derm.send_report(case_id, assessment="Naevus",
                                         recommendations="Watch"))
    readers: tuple[CollabClient, ...] = (pcp, derm)
    for client in readers:
        assert minutes_of(client.consult_record(case_id), derm.user_id) == (607, 2)

    assert derm.recall(case_id, wrong.seq).verdict == RECALLED
    second = asyncio.run(derm.send_report(case_id, assessment="Naevus, mild atypia",
                                          recommendations="Excise"))
    for client in readers:
        record = client.consult_record(case_id)
        assert minutes_of(record, derm.user_id) == (7, 1)
        assert [(r.seq, r.superseded_by) for r in record.reports] == [
            (first.seq, second.seq), (second.seq, None)]
        # The next report's minutes leave the recalled entry out.
        assert record.reports[1].report["time"]["minutes"] == 7
        assert record.reports[0].report["time"]["minutes"] == 607

    # The recalled correction goes; the report it replaced is current again.
    derm.recall(case_id, second.seq)
    # The operator deletes the 7-minute entry with no recall: left out as well.
    m.Message.objects.filter(case_id=case_id, seq=kept.seq).update(
        ciphertext=b"", removed_at=timezone.now(), removed_reason=m.RemovedReason.RECALLED)
    for client in (*readers, reload(pcp)):
        record = client.consult_record(case_id)
        assert minutes_of(record, derm.user_id) == (0, 0)
        assert [(r.seq, r.superseded_by) for r in record.reports] == [(first.seq, None)]
        assert record.skipped == 0
    assert pcp.consult_record(case_id).request is not None  # derm joined after it

    pcp.recall(case_id, request.seq)
    for client in (*readers, reload(pcp)):
        record = client.consult_record(case_id)
        assert (record.request, record.request_seq) == (None, None)
        assert [r.seq for r in record.reports] == [first.seq]
        assert consult.billing_summary(record, record.reports[0])["request_reason_present"] is False
