"""Encrypted attachments: streamed to storage in parts, root checked on completion.

The server never holds a whole file: each part is read and written a chunk at a time,
and only the per-chunk hashes (64 bytes each) are kept to recompute the root.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import IO

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from collab.accounts.models import User
from collab.audit.models import AuditEvent
from collab.audit.services import AuditAction, RequestMeta, audit_record
from collab.cases import models as m
from collab.cases.access import access_blob, access_case_device, access_device
from collab.crypto.attachment import CT_CHUNK_SIZE, ciphertext_size, root_of
from collab.crypto.primitives import sha512
from collab.errors import Conflict, Gone, NotFound, RangeNotSatisfiable, ServiceError, TooLarge

MAX_PART_CHUNKS = 16
# The most one upload part or one download range may carry.
MAX_PART_BYTES = MAX_PART_CHUNKS * CT_CHUNK_SIZE
Reader = Callable[[int], bytes]


def max_blob_bytes() -> int:
    return ciphertext_size(settings.MAX_ATTACHMENT_BYTES)


def _path(blob: m.Blob) -> str:
    return str(default_storage.path(blob.storage_name))


def _discard(blob: m.Blob) -> None:
    """Leave nothing behind: the partial file and the row."""
    if default_storage.exists(blob.storage_name):
        default_storage.delete(blob.storage_name)
    blob.delete()


@transaction.atomic
def blob_create(*, user: User, device_id: uuid.UUID, case_id: uuid.UUID, size: int) -> m.Blob:
    access_case_device(user, case_id, device_id)
    if size > max_blob_bytes():
        limit_mb = settings.MAX_ATTACHMENT_BYTES // (1024 * 1024)
        raise TooLarge("too_large", f"Attachments are limited to {limit_mb} MB.")
    if size < 17:
        raise ServiceError("bad_size", "An encrypted blob has at least one chunk and its MAC.")
    blob_id = uuid.uuid4()
    blob = m.Blob.objects.create(
        id=blob_id,
        case_id=case_id,
        uploader=user,
        uploader_device_id=device_id,
        size=size,
        chunk_count=-(-size // CT_CHUNK_SIZE),
        storage_name=f"blobs/{blob_id.hex[:2]}/{blob_id.hex}",
    )
    os.makedirs(os.path.dirname(_path(blob)), exist_ok=True)
    open(_path(blob), "wb").close()
    return blob


def _owned(user: User, blob_id: uuid.UUID, device_id: uuid.UUID | None) -> m.Blob:
    """The caller's own upload, locked; when a device is named, the uploading one,
    active (``device_id`` is None only for clients that send no device, while proofs are
    not required). Anyone else's: ``404 no_blob``; an expired one: ``410``."""
    if device_id is not None:
        access_device(user, device_id)
    blob = m.Blob.objects.select_for_update().filter(pk=blob_id).first()
    if blob is None or blob.uploader_id != user.pk:
        raise NotFound("no_blob", "No such upload.")
    if device_id is not None and blob.uploader_device_id != device_id:
        raise NotFound("no_blob", "No such upload from this device.")
    if blob.status == m.BlobStatus.EXPIRED:
        raise Gone("upload_expired", "This upload was abandoned and has expired; start again.")
    return blob


def _owned_uploading(user: User, blob_id: uuid.UUID, device_id: uuid.UUID | None) -> m.Blob:
    blob = _owned(user, blob_id, device_id)
    if blob.status != m.BlobStatus.UPLOADING:
        raise Conflict("blob_complete", "This upload is already complete.")
    return blob


@transaction.atomic
def blob_upload_status(*, user: User, device_id: uuid.UUID, blob_id: uuid.UUID) -> m.Blob:
    """Where the uploading device's own upload stands, to resume it from
    ``received_bytes`` after a lost connection."""
    return _owned(user, blob_id, device_id)


