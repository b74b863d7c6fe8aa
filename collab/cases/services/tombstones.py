"""Message tombstones: what is left of a message once it is recalled or purged.

The row keeps its seq (the case sequence stays gapless), sender, header (signed metadata
only: ids, sizes, hashes) and, for a recall, the sender's signed statement; the
ciphertext and the attachments' files are deleted. Shared by the recall
(``services/recall.py``) and the retention purge (``collab.retention``).
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime

from django.core.files.storage import default_storage
from django.db import DatabaseError, connection, transaction

from collab.cases import models as m
from collab.cases.services import attachment_refs
from collab.crypto.envelope import Header
from collab.crypto.errors import CryptoError

log = logging.getLogger("collab.cases.tombstones")
# How long the checkpoint after a removal waits for readers (SQLite only).
SCRUB_WAIT_MS = 200


def _named_blobs(message: m.Message) -> list[uuid.UUID]:
    try:
        header = Header.decode(bytes(message.header))
    except CryptoError:  # stored headers were checked on send; nothing to follow otherwise
        return []
    return [ref.blob_id for ref in header.attachments]


def message_tombstone(message: m.Message, *, reason: str, now: datetime) -> list[uuid.UUID]:
    """Turn ``message`` (locked by the caller, inside its transaction) into a tombstone.

    Clears the ciphertext, deletes the files of the blobs its header names and marks them
    REMOVED, and sets ``removed_at``/``removed_reason``. Only blobs of the message's case
    uploaded by its sender are touched: a header may name another member's blob (sends
    check the case and root, not the uploader), and one member's recall must not delete
    another's attachment. Nor a blob another message that is not removed names: a send
    naming a blob a stored message names is refused (``blob_already_attached``), but a
    message stored before that rule may share one, and a recall must neither break it
    nor delete an attachment past its own recall window (the purge removes every blob).
    Files are deleted before the transaction commits, so a successful removal never
    leaves content behind; after a rollback the blob rows are as before and running the
    removal again finishes it. Returns the removed blob ids.
    """
    if reason not in m.RemovedReason.values:
        raise ValueError(f"unknown removal reason {reason!r}")
    named = _named_blobs(message)
    others = m.Message.objects.filter(removed_at__isnull=True).exclude(pk=message.pk)
    blobs = list(
        m.Blob.objects.select_for_update()
        .filter(pk__in=named, case_id=message.case_id, uploader_id=message.sender_id)
        .exclude(status=m.BlobStatus.REMOVED)
        .exclude(attachment_refs.named_by(others))
        .order_by("pk")
    ) if named else []
    for blob in blobs:
        if default_storage.exists(blob.storage_name):
            default_storage.delete(blob.storage_name)
        blob.status = m.BlobStatus.REMOVED
        blob.chunk_hashes = b""
        blob.save(update_fields=["status", "chunk_hashes"])
    message.ciphertext = b""
    message.removed_at = now
    message.removed_reason = reason
    message.save(update_fields=["ciphertext", "removed_at", "removed_reason"])
    scrub_after_commit()
    return [blob.pk for blob in blobs]


def scrub_after_commit() -> None:
    """Queue the SQLite checkpoint once per transaction: it copies the whole log, so one
    after the last removal does what one per message would (each may wait 200 ms)."""
    # An entry queued in a savepoint rolled back since is gone from this list.
    if any(entry[1] is _sqlite_scrub for entry in connection.run_on_commit):
        return
    transaction.on_commit(_sqlite_scrub)


def _sqlite_scrub() -> None:
    """SQLite (secure_delete on, see settings) zeroes the old ciphertext in the database
    file once its page is written back; the write-ahead log still holds the page images
    of the insert until a checkpoint. Copy the log into the file and truncate it, so
    the ciphertext leaves the disk now. Best effort: a busy reader only delays it to the
    next automatic checkpoint. PostgreSQL reclaims the old row version by vacuum."""
    if connection.vendor != "sqlite":
        return
    # TRUNCATE waits for readers through the busy handler: wait briefly, never the full
    # lock timeout of a request (a busy checkpoint just leaves the log to a later one).
    restore = int(float(connection.settings_dict.get("OPTIONS", {}).get("timeout", 5)) * 1000)
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"PRAGMA busy_timeout = {SCRUB_WAIT_MS}")
            try:
                cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                cursor.execute(f"PRAGMA busy_timeout = {restore}")
    except DatabaseError:
        log.warning("WAL checkpoint after a message removal did not run", exc_info=True)
