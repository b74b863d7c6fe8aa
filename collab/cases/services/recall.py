"""Recall: a sender withdraws one of their messages with a signed statement
(protocol-crypto §9e). The server checks it, deletes the ciphertext and attachments
(``message_tombstone``), keeps the statement for every client to verify, audits, and
rings the room with a content-free ``recalled`` frame."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from collab.accounts.models import User
from collab.audit.services import AuditAction, RequestMeta, audit_record
from collab.cases import models as m
from collab.cases.access import access_case, access_roster_device
from collab.cases.services.tombstones import message_tombstone
from collab.cases.wire import ms_datetime
from collab.crypto.envelope import Header
from collab.crypto.errors import CryptoError
from collab.crypto.recall import Recall, recall_for, verify_recall
from collab.crypto.wire import b64e
from collab.errors import Conflict, Forbidden, NotFound, ServiceError
from collab.realtime import case_group, publish_after_commit

# How far the recalling device's clock (the signed recalled_ms) may be from the server's:
# the stored removal time is the signed one, so it must be about now.
RECALL_CLOCK_SKEW = timedelta(minutes=2)


def recall_window() -> timedelta:
    return timedelta(minutes=settings.RECALL_WINDOW_MINUTES)


@dataclass(frozen=True)
class Recalled:
    seq: int
    by: uuid.UUID
    at: datetime
    device_id: uuid.UUID
    sig: bytes
    recall: Recall
    blob_ids: tuple[uuid.UUID, ...]


def recalled_frame(result: Recalled) -> dict[str, object]:
    """The ``recalled`` socket frame: ids, time and the signed statement, no content."""
    return {
        "type": "recalled",
        "seq": result.seq,
        "by": str(result.by),
        "at": result.at.isoformat(),
        "device": str(result.device_id),
        "sig": b64e(result.sig),
        "recall": result.recall.to_wire(),
    }


@transaction.atomic
def message_recall(
    *,
    user: User,
    device_id: uuid.UUID,
    case_id: uuid.UUID,
    seq: int,
    recalled_ms: int,
    sig: bytes,
    meta: RequestMeta | None = None,
) -> Recalled:
    """Check and apply a recall; each refusal changes nothing.

    ``not_member`` / ``not_in_roster`` (403): the caller or the recalling device is not in
    the case's head roster; ``case_on_legal_hold`` (409): the case is on legal hold
    (collab/retention), which suspends recall as it does the purge; ``no_message`` (404);
    ``not_sender`` (403): another user sent it; ``already_removed`` (409): recalled or
    purged before; ``recall_window_passed`` (403): stored longer ago than
    ``COLLAB_RECALL_WINDOW_MINUTES``; ``bad_time`` (400):
    the signed time is more than two minutes from the server's clock; ``bad_signature``
    (400): the statement does not verify with the recalling device's DSK.
    """
    access_case(user, case_id)
    device = access_roster_device(user, case_id, device_id)
    # The case row under lock (as placing a hold takes it): a hold placed concurrently
    # either waits for this recall or is seen here. A hold suspends every deletion.
    held = m.Case.objects.select_for_update().filter(pk=case_id).values_list(
        "legal_hold_at", flat=True).first()
    if held is not None:
        raise Conflict(
            "case_on_legal_hold",
            "This case is on legal hold: no message can be withdrawn until it is released.",
        )
    device = access_roster_device(user, case_id, device_id, lock=True)  # case, then device
    message = (
        m.Message.objects.select_for_update().filter(case_id=case_id, seq=seq).first()
    )
    if message is None:
        raise NotFound("no_message", "No such message in this case.")
    if message.sender_id != user.pk:
        raise Forbidden("not_sender", "Only the sender may recall a message.")
    if message.removed_at is not None:
        raise Conflict(
            "already_removed", "This message was already removed.",
            reason=message.removed_reason,
        )
    now = timezone.now()
    if now - message.stored_at > recall_window():
        raise Forbidden(
            "recall_window_passed",
            f"Messages can be recalled for {settings.RECALL_WINDOW_MINUTES} minutes.",
            window_minutes=settings.RECALL_WINDOW_MINUTES,
        )
    at = ms_datetime(recalled_ms)
    if abs(at - now) > RECALL_CLOCK_SKEW:
        raise ServiceError(
            "bad_time", "recalled_ms is too far from the server's clock.",
            server_ms=int(now.timestamp() * 1000),
        )
    recall = recall_for(
        Header.decode(bytes(message.header)), seq=seq, device_id=device_id,
        recalled_ms=recalled_ms,
    )
    try:
        verify_recall(bytes(device.dsk_pub), recall, sig)
    except CryptoError:
        raise ServiceError(
            "bad_signature", "The recall does not verify with this device's key."
        ) from None
    blob_ids = message_tombstone(message, reason=m.RemovedReason.RECALLED, now=at)
    message.recall_sig = sig
    message.recall_device_id = device_id
    message.save(update_fields=["recall_sig", "recall_device_id"])
    audit_record(
        action=AuditAction.MESSAGE_RECALLED,
        actor=user,
        device_id=device_id,
        case_id=case_id,
        target=f"message:{seq}",
        meta=meta,
        details={
            "seq": seq,
            "sender_device": str(message.sender_device_id),
            "blobs": [str(blob_id) for blob_id in blob_ids],
        },
    )
    result = Recalled(seq, user.pk, at, device_id, sig, recall, tuple(blob_ids))
    publish_after_commit(case_group(case_id), {**recalled_frame(result), "type": "case.recalled"})
    return result
