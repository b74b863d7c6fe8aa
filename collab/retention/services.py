"""Retention after a case closes, legal holds, and the purge of expired content.

The rules in one place (docs/workflow.md "Retention and legal hold"):

- the organisation's policy says how many days a closed case keeps its ciphertext and
  attachment files after it was closed (never, by default); admins set it;
- a legal hold on a case suspends its purge for as long as it lasts; admins place and
  release it;
- the purge (``purge_expired``, run by a timer) turns every message of a closed case past
  its lifespan and not held into a tombstone (reason ``purged``) and deletes the files of
  the case's attachments. The audit trail, the membership log, the key wraps and the
  tombstones stay. Each case is purged in its own transaction under its row lock; on
  PostgreSQL a purger skips a case another one holds (``SKIP LOCKED``), so several timers
  may run at once and one case is purged, and audited, once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from collab.accounts.models import User
from collab.audit.services import AuditAction, RequestMeta, audit_record
from collab.cases import models as m
from collab.cases.access import access_admin
from collab.cases.services._common import locked_case
from collab.cases.services.tombstones import scrub_after_commit
from collab.errors import Conflict, NotFound, ServiceError
from collab.retention.models import MAX_LIFESPAN_DAYS, RetentionPolicy
from collab.retention.schedule import case_retention, policy_current

# Blobs whose file may still be in storage (an expired upload's file is already gone).
_LIVE_BLOBS = (m.BlobStatus.UPLOADING, m.BlobStatus.COMPLETE)
# Rows per statement of a purge. A case is purged in ONE transaction under its row lock
# (all or nothing, audited once; a hold or a reopening waits for it): the batches bound
# each statement and the memory, not the transaction.
PURGE_BATCH = 500


# --- the policy -----------------------------------------------------------------------


def lifespan_parse(value: object) -> int | None:
    """A lifespan in days (1 to 36500) or None for never, else ``bad_lifespan``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ServiceError("bad_lifespan", "lifespan_days must be a whole number of days or null.")
    if not 1 <= value <= MAX_LIFESPAN_DAYS:
        raise ServiceError(
            "bad_lifespan", f"lifespan_days must lie between 1 and {MAX_LIFESPAN_DAYS}, or be null."
        )
    return value


def _locked_policy() -> RetentionPolicy:
    RetentionPolicy.objects.bulk_create([RetentionPolicy(pk=1)], ignore_conflicts=True)
    return RetentionPolicy.objects.select_for_update().get(pk=1)


@transaction.atomic
def retention_policy_set(
    *, actor: User | None, lifespan_days: object, meta: RequestMeta | None = None
) -> RetentionPolicy:
    """Set the organisation's lifespan (days after closing, or None for never).

    ``actor`` None is the operator at the command line (``retention_policy``); through
    the API it is an admin (``admins_only`` otherwise). The same value again is
    ``409 no_change`` and records nothing."""
    if actor is not None:
        access_admin(actor, "Only an administrator sets the retention policy.")
    days = lifespan_parse(lifespan_days)
    policy = _locked_policy()
    previous = policy.lifespan_days
    if previous == days:
        raise Conflict("no_change", "The retention policy already says that.")
    policy.lifespan_days = days
    policy.updated_at = timezone.now()
    policy.updated_by = actor
    policy.save(update_fields=["lifespan_days", "updated_at", "updated_by"])
    audit_record(
        action=AuditAction.RETENTION_POLICY_CHANGED,
        actor=actor,
        target="retention:policy",
        meta=meta,
        details={"from_days": previous, "to_days": days},
    )
    return policy


# --- legal holds ----------------------------------------------------------------------


def _hold_admin(actor: User) -> User:
    return access_admin(actor, "Only an administrator places or releases a legal hold.")


@transaction.atomic
def legal_hold_place(
    *, actor: User, case_id: uuid.UUID, meta: RequestMeta | None = None
) -> m.Case:
    """Suspend the case's purge until the hold is released (``already_on_hold`` 409)."""
    _hold_admin(actor)
    case = locked_case(case_id)
    if case.legal_hold_at is not None:
        raise Conflict("already_on_hold", "This case is already on legal hold.")
    case.legal_hold_at = timezone.now()
    case.legal_hold_by = actor
    case.save(update_fields=["legal_hold_at", "legal_hold_by"])
    audit_record(
        action=AuditAction.LEGAL_HOLD_PLACED,
        actor=actor,
        case_id=case.pk,
        target=f"case:{case.pk}",
        meta=meta,
        details={"status": case.status},
    )
    return case


