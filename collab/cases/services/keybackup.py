"""Key backup: epoch keys sealed on the client under the user's backup key
(protocol-crypto.md §9d), stored per (user, case, epoch), served to the user's devices.

The server cannot open, forge or swap an item (clients check the MAC, the case and
epoch inside, and the key against the epoch's verified ``key_commit``); it only keeps
the first item per epoch and serves items to current members."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from django.db import transaction

from collab.accounts.models import User
from collab.audit.services import AuditAction, RequestMeta, audit_record
from collab.cases import models as m
from collab.cases.access import access_case, access_device
from collab.crypto.keybackup import ITEM_LEN
from collab.crypto.wire import MAX_SAFE_INT
from collab.errors import ServiceError

MAX_ITEMS = 500


@dataclass(frozen=True)
class BackupItem:
    case_id: uuid.UUID
    epoch: int
    item: bytes


@dataclass(frozen=True)
class StoreResult:
    stored: int
    kept: int


@transaction.atomic
def key_backup_store(
    *, user: User, device_id: uuid.UUID, items: list[BackupItem], meta: RequestMeta | None = None
) -> StoreResult:
    """All or nothing: every item must be for a case the user is in now (else 403
    ``not_member`` and nothing is stored). An epoch already backed up keeps its item."""
    access_device(user, device_id)
    if not 1 <= len(items) <= MAX_ITEMS:
        raise ServiceError("bad_field", f"Give 1 to {MAX_ITEMS} items.")
    for it in items:
        if len(it.item) != ITEM_LEN:
            raise ServiceError("bad_length", f"Each item is exactly {ITEM_LEN} bytes.")
        if not 0 <= it.epoch <= MAX_SAFE_INT:
            raise ServiceError("bad_field", "epoch must be a non-negative integer.")
    for case_id in {it.case_id for it in items}:
        access_case(user, case_id)
    wanted: dict[tuple[uuid.UUID, int], BackupItem] = {}
    for it in items:
        wanted.setdefault((it.case_id, it.epoch), it)  # the first of a repeat is kept
    existing = set(
        m.KeyBackupItem.objects.filter(
            user=user, case_id__in={c for c, _ in wanted}, epoch__in={e for _, e in wanted}
        ).values_list("case_id", "epoch")
    )
    fresh = [
        m.KeyBackupItem(user=user, case_id=c, epoch=e, item=it.item)
        for (c, e), it in wanted.items()
        if (c, e) not in existing
    ]
    # A concurrent upload of the same epoch: the unique constraint keeps the first.
    m.KeyBackupItem.objects.bulk_create(fresh, ignore_conflicts=True)
    stored = len(fresh)
    result = StoreResult(stored=stored, kept=len(items) - stored)
    audit_record(
        action=AuditAction.KEY_BACKUP_STORED,
        actor=user,
        device_id=device_id,
        meta=meta,
        target=f"user:{user.pk}",
        details={"count": len(items), "stored": result.stored},
    )
    return result


def key_backup_read(
    *,
    user: User,
    device_id: uuid.UUID,
    case_id: uuid.UUID,
    after: int,
    meta: RequestMeta | None = None,
) -> tuple[list[m.KeyBackupItem], bool]:
    """The user's items for one case above ``after``, ascending, a page at a time;
    only for a current member's active device."""
    access_case(user, case_id)
    access_device(user, device_id)
    rows = list(
        m.KeyBackupItem.objects.filter(user=user, case_id=case_id, epoch__gt=after).order_by(
            "epoch"
        )[: MAX_ITEMS + 1]
    )
    page, more = rows[:MAX_ITEMS], len(rows) > MAX_ITEMS
    audit_record(
        action=AuditAction.KEY_BACKUP_READ,
        actor=user,
        device_id=device_id,
        case_id=case_id,
        meta=meta,
        target=f"case:{case_id}",
        details={"count": len(page), "after": after},
    )
    return page, more


def key_backup_forget(*, user: User) -> int:
    """Delete every item of the user's key backup (an identity reset: the items are
    sealed under a key derived from the old identity key, which nobody should use now)."""
    deleted, _ = m.KeyBackupItem.objects.filter(user=user).delete()
    return deleted
