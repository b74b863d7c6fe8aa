"""Recall over HTTP (POST /api/cases/<id>/messages/<seq>/recall): the sender's signed
statement turns a message into a tombstone, deletes its attachments' files, and every
refusal (each with its own code) changes nothing."""

from __future__ import annotations

import dataclasses
import io
import uuid
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.core.files.storage import default_storage
from django.utils import timezone

from collab.audit.models import AuditEvent
from collab.cases.models import Blob, BlobStatus, Message
from collab.cases.services.messages import message_send
from collab.client.case_state import CaseState
from collab.client.keys import DeviceKeys
from collab.crypto.attachment import AttachmentEncryptor
from collab.crypto.envelope import AttachmentRef, Header
from collab.crypto.primitives import ed25519_public, sha512
from collab.crypto.recall import Recall, recall_for, sign_recall, verify_recall
from collab.crypto.wire import b64d, b64e
from collab.errors import ServiceError
from tests.cases.test_blobs import upload
from tests.cases.test_revocation import revoke, second_device
from tests.support.actor import Actor
from tests.support.users import verified_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def room() -> tuple[Actor, Actor, CaseState]:
    pcp = Actor("pcp").register()
    derm = Actor("derm", specialty="Dermatology").register()
    state = pcp.open_case()
    assert pcp.add(state, derm).status_code == 201
    derm.join(state.case_id)
    return pcp, derm, state


def send(actor: Actor, state: CaseState, text: str = "a note",
         attachments: tuple[AttachmentRef, ...] = ()) -> int:
    ack = message_send(
        user=actor.user, device_id=actor.device.device_id, case_id=state.case_id,
        envelope=state.seal({"text": text}, attachments=attachments),
    )
    return ack.seq


def now_ms() -> int:
    return int(timezone.now().timestamp() * 1000)


def signed(actor: Actor, case_id: uuid.UUID, seq: int, *, ms: int | None = None,
           seed: bytes | None = None, device_id: uuid.UUID | None = None) -> dict[str, Any]:
    """The recall body for message ``seq`` as stored, signed with ``seed`` (the actor's
    DSK unless told otherwise)."""
    stored = Message.objects.get(case_id=case_id, seq=seq)
    when = now_ms() if ms is None else ms
    statement = recall_for(Header.decode(bytes(stored.header)), seq=seq,
                           device_id=device_id or actor.device.device_id, recalled_ms=when)
    sig = sign_recall(seed if seed is not None else actor.device.dsk_seed, statement)
    return {"recalled_ms": when, "sig": b64e(sig)}


def recall(actor: Actor, case_id: uuid.UUID, seq: int, body: dict[str, Any]) -> Any:
    return actor.call("POST", f"/api/cases/{case_id}/messages/{seq}/recall", body)


def snapshot() -> tuple[Any, ...]:
    """Everything a refused recall must leave as it was."""
    rows = tuple(
        Message.objects.order_by("seq").values_list(
            "seq", "ciphertext", "removed_at", "removed_reason", "recall_sig", "recall_device_id"
        )
    )
    blobs = tuple(Blob.objects.order_by("pk").values_list("pk", "status"))
    return tuple((r[0], bytes(r[1]), *r[2:]) for r in rows), blobs, AuditEvent.objects.count()


def history(actor: Actor, state: CaseState) -> list[dict[str, Any]]:
    response = actor.call("GET", f"/api/cases/{state.case_id}/messages?after=0")
    assert response.status_code == 200, response.content
    items: list[dict[str, Any]] = response.json()["messages"]
    return items


def attach(actor: Actor, state: CaseState) -> tuple[uuid.UUID, AttachmentRef]:
    enc = AttachmentEncryptor()
    chunks = list(enc.chunks(io.BytesIO(b"\x89PNG image bytes " * 500)))
    blob_id = uuid.UUID(upload(actor, state.case_id, chunks))
    manifest = enc.manifest(blob_id, mime="image/png")
    done = actor.call("POST", f"/api/blobs/{blob_id}/complete", {"root": b64e(manifest.root)})
    assert done.status_code == 200, done.content
    return blob_id, AttachmentRef(blob_id, manifest.root)