@transaction.atomic
def legal_hold_release(
    *, actor: User, case_id: uuid.UUID, meta: RequestMeta | None = None
) -> m.Case:
    """End the case's hold (``not_on_hold`` 409): its purge clock counts from its
    closing again, so a case closed long ago is purged by the next run."""
    _hold_admin(actor)
    case = locked_case(case_id)
    if case.legal_hold_at is None:
        raise Conflict("not_on_hold", "This case is not on legal hold.")
    placed_at, placed_by = case.legal_hold_at, case.legal_hold_by_id
    case.legal_hold_at = None
    case.legal_hold_by = None
    case.save(update_fields=["legal_hold_at", "legal_hold_by"])
    audit_record(
        action=AuditAction.LEGAL_HOLD_RELEASED,
        actor=actor,
        case_id=case.pk,
        target=f"case:{case.pk}",
        meta=meta,
        details={
            "placed_at": placed_at.isoformat(),
            "placed_by": str(placed_by) if placed_by else None,
        },
    )
    return case


# --- the purge ------------------------------------------------------------------------


@dataclass(frozen=True)
class PurgeResult:
    case_id: uuid.UUID
    closed_at: datetime
    messages: int
    blobs: int
    dry_run: bool


def _to_purge() -> Q:
    """Cases with a message that is not a tombstone or a blob whose file may be stored,
    or not purged since they were (last) closed (an empty case is marked purged too, so
    that what the browser says stays true)."""
    return (
        Q(Exists(m.Message.objects.filter(case_id=OuterRef("pk"), removed_at__isnull=True)))
        | Q(Exists(m.Blob.objects.filter(case_id=OuterRef("pk"), status__in=_LIVE_BLOBS)))
        | Q(purged_at__isnull=True)
        | Q(purged_at__lt=F("status_changed_at"))
    )


def purge_candidates(*, now: datetime, policy: RetentionPolicy) -> list[uuid.UUID]:
    """Closed cases past the lifespan, not held, with content left or not yet purged
    since their closing (oldest closing first).
    Read without locks: each is checked again under its lock before anything is done."""
    if policy.lifespan_days is None:
        return []
    cutoff = now - timedelta(days=policy.lifespan_days)
    ids = (
        m.Case.objects.filter(status=m.Status.CLOSED, legal_hold_at__isnull=True)
        .filter(Q(status_changed_at__lte=cutoff) | Q(status_changed_at__isnull=True))
        .filter(_to_purge())
        .order_by("status_changed_at", "pk")
        .values_list("pk", flat=True)
    )
    return list(ids)


def held_past_due(*, now: datetime, policy: RetentionPolicy) -> list[uuid.UUID]:
    """Closed cases past the lifespan that only a legal hold keeps (for the dry run)."""
    if policy.lifespan_days is None:
        return []
    cutoff = now - timedelta(days=policy.lifespan_days)
    return list(
        m.Case.objects.filter(
            status=m.Status.CLOSED, legal_hold_at__isnull=False, status_changed_at__lte=cutoff
        )
        .order_by("status_changed_at", "pk")
        .values_list("pk", flat=True)
    )


def _purge_locked(case: m.Case, *, now: datetime, policy: RetentionPolicy,
                  dry_run: bool) -> PurgeResult | None:
    """Purge ``case`` (locked by the caller) if it is due; None when it is not (held,
    reopened or purged meanwhile: nothing left and purged since its closing)."""
    schedule = case_retention(case, policy)
    if not schedule.due(now) or schedule.closed_at is None:
        return None
    messages = m.Message.objects.filter(case=case, removed_at__isnull=True).order_by("seq")
    blobs = m.Blob.objects.filter(case=case, status__in=_LIVE_BLOBS).order_by("pk")
    done = case.purged_at is not None and case.purged_at >= schedule.closed_at
    if dry_run:
        count, blob_count = messages.count(), blobs.count()
        if done and not count and not blob_count:
            return None
        return PurgeResult(case.pk, schedule.closed_at, count, blob_count, True)
    count = _messages_tombstone(case, now=now)
    removed = _blobs_remove(case)
    if done and not count and not removed:
        return None
    case.purged_at = now
    case.save(update_fields=["purged_at"])
    audit_record(
        action=AuditAction.CASE_CONTENT_PURGED,
        case_id=case.pk,
        target=f"case:{case.pk}",
        details={
            "messages": count,
            "blobs": len(removed),
            "closed_at": schedule.closed_at.isoformat(),
            "lifespan_days": policy.lifespan_days,
        },
    )
    return PurgeResult(case.pk, schedule.closed_at, count, len(removed), False)


