"""message_send_batch refuses an item alone: bad attachments and revoked devices.

Each refused item is answered in its slot with the code ``message_send`` gives and
leaves nothing stored (no row, no seq, no audit event); the others are stored.
"""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Sequence

import pytest
from django.utils import timezone

from collab.accounts import devices
from collab.accounts.models import Device
from collab.audit.models import AuditEvent
from collab.audit.verify import chain_verify
from collab.cases.models import Blob, BlobStatus, Message
from collab.cases.services import blobs
from collab.cases.services.messages import Ack, SendRequest, message_send, message_send_batch
from collab.crypto.attachment import AttachmentEncryptor
from collab.crypto.envelope import AttachmentRef
from collab.errors import Forbidden, ServiceError
from tests.support.rooms import Member, build_room

pytestmark = pytest.mark.django_db


def upload(member: Member, *, complete: bool = True) -> AttachmentRef:
    """An encrypted attachment uploaded by the member to its case; its true root."""
    enc = AttachmentEncryptor()
    ciphertext = b"".join(enc.chunks(io.BytesIO(os.urandom(500))))
    user, device_id = member.user, member.device.device_id
    blob = blobs.blob_create(
        user=user, device_id=device_id, case_id=member.state.case_id, size=len(ciphertext)
    )
    blobs.blob_part_put(user=user, blob_id=blob.pk, offset=0, length=len(ciphertext),
                        read=io.BytesIO(ciphertext).read, device_id=device_id)
    root = enc.manifest(blob.pk, mime="image/jpeg").root
    if complete:
        blobs.blob_complete(user=user, blob_id=blob.pk, root=root, device_id=device_id)
    return AttachmentRef(blob.pk, root)


def send(member: Member, text: str, *attachments: AttachmentRef) -> SendRequest:
    envelope = member.state.seal({"text": text}, attachments=attachments)
    return SendRequest(member.user, member.device.device_id, member.state.case_id, envelope)


def answers(results: Sequence[Ack | ServiceError]) -> list[str | int]:
    return [r.code if isinstance(r, ServiceError) else r.seq for r in results]


def stored(member: Member) -> list[tuple[int, bytes]]:
    rows = Message.objects.filter(case_id=member.state.case_id).order_by("seq")
    return [(seq, bytes(cmid)) for seq, cmid in rows.values_list("seq", "client_msg_id")]


def cmid(request: SendRequest) -> bytes:
    return request.envelope.header.client_msg_id


def test_bad_attachments_are_refused_alone_and_a_good_one_is_stored() -> None:
    a, a2 = build_room(2, "att")
    (b,) = build_room(1, "other")
    good, elsewhere = upload(a), upload(b)
    unfinished = upload(a, complete=False)
    assert Blob.objects.get(pk=unfinished.blob_id).status != BlobStatus.COMPLETE
    before = AuditEvent.objects.count()
    batch = [
        send(a, "with a photo", good),
        send(a, "another case's blob", elsewhere),
        send(a, "an unfinished upload", unfinished),
        send(a, "the right blob, the wrong root", AttachmentRef(good.blob_id, bytes(64))),
        send(a, "one good, one of another case", good, elsewhere),
        send(a, "no such blob", AttachmentRef(uuid.uuid4(), good.root)),
        send(a2, "plain"),
        send(a2, "the same photo again", good),  # one blob, one message
    ]
    results = message_send_batch(batch)
    assert answers(results) == [1, *["bad_attachment"] * 5, 2, "blob_already_attached"]
    assert stored(a) == [(1, cmid(batch[0])), (2, cmid(batch[6]))]
    assert Message.objects.count() == 2
    assert AuditEvent.objects.count() == before + 2
    assert chain_verify().ok
    # The same refusals one at a time (message_send) give the same code.
    for refused in batch[1:6]:
        with pytest.raises(ServiceError) as alone:
            message_send(user=refused.user, device_id=refused.device_id,
                         case_id=refused.case_id, envelope=refused.envelope)
        assert alone.value.code == "bad_attachment"
    assert Message.objects.count() == 2


def test_two_cases_in_one_batch_naming_each_others_blobs_are_both_refused() -> None:
    (a,) = build_room(1, "x")
    (b,) = build_room(1, "y")
    mine_a, mine_b = upload(a), upload(b)
    batch = [
        send(a, "b's blob", mine_b),
        send(b, "a's blob", mine_a),
        send(a, "my blob", mine_a),
        send(b, "my blob", mine_b),
    ]
    results = message_send_batch(batch)
    assert answers(results) == ["bad_attachment", "bad_attachment", 1, 1]
    assert stored(a) == [(1, cmid(batch[2]))]
    assert stored(b) == [(1, cmid(batch[3]))]
    assert chain_verify().ok


def revoke_by_service(member: Member) -> None:
    devices.device_revoke(actor=member.user, device_id=member.device.device_id)


def revoke_by_operator(member: Member) -> None:
    """Stamped straight in the table: no roster change, no doorbell, no session ended."""
    Device.objects.filter(pk=member.device.device_id).update(revoked_at=timezone.now())


@pytest.mark.parametrize("revoke", [revoke_by_service, revoke_by_operator])
def test_a_revoked_device_in_a_batch_is_refused_as_message_send_refuses_it(revoke) -> None:
    a, b, c = build_room(3, "rev")
    # b's device could send before: what follows is refused for its revocation only.
    assert answers(message_send_batch([send(b, "before")])) == [1]
    revoke(b)
    before = AuditEvent.objects.count()
    batch = [send(a, "1"), send(b, "revoked"), send(c, "2"), send(b, "revoked again")]
    results = message_send_batch(batch)
    with pytest.raises(ServiceError) as alone:
        later = send(b, "alone")
        message_send(user=b.user, device_id=later.device_id, case_id=later.case_id,
                     envelope=later.envelope)
    assert isinstance(alone.value, Forbidden)
    assert answers(results) == [2, alone.value.code, 3, alone.value.code]
    assert all(isinstance(results[i], Forbidden) for i in (1, 3))
    assert stored(a) == [(1, stored(a)[0][1]), (2, cmid(batch[0])), (3, cmid(batch[2]))]
    assert not Message.objects.filter(sender_device_id=b.device.device_id, seq__gt=1).exists()
    assert AuditEvent.objects.filter(action="message_stored").count() == 3
    assert AuditEvent.objects.count() == before + 2
    assert chain_verify().ok
