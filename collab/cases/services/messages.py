"""Storing a message: every envelope check, a gapless per-case sequence, idempotent retries."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from collab.accounts.models import User
from collab.audit.services import AuditAction, RequestMeta, audit_record
from collab.cases import models as m
from collab.cases.access import access_case, access_roster_device
from collab.cases.services import consults
from collab.cases.services._common import crypto_failure, locked_case
from collab.cases.wire import message_wire
from collab.crypto.envelope import Envelope, verify_envelope
from collab.crypto.errors import CryptoError
from collab.crypto.primitives import sha512
from collab.errors import Forbidden, ServiceError
from collab.realtime import case_group, publish_after_commit


@dataclass(frozen=True)
class Ack:
    seq: int
    client_msg_id: bytes
    epoch: int
    duplicate: bool


def _same_message(stored: m.Message, envelope: Envelope) -> bool:
    return bytes(stored.header) == envelope.header.encode() and sha512(
        bytes(stored.ciphertext)
    ) == sha512(envelope.ct)


def _check_epoch(case: m.Case, envelope: Envelope) -> None:
    """Head epoch, or the one before it for a short grace after a rotation."""
    h = envelope.header
    if h.epoch == case.head_epoch:
        if h.log_head != bytes(case.head_hash):
            raise ServiceError("stale_log_head", "log_head is not the hash of the current epoch.")
        return
    grace = timedelta(seconds=settings.EPOCH_GRACE_SECONDS)
    if h.epoch == case.head_epoch - 1 and timezone.now() - case.head_at <= grace:
        previous = m.LogEntry.objects.filter(case=case, epoch=h.epoch).values_list(
            "entry_hash", flat=True
        )
        if [bytes(x) for x in previous] == [h.log_head]:
            return
        raise ServiceError("stale_log_head", "log_head is not the hash of that epoch.")
    raise ServiceError(
        "wrong_epoch", f"Messages go in epoch {case.head_epoch}.", head_epoch=case.head_epoch
    )


@transaction.atomic
def message_send(
    *,
    user: User,
    device_id: uuid.UUID,
    case_id: uuid.UUID,
    envelope: Envelope,
    meta: RequestMeta | None = None,
    urgent: bool = False,
) -> Ack:
    """Check, number and store one envelope; the channel layer hears of it after commit.

    A constant number of queries whatever the room size: one fan-out to the case group.
    """
    h = envelope.header
    if h.case_id != case_id:
        raise ServiceError("wrong_case", "The envelope names another case.")
    if h.sender_user_id != user.pk or h.sender_device_id != device_id:
        raise Forbidden("wrong_sender", "The envelope must name your signed-in device.")
    case = locked_case(case_id)
    stored = m.Message.objects.filter(
        sender_device_id=device_id, client_msg_id=h.client_msg_id
    ).first()
    if stored is not None:
        if stored.case_id != case.pk or not _same_message(stored, envelope):
            raise ServiceError(
                "client_msg_id_reused", "That client message id was used for other content."
            )
        return Ack(stored.seq, h.client_msg_id, stored.epoch, duplicate=True)
    device = access_roster_device(user, case.pk, device_id)
    _check_epoch(case, envelope)
    try:
        verify_envelope(envelope, bytes(device.dsk_pub), max_ct_len=settings.MAX_MESSAGE_CT_BYTES)
    except CryptoError as error:
        raise crypto_failure(error) from None
    last = (
        m.Message.objects.filter(case=case, sender_device_id=device_id)
        .order_by("-sender_seq")
        .values_list("sender_seq", flat=True)
        .first()
    )
    if last is not None and h.sender_seq <= last:
        raise ServiceError("sender_seq_not_increasing", f"sender_seq must exceed {last}.")
    _check_attachments(case, envelope)
    case.last_seq += 1
    case.save(update_fields=["last_seq"])
    message = m.Message.objects.create(
        case=case,
        seq=case.last_seq,
        epoch=h.epoch,
        sender=user,
        sender_device_id=device_id,
        client_msg_id=h.client_msg_id,
        sender_seq=h.sender_seq,
        header=h.encode(),
        signature=envelope.sig,
        ciphertext=envelope.ct,
        urgent=urgent,
    )
    audit_record(
        action=AuditAction.MESSAGE_STORED,
        actor=user,
        device_id=device_id,
        case_id=case.pk,
        target=f"message:{message.seq}",
        meta=meta,
        details={"seq": message.seq, "size": len(envelope.ct), "epoch": h.epoch},
    )
    publish_after_commit(
        case_group(case.pk), {"type": "case.message", "message": message_wire(message)}
    )
    if urgent:
        consults.urgent_sent(message=message)
    return Ack(message.seq, h.client_msg_id, h.epoch, duplicate=False)


def _check_attachments(case: m.Case, envelope: Envelope) -> None:
    refs = envelope.header.attachments
    if not refs:
        return
    blobs = {
        b.pk: bytes(b.root or b"")
        for b in m.Blob.objects.filter(
            case=case, pk__in=[r.blob_id for r in refs], status=m.BlobStatus.COMPLETE
        )
    }
    for ref in refs:
        if blobs.get(ref.blob_id) != ref.root:
            raise ServiceError(
                "bad_attachment", f"Attachment {ref.blob_id} is not a complete blob of this case."
            )


@transaction.atomic
def read_mark_set(*, user: User, case_id: uuid.UUID, up_to: int) -> int:
    """Read-up-to receipts only move forward and never past the last message."""
    case = access_case(user, case_id)
    up_to = min(up_to, case.last_seq)
    mark, _ = m.ReadMark.objects.select_for_update().get_or_create(case_id=case_id, user=user)
    if up_to > mark.up_to:
        mark.up_to = up_to
        mark.save(update_fields=["up_to", "updated_at"])
        publish_after_commit(
            case_group(case_id), {"type": "case.read", "user": str(user.pk), "up_to": up_to}
        )
    return mark.up_to