def _messages_tombstone(case: m.Case, *, now: datetime) -> int:
    """Every message of ``case`` (locked) that is not a tombstone becomes one (reason
    ``purged``), PURGE_BATCH rows per statement: nothing is read into memory, the
    ciphertext least of all. The blobs go in ``_blobs_remove``. Returns the count."""
    count = 0
    live = m.Message.objects.filter(case=case, removed_at__isnull=True)
    while True:
        ids = list(live.order_by("seq").values_list("pk", flat=True)[:PURGE_BATCH])
        if ids:
            # removed_at again: a recall committing meanwhile keeps its tombstone.
            count += live.filter(pk__in=ids).update(
                ciphertext=b"", removed_at=now, removed_reason=m.RemovedReason.PURGED
            )
        if len(ids) < PURGE_BATCH:
            return count


def _blobs_remove(case: m.Case) -> set[uuid.UUID]:
    """Delete the file of every blob of ``case`` (locked) not removed yet: the messages'
    attachments, orphaned and unfinished uploads, and the files of expired uploads
    should any be left. Live ones are marked REMOVED; returns their ids. PURGE_BATCH
    rows at a time, without their chunk hashes."""
    removed: set[uuid.UUID] = set()
    after: uuid.UUID | None = None
    while True:
        rows = m.Blob.objects.filter(case=case).exclude(status=m.BlobStatus.REMOVED)
        if after is not None:
            rows = rows.filter(pk__gt=after)
        batch = list(
            rows.select_for_update().order_by("pk").values_list("pk", "storage_name", "status")[
                :PURGE_BATCH
            ]
        )
        for _, storage_name, _ in batch:
            if default_storage.exists(storage_name):
                default_storage.delete(storage_name)
        live = [pk for pk, _, status in batch if status in _LIVE_BLOBS]
        if live:
            m.Blob.objects.filter(pk__in=live).update(
                status=m.BlobStatus.REMOVED, chunk_hashes=b""
            )
            removed.update(live)
        if len(batch) < PURGE_BATCH:
            return removed
        after = batch[-1][0]


def purge_expired(*, now: datetime | None = None, dry_run: bool = False) -> list[PurgeResult]:
    """Purge every closed case past the lifespan and not on legal hold, one transaction
    per case. A case another purger has locked is skipped (it is being purged); a run
    after a finished one finds nothing to do. ``dry_run`` reports what would be purged
    and changes nothing. One SQLite checkpoint ends a run that purged anything."""
    now = now or timezone.now()
    policy = policy_current()
    results: list[PurgeResult] = []
    for case_id in purge_candidates(now=now, policy=policy):
        with transaction.atomic():
            case = m.Case.objects.select_for_update(skip_locked=True).filter(pk=case_id).first()
            if case is None:
                continue
            result = _purge_locked(case, now=now, policy=policy, dry_run=dry_run)
        if result is not None:
            results.append(result)
    if results and not dry_run:
        scrub_after_commit()
    return results


@transaction.atomic
def case_purge(*, case_id: uuid.UUID, now: datetime | None = None,
               dry_run: bool = False) -> PurgeResult:
    """Purge one case now, if its retention allows it: the operator's ``purge_expired
    --case``. Refusals, each changing nothing: ``no_case`` 404, ``case_on_legal_hold``,
    ``not_closed``, ``no_retention_period`` (the policy is never), ``not_due`` (with
    ``delete_after``), ``already_purged`` (nothing is left), all 409."""
    now = now or timezone.now()
    policy = policy_current()
    case = m.Case.objects.select_for_update().filter(pk=case_id).first()
    if case is None:
        raise NotFound("no_case", "No such case.")
    if case.legal_hold_at is not None:
        raise Conflict("case_on_legal_hold", "This case is on legal hold: nothing is deleted.")
    if case.status != m.Status.CLOSED:
        raise Conflict("not_closed", "Only a closed case is purged.")
    if policy.lifespan_days is None:
        raise Conflict("no_retention_period", "The retention policy keeps closed cases.")
    schedule = case_retention(case, policy)
    if not schedule.due(now):
        assert schedule.delete_after is not None  # noqa: S101 - closed, not held, a lifespan
        raise Conflict(
            "not_due",
            "This case's retention period has not ended.",
            delete_after=schedule.delete_after.isoformat(),
        )
    result = _purge_locked(case, now=now, policy=policy, dry_run=dry_run)
    if result is None:
        raise Conflict("already_purged", "Nothing of this case is left to delete.")
    if not dry_run:
        scrub_after_commit()
    return result
