"""Storing messages: every envelope check, a gapless per-case sequence, idempotent retries.

Sends are stored in batches (``message_send_batch``): one transaction and a constant
number of queries per batch, whatever its size and the rooms' sizes. ``message_send`` is
a batch of one.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import OuterRef, Q, Subquery
from django.utils import timezone

from collab.accounts.models import Device, User
from collab.audit.services import (
    AuditAction,
    AuditRecord,
    RequestMeta,
    audit_record_many,
)
from collab.cases import models as m
from collab.cases.access import access_case, access_roster_devices
from collab.cases.services import attachment_refs, consult_record, consults, inbox
from collab.cases.services._common import crypto_failure
from collab.cases.wire import message_wire
from collab.crypto.envelope import Envelope, verify_envelope
from collab.crypto.errors import CryptoError
from collab.crypto.primitives import sha512
from collab.errors import Forbidden, NotFound, ServiceError
from collab.realtime import case_group, publish_after_commit, publish_many_after_commit


@dataclass(frozen=True)
class Ack:
    seq: int
    client_msg_id: bytes
    epoch: int
    duplicate: bool


log = logging.getLogger("collab.cases.messages")

# A deadlock or serialization failure (SQLSTATE class 40) is retried this many times.
RETRIES_ON_CONFLICT = 3


@dataclass(frozen=True)
class SendRequest:
    user: User
    device_id: uuid.UUID
    case_id: uuid.UUID
    envelope: Envelope
    meta: RequestMeta | None = None
    urgent: bool = False


def _same_message(stored: m.Message, envelope: Envelope) -> bool:
    if stored.removed_at is not None:  # a tombstone (services/tombstones.py): no ciphertext
        # left to compare, but its signed header fixes H(ct): a late retry is the same one.
        return bytes(stored.header) == envelope.header.encode() and sha512(
            envelope.ct) == envelope.header.ct_hash
    return bytes(stored.header) == envelope.header.encode() and sha512(
        bytes(stored.ciphertext)
    ) == sha512(envelope.ct)


def _check_epoch(
    case: m.Case,
    envelope: Envelope,
    previous: dict[tuple[uuid.UUID, int], list[bytes]],
    now: datetime,
) -> None:
    """Head epoch, or the one before it for a short grace after a rotation."""
    h = envelope.header
    if h.epoch == case.head_epoch:
        if h.log_head != bytes(case.head_hash):
            raise ServiceError("stale_head", "log_head is not the hash of the current epoch.")
        return
    if _in_grace(case, h.epoch, now):
        if previous.get((case.pk, h.epoch), []) == [h.log_head]:
            return
        raise ServiceError("stale_head", "log_head is not the hash of that epoch.")
    raise ServiceError(
        "wrong_epoch", f"Messages go in epoch {case.head_epoch}.", head_epoch=case.head_epoch
    )


def _in_grace(case: m.Case, epoch: int, now: datetime) -> bool:
    grace = timedelta(seconds=settings.EPOCH_GRACE_SECONDS)
    return epoch == case.head_epoch - 1 and now - case.head_at <= grace


def message_send(
    *,
    user: User,
    device_id: uuid.UUID,
    case_id: uuid.UUID,
    envelope: Envelope,
    meta: RequestMeta | None = None,
    urgent: bool = False,
) -> Ack:
    """Check, number and store one envelope (a batch of one); raises its refusal."""
    request = SendRequest(user, device_id, case_id, envelope, meta, urgent)
    result = message_send_batch([request])[0]
    if isinstance(result, ServiceError):
        raise result
    return result


def message_send_batch(requests: Sequence[SendRequest]) -> list[Ack | ServiceError]:
    """Check, number and store many envelopes in ONE transaction; results in request order.

    A refused item (ServiceError, incl. Forbidden/NotFound) is returned in its slot and
    changes nothing; the others are stored. Raises DatabaseError only when the whole
    transaction failed (then nothing of the batch is stored), with one exception: after
    a race (IntegrityError) the items run again one by one, and if one of those fails,
    the items before it may be stored; a retry of them answers ``duplicate=True``.
    After commit, each case in the batch hears of its new messages in one
    ``case.messages`` event, in seq order.
    """
    if not requests:
        return []
    for attempt in range(RETRIES_ON_CONFLICT + 1):
        try:
            return _store_batch(requests)
        except IntegrityError:
            # A race with another process (the same client_msg_id in another case's
            # batch): alone, each item re-reads what is stored and answers for itself.
            if len(requests) > 1:
                return [item for request in requests for item in _store_alone(request)]
            if attempt > 0:
                raise
        except DatabaseError as error:
            if attempt == RETRIES_ON_CONFLICT or not _is_conflict(error):
                raise
            log.info("message batch retried after %r", error)
    raise AssertionError("unreachable")  # pragma: no cover - every path returns or raises


def _store_alone(request: SendRequest) -> list[Ack | ServiceError]:
    return message_send_batch([request])


def _is_conflict(error: DatabaseError) -> bool:
    """A PostgreSQL deadlock or serialization failure: the batch may simply run again."""
    # Only these two: 40003 (outcome unknown) may have committed, so it is not retried.
    return getattr(error.__cause__, "sqlstate", None) in ("40P01", "40001")


@dataclass
class _Batch:
    """What one batch read up front, and what it has accepted so far."""

    cases: dict[uuid.UUID, m.Case]
    stored: dict[tuple[uuid.UUID, bytes], m.Message]
    roster: dict[tuple[uuid.UUID, uuid.UUID, uuid.UUID], Device | Forbidden]
    last_sender_seq: dict[tuple[uuid.UUID, uuid.UUID], int]
    previous_heads: dict[tuple[uuid.UUID, int], list[bytes]]
    blobs: dict[uuid.UUID, tuple[uuid.UUID, bytes, bool]]
    # One clock reading for the batch: the grace read and the grace check agree.
    now: datetime = field(default_factory=timezone.now)
    accepted: list[tuple[SendRequest, m.Message]] = field(default_factory=list)


@transaction.atomic
def _store_batch(requests: Sequence[SendRequest]) -> list[Ack | ServiceError]:
    results: list[Ack | ServiceError | None] = [None] * len(requests)
    for i, request in enumerate(requests):
        results[i] = _sender_refusal(request)
    live = [r for r, result in zip(requests, results, strict=True) if result is None]
    batch = _batch_read(live)
    for i, request in enumerate(requests):
        if results[i] is not None:
            continue
        try:
            results[i] = _accept(batch, request)
        except ServiceError as refusal:
            results[i] = refusal
    if batch.accepted:
        _batch_write(batch)
    answered = [result for result in results if result is not None]
    if len(answered) != len(requests):  # a slot left empty would shift every later answer
        raise AssertionError("every item of a batch is answered")
    return answered


def _sender_refusal(request: SendRequest) -> ServiceError | None:
    h = request.envelope.header
    if h.case_id != request.case_id:
        return ServiceError("wrong_case", "The envelope names another case.")
    if h.sender_user_id != request.user.pk or h.sender_device_id != request.device_id:
        return Forbidden("wrong_sender", "The envelope must name your signed-in device.")
    return None


def _batch_read(requests: Sequence[SendRequest]) -> _Batch:
    """Everything the checks need, in one query each (a few only when needed)."""
    now = timezone.now()
    if not requests:
        return _Batch({}, {}, {}, {}, {}, {}, now)
    case_ids = sorted({r.case_id for r in requests})
    device_ids = {r.device_id for r in requests}
    # Locked in id order, so two processes locking overlapping batches never deadlock.
    cases = {
        c.pk: c for c in m.Case.objects.select_for_update().filter(pk__in=case_ids).order_by("pk")
    }
    stored = {
        (msg.sender_device_id, bytes(msg.client_msg_id)): msg
        for msg in m.Message.objects.filter(
            sender_device_id__in=device_ids,
            client_msg_id__in=[r.envelope.header.client_msg_id for r in requests],
        )
    }
    # Device rows locked too (cases, then devices, then the audit head): a revocation
    # commits before this batch reads them, or waits until the batch has committed.
    roster = access_roster_devices(
        [(r.user, r.case_id, r.device_id) for r in requests if r.case_id in cases], lock=True
    )
    latest = (
        m.Message.objects.filter(
            case_id=OuterRef("case_id"), sender_device_id=OuterRef("device_id")
        )
        .order_by("-sender_seq")
        .values("sender_seq")[:1]
    )
    last_sender_seq = {
        (case_id, device_id): last
        for case_id, device_id, last in m.MemberDevice.objects.filter(
            case_id__in=list(cases), device_id__in=device_ids
        )
        .annotate(last=Subquery(latest))
        .values_list("case_id", "device_id", "last")
        if last is not None
    }
    return _Batch(
        cases=cases,
        stored=stored,
        roster=roster,
        last_sender_seq=last_sender_seq,
        previous_heads=_previous_heads(cases, requests, now),
        blobs=_blobs(requests),
        now=now,
    )


def _previous_heads(
    cases: dict[uuid.UUID, m.Case], requests: Sequence[SendRequest], now: datetime
) -> dict[tuple[uuid.UUID, int], list[bytes]]:
    """Entry hashes of the epochs still in their grace, read only when a send names one."""
    wanted = {
        (case.pk, epoch)
        for r in requests
        if (case := cases.get(r.case_id)) is not None
        and _in_grace(case, epoch := r.envelope.header.epoch, now)
    }
    if not wanted:
        return {}
    which = Q()
    for case_id, epoch in wanted:
        which |= Q(case_id=case_id, epoch=epoch)
    found: dict[tuple[uuid.UUID, int], list[bytes]] = defaultdict(list)
    for case_id, epoch, entry_hash in m.LogEntry.objects.filter(which).values_list(
        "case_id", "epoch", "entry_hash"
    ):
        found[(case_id, epoch)].append(bytes(entry_hash))
    return found


def _blobs(requests: Sequence[SendRequest]) -> dict[uuid.UUID, tuple[uuid.UUID, bytes, bool]]:
    """Every complete blob the batch's headers name, as ``(case id, root, named by a
    stored message)``: one query, only when any. One blob, one message (a recall deletes
    its message's files); read after the cases are locked, so a send naming the blob
    that committed first is seen."""
    ids = {ref.blob_id for r in requests for ref in r.envelope.header.attachments}
    if not ids:
        return {}
    return {
        pk: (case_id, bytes(root or b""), attached)
        for pk, case_id, root, attached in m.Blob.objects.filter(
            pk__in=ids, status=m.BlobStatus.COMPLETE
        )
        .annotate(attached=attachment_refs.named_by(m.Message.objects.all()))
        .values_list("pk", "case_id", "root", "attached")
    }


def _accept(batch: _Batch, request: SendRequest) -> Ack:
    """One item's checks, in the order protocol.md lists them; numbered if they pass."""
    envelope, device_id = request.envelope, request.device_id
    h = envelope.header
    case = batch.cases.get(request.case_id)
    if case is None:
        raise NotFound("no_case", "No such case.")
    stored = batch.stored.get((device_id, h.client_msg_id))
    if stored is not None:
        if stored.case_id != case.pk or not _same_message(stored, envelope):
            raise ServiceError(
                "client_msg_id_reused", "That client message id was used for other content."
            )
        return Ack(stored.seq, h.client_msg_id, stored.epoch, duplicate=True)
    device = batch.roster[(request.user.pk, case.pk, device_id)]
    if isinstance(device, ServiceError):
        raise Forbidden(device.code, device.message)  # one instance per refusal raised
    _check_epoch(case, envelope, batch.previous_heads, batch.now)
    try:
        verify_envelope(envelope, bytes(device.dsk_pub), max_ct_len=settings.MAX_MESSAGE_CT_BYTES)
    except CryptoError as error:
        raise crypto_failure(error) from None
    last = batch.last_sender_seq.get((case.pk, device_id))
    if last is not None and h.sender_seq <= last:
        raise ServiceError(
            "sender_seq_not_increasing", f"sender_seq must exceed {last}.", last_sender_seq=last
        )
    for ref in h.attachments:
        if batch.blobs.get(ref.blob_id, (None, None, False))[:2] != (case.pk, ref.root):
            raise ServiceError(
                "bad_attachment", f"Attachment {ref.blob_id} is not a complete blob of this case."
            )
    for ref in h.attachments:
        if batch.blobs[ref.blob_id][2]:
            raise ServiceError(
                "blob_already_attached",
                f"Attachment {ref.blob_id} is named by another message: upload it again.",
            )
    refusal = consult_record.consult_sender_refusal(
        case=case, user=request.user, content_type=h.content_type
    )
    if refusal is not None:
        raise refusal
    case.last_seq += 1
    message = m.Message(
        case=case,
        seq=case.last_seq,
        epoch=h.epoch,
        sender=request.user,
        sender_device_id=device_id,
        client_msg_id=h.client_msg_id,
        sender_seq=h.sender_seq,
        header=h.encode(),
        signature=envelope.sig,
        ciphertext=envelope.ct,
        urgent=request.urgent,
    )
    # Later items of this batch see this one as stored and as the device's last.
    batch.stored[(device_id, h.client_msg_id)] = message
    batch.last_sender_seq[(case.pk, device_id)] = h.sender_seq
    batch.accepted.append((request, message))
    for ref in h.attachments:  # a later item of this batch naming it is refused
        batch.blobs[ref.blob_id] = (case.pk, ref.root, True)
    return Ack(message.seq, h.client_msg_id, h.epoch, duplicate=False)


def _batch_write(batch: _Batch) -> None:
    """One update of the cases' last_seq, one insert of messages, one audit append."""
    accepted = batch.accepted
    touched = {message.case_id for _, message in accepted}
    m.Case.objects.bulk_update([batch.cases[pk] for pk in sorted(touched)], ["last_seq"])
    m.Message.objects.bulk_create([message for _, message in accepted])
    audit_record_many(
        [
            AuditRecord(
                action=AuditAction.MESSAGE_STORED,
                actor=request.user,
                device_id=request.device_id,
                case_id=message.case_id,
                target=f"message:{message.seq}",
                meta=request.meta,
                details={
                    "seq": message.seq,
                    "size": len(request.envelope.ct),
                    "epoch": message.epoch,
                },
            )
            for request, message in accepted
        ]
    )
    frames: dict[uuid.UUID, list[list[int | str]]] = defaultdict(list)
    for _, message in sorted(accepted, key=lambda pair: (str(pair[1].case_id), pair[1].seq)):
        text = json.dumps({"type": "message", **message_wire(message)}, separators=(",", ":"))
        frames[message.case_id].append([message.epoch, text])
    # One hop to the event loop for the whole batch, not one round trip per case; the
    # inbox sockets hear one content-free doorbell per case (services.inbox).
    publish_many_after_commit(
        [
            (case_group(case_id), {"type": "case.messages", "frames": case_frames})
            for case_id, case_frames in frames.items()
        ]
        + inbox.activity_events({pk: batch.cases[pk].last_seq for pk in sorted(touched)})
    )
    for _, message in accepted:
        if message.urgent:
            consults.urgent_sent(message=message)
    consult_record.reports_stored(accepted=accepted, cases=batch.cases)


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