def test_sender_recall_leaves_a_verifiable_tombstone_and_no_ciphertext(room) -> None:
    pcp, derm, state = room
    keep = send(pcp, state, "stays")
    seq = send(pcp, state, "recall me")
    ciphertext = bytes(Message.objects.get(seq=seq).ciphertext)
    body = signed(pcp, state.case_id, seq)
    response = recall(pcp, state.case_id, seq, body)
    assert response.status_code == 200, response.content
    answer = response.json()
    assert (answer["seq"], answer["by"], answer["device"]) == (
        seq, str(pcp.user.pk), str(pcp.device.device_id))
    assert answer["removed_blobs"] == []
    stored = Message.objects.get(seq=seq)
    assert bytes(stored.ciphertext) == b"" and stored.removed_reason == "recalled"
    assert stored.removed_at is not None and stored.recall_sig is not None
    assert int(stored.removed_at.timestamp() * 1000) == body["recalled_ms"]
    assert bytes(stored.recall_sig) == b64d(body["sig"])
    assert stored.recall_device_id == pcp.device.device_id
    assert bytes(Message.objects.get(seq=keep).ciphertext) != b""
    # Another member's history: the kept message whole, the recalled one a tombstone
    # carrying a statement that verifies with the sender's device key.
    items = {item["seq"]: item for item in history(derm, state)}
    assert "envelope" in items[keep] and "removed" not in items[keep]
    tomb = items[seq]
    assert "envelope" not in tomb
    assert b64e(ciphertext) not in str(tomb)
    assert tomb["removed"]["reason"] == "recalled"
    assert tomb["removed"]["sender_user_id"] == str(pcp.user.pk)
    statement = Recall.from_wire(tomb["removed"]["recall"])
    assert statement.seq == seq and statement.recalled_ms == body["recalled_ms"]
    verify_recall(ed25519_public(pcp.device.dsk_seed), statement,
                  b64d(tomb["removed"]["recall"]["sig"], 64))


def test_recall_deletes_the_attachment_files_and_marks_the_blobs_removed(room) -> None:
    pcp, derm, state = room
    blob_id, ref = attach(pcp, state)
    blob = Blob.objects.get(pk=blob_id)
    assert default_storage.exists(blob.storage_name)
    seq = send(pcp, state, "see image", attachments=(ref,))
    response = recall(pcp, state.case_id, seq, signed(pcp, state.case_id, seq))
    assert response.status_code == 200, response.content
    assert response.json()["removed_blobs"] == [str(blob_id)]
    blob.refresh_from_db()
    assert blob.status == BlobStatus.REMOVED
    assert not default_storage.exists(blob.storage_name)
    gone = derm.call("GET", f"/api/blobs/{blob_id}")
    assert (gone.status_code, gone.json()["error"]) == (404, "no_blob")


def test_recall_spares_another_members_attachment_named_in_the_header(room) -> None:
    pcp, derm, state = room
    blob_id, ref = attach(pcp, state)
    derm_state = derm.cases[state.case_id]
    seq = send(derm, derm_state, "forwarding pcp's image", attachments=(ref,))
    response = recall(derm, state.case_id, seq, signed(derm, state.case_id, seq))
    assert response.status_code == 200, response.content
    assert response.json()["removed_blobs"] == []
    blob = Blob.objects.get(pk=blob_id)
    assert blob.status == BlobStatus.COMPLETE and default_storage.exists(blob.storage_name)


def refused(actor: Actor, case_id: uuid.UUID, seq: int, body: Any) -> tuple[int, str]:
    before = snapshot()
    response = recall(actor, case_id, seq, body)
    assert snapshot() == before, "a refused recall changed something"
    return response.status_code, response.json()["error"]


def test_recall_by_another_member_is_not_sender(room) -> None:
    pcp, derm, state = room
    seq = send(pcp, state)
    assert refused(derm, state.case_id, seq, signed(derm, state.case_id, seq)) == (
        403, "not_sender")


def sent_ago(actor: Actor, state: CaseState, ago: timedelta) -> int:
    """A message stored ``ago`` before now (the clock moved back for the send only: the
    signed-in session keeps its own time)."""
    with time_machine.travel(timezone.now() - ago, tick=False):
        return send(actor, state)


def test_recall_after_the_window_is_refused(room, settings) -> None:
    pcp, _, state = room
    settings.RECALL_WINDOW_MINUTES = 15
    seq = sent_ago(pcp, state, timedelta(minutes=15, seconds=1))
    status, code = refused(pcp, state.case_id, seq, signed(pcp, state.case_id, seq))
    assert (status, code) == (403, "recall_window_passed")


def test_recall_window_follows_the_setting(room, settings) -> None:
    pcp, _, state = room
    settings.RECALL_WINDOW_MINUTES = 30
    seq = sent_ago(pcp, state, timedelta(minutes=20))
    response = recall(pcp, state.case_id, seq, signed(pcp, state.case_id, seq))
    assert response.status_code == 200, response.content
    settings.RECALL_WINDOW_MINUTES = 15
    other = sent_ago(pcp, state, timedelta(minutes=14))
    assert recall(pcp, state.case_id, other, signed(pcp, state.case_id, other)).status_code == 200


def test_recall_signed_by_another_key_is_bad_signature(room) -> None:
    pcp, derm, state = room
    seq = send(pcp, state)
    forged = signed(pcp, state.case_id, seq, seed=derm.device.dsk_seed)
    assert refused(pcp, state.case_id, seq, forged) == (400, "bad_signature")


def test_recall_signature_moved_to_another_message_is_bad_signature(room) -> None:
    pcp, _, state = room
    first, second = send(pcp, state, "one"), send(pcp, state, "two")
    body = signed(pcp, state.case_id, first)
    assert refused(pcp, state.case_id, second, body) == (400, "bad_signature")


def test_recall_with_a_far_clock_is_bad_time(room) -> None:
    pcp, _, state = room
    seq = send(pcp, state)
    late = signed(pcp, state.case_id, seq, ms=now_ms() - 10 * 60 * 1000)
    assert refused(pcp, state.case_id, seq, late) == (400, "bad_time")


