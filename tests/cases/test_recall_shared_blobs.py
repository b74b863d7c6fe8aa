"""One blob, one message: a send naming a blob a stored message names is refused
(``blob_already_attached``), so a recall cannot reach another message's attachment; and
a recall never deletes a blob another message that is not removed still names (rows
stored before the rule, written here straight into the table). The recalling device is
checked under its row lock: a revocation committing meanwhile refuses the recall."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.core.files.storage import default_storage
from django.db import connection, transaction

from collab.accounts import devices
from collab.audit.models import AuditEvent
from collab.cases.models import Blob, BlobStatus, Case, Message
from collab.cases.services.messages import SendRequest, message_send, message_send_batch
from collab.cases.services.recall import message_recall
from collab.client.case_state import CaseState
from collab.crypto.envelope import AttachmentRef, Header
from collab.crypto.recall import recall_for, sign_recall
from collab.errors import ServiceError
from tests.cases.test_recall import attach, now_ms, recall, room, send, signed  # noqa: F401
from tests.support.actor import Actor

pytestmark = pytest.mark.django_db


def stored_directly(actor: Actor, state: CaseState, text: str,
                    attachments: tuple[AttachmentRef, ...]) -> int:
    """A message stored before the one-blob rule: a valid, signed row written as the
    send would have written it."""
    envelope = state.seal({"text": text}, attachments=attachments)
    case = Case.objects.get(pk=state.case_id)
    case.last_seq += 1
    case.save(update_fields=["last_seq"])
    h = envelope.header
    Message.objects.create(
        case=case, seq=case.last_seq, epoch=h.epoch, sender=actor.user,
        sender_device_id=actor.device.device_id, client_msg_id=h.client_msg_id,
        sender_seq=h.sender_seq, header=h.encode(), signature=envelope.sig,
        ciphertext=envelope.ct,
    )
    return case.last_seq


def state_of_send() -> tuple[object, ...]:
    rows = tuple(Message.objects.order_by("case_id", "seq").values_list("case_id", "seq"))
    seqs = tuple(Case.objects.order_by("pk").values_list("pk", "last_seq"))
    return rows, seqs, AuditEvent.objects.count()


def refused_send(actor: Actor, state: CaseState, ref: AttachmentRef) -> str:
    before = state_of_send()
    with pytest.raises(ServiceError) as refused:
        send(actor, state, "the same file again", attachments=(ref,))
    assert state_of_send() == before, "a refused send changed something"
    return refused.value.code


def test_a_send_naming_a_blob_a_stored_message_names_is_refused_and_changes_nothing(
    room,  # noqa: F811
) -> None:
    pcp, derm, state = room
    blob_id, ref = attach(pcp, state)
    envelope = state.seal({"text": "image"}, attachments=(ref,))
    first = message_send(user=pcp.user, device_id=pcp.device.device_id,
                         case_id=state.case_id, envelope=envelope).seq
    assert refused_send(pcp, state, ref) == "blob_already_attached"
    # Nor by another member (sends check the case and root, not the uploader).
    assert refused_send(derm, derm.cases[state.case_id], ref) == "blob_already_attached"
    # The message naming it is still served with its attachment; a new upload is fine.
    assert derm.call("GET", f"/api/blobs/{blob_id}").status_code == 200
    _, other = attach(pcp, state)
    assert send(pcp, state, "another image", attachments=(other,)) == first + 1
    # A retry of the first send is still its acknowledgement, not a refusal.
    retry = message_send(user=pcp.user, device_id=pcp.device.device_id,
                         case_id=state.case_id, envelope=envelope)
    assert (retry.seq, retry.duplicate) == (first, True)


def test_two_items_of_one_batch_naming_one_blob_store_the_first_only(room) -> None:  # noqa: F811
    pcp, derm, state = room
    _, ref = attach(pcp, state)
    derm_state = derm.cases[state.case_id]
    batch = [
        SendRequest(pcp.user, pcp.device.device_id, state.case_id,
                    state.seal({"text": "image"}, attachments=(ref,))),
        SendRequest(derm.user, derm.device.device_id, state.case_id,
                    derm_state.seal({"text": "same image"}, attachments=(ref,))),
    ]
    results = message_send_batch(batch)
    assert results[0].seq == 1  # type: ignore[union-attr]
    assert isinstance(results[1], ServiceError) and results[1].code == "blob_already_attached"
    assert list(Message.objects.filter(case_id=state.case_id).values_list("seq", flat=True)) == [1]


def test_a_recalled_messages_blob_cannot_be_named_again(room) -> None:  # noqa: F811
    pcp, _, state = room
    _, ref = attach(pcp, state)
    seq = send(pcp, state, "image", attachments=(ref,))
    assert recall(pcp, state.case_id, seq, signed(pcp, state.case_id, seq)).status_code == 200
    assert refused_send(pcp, state, ref) == "bad_attachment"  # removed: not complete


def test_recall_of_one_message_keeps_the_blob_another_live_message_names(
    room,  # noqa: F811
) -> None:
    pcp, derm, state = room
    blob_id, ref = attach(pcp, state)
    a = send(pcp, state, "image, first time", attachments=(ref,))
    b = stored_directly(pcp, state, "same image again", (ref,))
    r = recall(pcp, state.case_id, a, signed(pcp, state.case_id, a))
    assert r.status_code == 200, r.content
    assert r.json()["removed_blobs"] == []
    blob = Blob.objects.get(pk=blob_id)
    assert blob.status == BlobStatus.COMPLETE and default_storage.exists(blob.storage_name)
    assert derm.call("GET", f"/api/blobs/{blob_id}").status_code == 200  # b still opens
    # The last message naming it takes it with it.
    r = recall(pcp, state.case_id, b, signed(pcp, state.case_id, b))
    assert r.status_code == 200 and r.json()["removed_blobs"] == [str(blob_id)]
    assert not default_storage.exists(Blob.objects.get(pk=blob_id).storage_name)


def test_a_late_message_cannot_be_reached_through_a_fresh_one_naming_its_blob(
    room,  # noqa: F811
) -> None:
    pcp, _, state = room
    blob_id, ref = attach(pcp, state)
    old = send(pcp, state, "image for the record", attachments=(ref,))
    stored_at = Message.objects.get(case_id=state.case_id, seq=old).stored_at
    Message.objects.filter(case_id=state.case_id, seq=old).update(
        stored_at=stored_at - timedelta(days=1))
    late = recall(pcp, state.case_id, old, signed(pcp, state.case_id, old))
    assert late.json()["error"] == "recall_window_passed"
    assert refused_send(pcp, state, ref) == "blob_already_attached"  # the decoy
    decoy = stored_directly(pcp, state, "decoy", (ref,))  # one stored before the rule
    r = recall(pcp, state.case_id, decoy, signed(pcp, state.case_id, decoy))
    assert r.status_code == 200 and r.json()["removed_blobs"] == []
    assert Message.objects.get(case_id=state.case_id, seq=old).removed_at is None
    assert default_storage.exists(Blob.objects.get(pk=blob_id).storage_name)


def _blocked_by(pid: int) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))", [pid]
        )
        (count,) = cursor.fetchone()
    return int(count)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_recall_racing_the_devices_revocation_waits_and_is_refused() -> None:
    pcp = Actor("pcp").register()
    state = pcp.open_case()
    seq = message_send(user=pcp.user, device_id=pcp.device.device_id, case_id=state.case_id,
                       envelope=state.seal({"text": "a note"})).seq
    stored = Message.objects.get(case_id=state.case_id, seq=seq)
    ms = now_ms()
    statement = recall_for(Header.decode(bytes(stored.header)), seq=seq,
                           device_id=pcp.device.device_id, recalled_ms=ms)
    sig = sign_recall(pcp.device.dsk_seed, statement)
    revoked, release = threading.Event(), threading.Event()
    revoker_pid: list[int] = []
    outcome: list[str] = []

    def revoke_slowly() -> None:
        try:
            with transaction.atomic():
                devices.device_revoke(actor=pcp.user, device_id=pcp.device.device_id)
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_backend_pid()")
                    revoker_pid.append(cursor.fetchone()[0])
                revoked.set()
                assert release.wait(30)
        finally:
            connection.close()

    def recall_now() -> None:
        try:
            message_recall(user=pcp.user, device_id=pcp.device.device_id,
                           case_id=state.case_id, seq=seq, recalled_ms=ms, sig=sig)
            outcome.append("recalled")
        except ServiceError as refused:
            outcome.append(refused.code)
        finally:
            connection.close()

    revoker = threading.Thread(target=revoke_slowly)
    revoker.start()
    assert revoked.wait(30)
    recaller = threading.Thread(target=recall_now)
    recaller.start()
    while _blocked_by(revoker_pid[0]) < 1 and recaller.is_alive():
        pass  # the recall is queued behind the revocation's row lock
    release.set()
    revoker.join()
    recaller.join()
    assert outcome == ["not_in_roster"]
    assert Message.objects.get(case_id=state.case_id, seq=seq).removed_at is None
    assert bytes(Message.objects.get(case_id=state.case_id, seq=seq).ciphertext) != b""