def expire_uploads(*, older_than: timedelta) -> list[m.Blob]:
    """Uploads started more than ``older_than`` ago and still unfinished: delete their
    file and mark them expired (audited, one event each). Parts or completion for them
    are then ``410 upload_expired``. Returns the expired blobs."""
    cutoff = timezone.now() - older_than
    expired: list[m.Blob] = []
    candidates = m.Blob.objects.filter(
        status=m.BlobStatus.UPLOADING, created_at__lt=cutoff
    ).values_list("pk", flat=True)
    for blob_id in list(candidates):
        with transaction.atomic():
            blob = m.Blob.objects.select_for_update().filter(pk=blob_id).first()
            if blob is None or blob.status != m.BlobStatus.UPLOADING:
                continue  # completed (or discarded) meanwhile
            if default_storage.exists(blob.storage_name):
                default_storage.delete(blob.storage_name)
            received = blob.received_bytes
            blob.status = m.BlobStatus.EXPIRED
            blob.chunk_hashes = b""
            blob.save(update_fields=["status", "chunk_hashes"])
            audit_record(
                action=AuditAction.UPLOAD_EXPIRED,
                actor=None,
                device_id=blob.uploader_device_id,
                case_id=blob.case_id,
                target=f"blob:{blob.pk}",
                details={"size": blob.size, "received_bytes": received,
                         "uploader": str(blob.uploader_id)},
            )
            expired.append(blob)
    return expired


def _part_hashes(read: Reader, length: int, sink: IO[bytes] | None) -> list[bytes]:
    hashes: list[bytes] = []
    remaining = length
    while remaining > 0:
        chunk = read(min(CT_CHUNK_SIZE, remaining))
        if not chunk:
            raise ServiceError("short_body", "The part ended early.")
        while len(chunk) < min(CT_CHUNK_SIZE, remaining):
            more = read(min(CT_CHUNK_SIZE, remaining) - len(chunk))
            if not more:
                raise ServiceError("short_body", "The part ended early.")
            chunk += more
        remaining -= len(chunk)
        hashes.append(sha512(chunk))
        if sink is not None:
            sink.write(chunk)
    return hashes


class _Overflow(Exception):
    pass


def blob_part_put(
    *,
    user: User,
    blob_id: uuid.UUID,
    offset: int,
    length: int,
    read: Reader,
    device_id: uuid.UUID | None = None,
    verify: Callable[[], None] = lambda: None,
) -> int:
    """Append one part at ``offset``; returns the bytes received so far.

    Parts are whole chunks (the last part may end with the short final chunk). A part
    sent again with the same bytes is accepted once (retries are idempotent). A part
    past the announced size discards the whole upload. ``verify`` checks the device's
    proof over the streamed part once it is read (raising to refuse); nothing is
    committed or discarded before it passed.
    """
    try:
        return _append_part(user, blob_id, device_id, offset, length, read, verify)
    except _Overflow:
        verify()
        with transaction.atomic():
            blob = m.Blob.objects.select_for_update().filter(pk=blob_id).first()
            if blob is not None:
                _discard(blob)
        raise TooLarge(
            "too_large", "The upload exceeds its announced size; it was discarded."
        ) from None


@transaction.atomic
def _append_part(
    user: User, blob_id: uuid.UUID, device_id: uuid.UUID | None, offset: int, length: int,
    read: Reader, verify: Callable[[], None],
) -> int:
    blob = _owned_uploading(user, blob_id, device_id)
    if offset % CT_CHUNK_SIZE or length <= 0 or length > MAX_PART_BYTES:
        raise ServiceError("bad_part", "Parts start on a chunk boundary and hold 1 to 16 chunks.")
    if offset + length > blob.size:
        raise _Overflow
    if offset + length < blob.size and length % CT_CHUNK_SIZE:
        raise ServiceError("bad_part", "Only the final part may end with a short chunk.")
    stored = bytes(blob.chunk_hashes)
    first = offset // CT_CHUNK_SIZE
    if offset < blob.received_bytes:
        hashes = _part_hashes(read, length, None)
        verify()
        known = [stored[i * 64 : (i + 1) * 64] for i in range(first, first + len(hashes))]
        if hashes != known:
            raise Conflict(
                "part_mismatch",
                "Different bytes for a part already received.",
                received_bytes=blob.received_bytes,
            )
        return blob.received_bytes
    if offset != blob.received_bytes:
        raise Conflict("out_of_order", "Send the next part.", received_bytes=blob.received_bytes)
    with open(_path(blob), "r+b") as sink:
        # Drop anything a crashed earlier attempt wrote past the committed length.
        sink.truncate(blob.received_bytes)
        sink.seek(blob.received_bytes)
        hashes = _part_hashes(read, length, sink)
    verify()  # a refused proof rolls back; the bytes written past the length are dropped
    blob.chunk_hashes = stored + b"".join(hashes)
    blob.received_chunks += len(hashes)
    blob.received_bytes += length
    blob.save(update_fields=["chunk_hashes", "received_chunks", "received_bytes"])
    return blob.received_bytes


