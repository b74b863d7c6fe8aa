"""Recall and legal hold: a hold suspends every deletion of the case's content, so a
recall on a held case is refused (409 ``case_on_legal_hold``) and changes nothing: the
ciphertext, the attachment files and blobs and the audit trail stay as they were.
Releasing the hold re-enables recall inside the same window (the hold does not extend
it)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.core.files.storage import default_storage
from django.test import Client

from collab.audit.models import AuditEvent
from collab.cases.models import Blob, BlobStatus, Message
from collab.client.case_state import CaseState
from tests.cases.test_recall import attach, recall, refused, send, sent_ago, signed
from tests.retention.support import admin_client
from tests.support.actor import Actor

pytestmark = pytest.mark.django_db


@pytest.fixture
def room() -> tuple[Actor, Actor, CaseState]:
    pcp = Actor("pcp").register()
    derm = Actor("derm", specialty="Dermatology").register()
    state = pcp.open_case()
    assert pcp.add(state, derm).status_code == 201
    derm.join(state.case_id)
    return pcp, derm, state


@pytest.fixture
def admin() -> Client:
    return admin_client("holder")[1]


def hold(admin: Client, case_id: uuid.UUID, *, place: bool) -> None:
    path = f"/api/retention/cases/{case_id}/hold"
    answer = admin.post(path) if place else admin.delete(path)
    assert answer.status_code == 200, answer.content


def test_a_recall_on_a_case_on_legal_hold_is_refused_and_changes_nothing(
        room, admin) -> None:
    pcp, derm, state = room
    blob_id, ref = attach(pcp, state)
    seq = send(pcp, state, "with an image", attachments=(ref,))
    ciphertext = bytes(Message.objects.get(seq=seq).ciphertext)
    hold(admin, state.case_id, place=True)
    events = AuditEvent.objects.count()
    # refused() also checks that no message, blob or audit row changed.
    assert refused(pcp, state.case_id, seq, signed(pcp, state.case_id, seq)) == (
        409, "case_on_legal_hold")
    stored = Message.objects.get(seq=seq)
    assert bytes(stored.ciphertext) == ciphertext and stored.removed_at is None
    assert stored.recall_sig is None and stored.recall_device_id is None
    blob = Blob.objects.get(pk=blob_id)
    assert blob.status != BlobStatus.REMOVED and default_storage.exists(blob.storage_name)
    assert AuditEvent.objects.count() == events
    assert derm.call("GET", f"/api/blobs/{blob_id}").status_code == 200


def test_releasing_the_hold_re_enables_recall_within_the_window(
        room, admin, settings) -> None:
    pcp, _, state = room
    settings.RECALL_WINDOW_MINUTES = 15
    seq = sent_ago(pcp, state, timedelta(minutes=5))
    hold(admin, state.case_id, place=True)
    assert refused(pcp, state.case_id, seq, signed(pcp, state.case_id, seq)) == (
        409, "case_on_legal_hold")
    hold(admin, state.case_id, place=False)
    response = recall(pcp, state.case_id, seq, signed(pcp, state.case_id, seq))
    assert response.status_code == 200, response.content
    assert Message.objects.get(seq=seq).removed_reason == "recalled"


def test_the_hold_does_not_extend_the_window(room, admin, settings) -> None:
    pcp, _, state = room
    settings.RECALL_WINDOW_MINUTES = 15
    seq = sent_ago(pcp, state, timedelta(minutes=16))
    hold(admin, state.case_id, place=True)
    assert refused(pcp, state.case_id, seq, signed(pcp, state.case_id, seq)) == (
        409, "case_on_legal_hold")
    hold(admin, state.case_id, place=False)
    body = signed(pcp, state.case_id, seq)
    assert refused(pcp, state.case_id, seq, body) == (403, "recall_window_passed")