def test_recall_of_a_missing_seq_is_no_message(room) -> None:
    pcp, _, state = room
    seq = send(pcp, state)
    assert refused(pcp, state.case_id, seq + 5, signed(pcp, state.case_id, seq)) == (
        404, "no_message")


def test_second_recall_is_already_removed(room) -> None:
    pcp, _, state = room
    seq = send(pcp, state)
    body = signed(pcp, state.case_id, seq)
    assert recall(pcp, state.case_id, seq, body).status_code == 200
    assert refused(pcp, state.case_id, seq, body) == (409, "already_removed")


def test_recall_by_an_outsider_is_not_member(room) -> None:
    pcp, _, state = room
    outsider = Actor("outsider").register()
    seq = send(pcp, state)
    body = signed(pcp, state.case_id, seq, seed=outsider.device.dsk_seed)
    assert refused(outsider, state.case_id, seq, body) == (403, "not_member")


def test_recall_from_a_device_outside_the_roster_is_not_in_roster(room) -> None:
    pcp, _, state = room
    seq = send(pcp, state)
    # A second device of the sender, registered but never added to the case.
    second = DeviceKeys.generate(pcp.user.pk)
    cert = pcp.identity.certify(second)
    added = pcp.call("POST", "/api/devices", {"cert": cert.to_wire(), "name": "2"})
    assert added.status_code == 201, added.content
    pcp.device = second
    body = signed(pcp, state.case_id, seq)
    assert refused(pcp, state.case_id, seq, body) == (403, "not_in_roster")


@pytest.mark.hostile_input
@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"recalled_ms": "soon", "sig": b64e(bytes(64))}, "bad_field"),
        ({"recalled_ms": True, "sig": b64e(bytes(64))}, "bad_field"),
        ({"recalled_ms": 1, "sig": b64e(bytes(10))}, "bad_length"),
        ({"recalled_ms": 1, "sig": "not base64!"}, "bad_base64"),
        ({"recalled_ms": 1}, "bad_base64"),
    ],
)
def test_malformed_recall_is_refused_with_its_code(room, body, code) -> None:
    pcp, _, state = room
    seq = send(pcp, state)
    assert refused(pcp, state.case_id, seq, body) == (400, code)


def test_recall_statement_binds_the_header_hash(room) -> None:
    """What the server verifies is the statement of the stored header: a client that
    signs over another header hash (a message it never sent) is refused."""
    pcp, _, state = room
    seq = send(pcp, state)
    stored = Message.objects.get(seq=seq)
    statement = recall_for(Header.decode(bytes(stored.header)), seq=seq,
                           device_id=pcp.device.device_id, recalled_ms=now_ms())
    other = dataclasses.replace(statement, header_hash=sha512(b"another header"))
    body = {"recalled_ms": statement.recalled_ms,
            "sig": b64e(sign_recall(pcp.device.dsk_seed, other))}
    assert refused(pcp, state.case_id, seq, body) == (400, "bad_signature")


def test_another_device_of_the_sender_in_the_roster_may_recall(room) -> None:
    pcp, _, state = room
    seq = send(pcp, state, "from the phone")
    laptop = second_device(pcp, state)
    response = recall(laptop, state.case_id, seq, signed(laptop, state.case_id, seq))
    assert response.status_code == 200, response.content
    assert response.json()["device"] == str(laptop.device.device_id)
    stored = Message.objects.get(seq=seq)
    assert stored.recall_device_id == laptop.device.device_id
    assert stored.sender_device_id == pcp.device.device_id
    # Revoked, the laptop may no longer recall the phone's messages.
    other = send(pcp, state, "second")
    revoke(pcp, laptop.device.device_id)
    laptop.client = verified_client(laptop.user)  # revocation ended its sessions
    body = signed(laptop, state.case_id, other)
    status, code = refused(laptop, state.case_id, other, body)
    assert (status, code) == (403, "device_revoked")


def test_a_late_retry_of_a_recalled_message_is_a_duplicate_and_stores_nothing(room) -> None:
    pcp, _, state = room
    envelope = state.seal({"text": "sent twice by a flaky network"})
    first = message_send(user=pcp.user, device_id=pcp.device.device_id,
                         case_id=state.case_id, envelope=envelope)
    assert recall(pcp, state.case_id, first.seq,
                  signed(pcp, state.case_id, first.seq)).status_code == 200
    again = message_send(user=pcp.user, device_id=pcp.device.device_id,
                         case_id=state.case_id, envelope=envelope)
    assert (again.seq, again.duplicate) == (first.seq, True)
    assert Message.objects.count() == 1
    assert bytes(Message.objects.get().ciphertext) == b""  # the retry brings nothing back
    # Other bytes under the same client message id are still refused.
    other = dataclasses.replace(envelope, ct=envelope.ct[:-1] + bytes([envelope.ct[-1] ^ 1]))
    with pytest.raises(ServiceError) as error:
        message_send(user=pcp.user, device_id=pcp.device.device_id, case_id=state.case_id,
                     envelope=other)
    assert error.value.code == "client_msg_id_reused"