@transaction.atomic
def blob_complete(
    *,
    user: User,
    blob_id: uuid.UUID,
    root: bytes,
    device_id: uuid.UUID | None = None,
    meta: RequestMeta | None = None,
) -> m.Blob:
    blob = _owned_uploading(user, blob_id, device_id)
    if blob.received_bytes != blob.size:
        raise ServiceError("incomplete", f"{blob.received_bytes} of {blob.size} bytes received.")
    stored = bytes(blob.chunk_hashes)
    hashes = [stored[i : i + 64] for i in range(0, len(stored), 64)]
    if root_of(hashes) != root:
        raise ServiceError("bad_root", "The blob's root hash does not match.")
    blob.root = root
    blob.status = m.BlobStatus.COMPLETE
    blob.save(update_fields=["root", "status"])
    audit_record(
        action=AuditAction.ATTACHMENT_UPLOADED,
        actor=user,
        device_id=blob.uploader_device_id,
        case_id=blob.case_id,
        target=f"blob:{blob.pk}",
        meta=meta,
        details={"size": blob.size},
    )
    return blob


def satisfiable_range(size: int, start: int, end: int | None) -> tuple[int, int]:
    """``bytes=start-end`` (``end`` None: to the end) within a blob of ``size`` bytes,
    at most ``MAX_PART_BYTES``; an inverted or out-of-size range is ``416``."""
    if start >= size or (end is not None and end < start):
        raise RangeNotSatisfiable(
            "range_not_satisfiable", f"The blob has {size} bytes.", size=size
        )
    last = size - 1 if end is None else min(end, size - 1)
    return start, min(last, start + MAX_PART_BYTES - 1)


def _first_delivery(device_id: uuid.UUID, blob: m.Blob) -> bool:
    return not AuditEvent.objects.filter(
        case_id=blob.case_id,
        action=AuditAction.ATTACHMENT_DOWNLOADED,
        device_id=device_id,
        target=f"blob:{blob.pk}",
    ).exists()


def blob_download(
    *,
    user: User,
    device_id: uuid.UUID,
    blob_id: uuid.UUID,
    start: int = 0,
    end: int | None = None,
    meta: RequestMeta | None = None,
) -> tuple[m.Blob, IO[bytes], int, int]:
    """Members only. Returns the file positioned at ``start`` and the inclusive range
    to serve. A download is audited once per (device, blob): on the first request that
    delivers any bytes of the blob to that device, whatever its range (later ranges and
    repeated downloads by the same device add nothing; another device is a new one)."""
    with transaction.atomic():
        blob = access_blob(user, blob_id, device_id)
        start, end = satisfiable_range(blob.size, start, end)
        if _first_delivery(device_id, blob):
            # Ranges fetched in parallel: the lock lets exactly one of them record.
            m.Blob.objects.select_for_update().filter(pk=blob.pk).first()
            if _first_delivery(device_id, blob):
                audit_record(
                    action=AuditAction.ATTACHMENT_DOWNLOADED,
                    actor=user,
                    device_id=device_id,
                    case_id=blob.case_id,
                    target=f"blob:{blob.pk}",
                    meta=meta,
                    details={"size": blob.size},
                )
    handle = default_storage.open(blob.storage_name, "rb")
    handle.seek(start)
    return blob, handle, start, end
