"""Escalation of unacknowledged urgent messages: start a timer, stop it, take its steps.

One ``Escalation`` row per urgent message, made in the transaction that stores the
message (``escalation_start``, called by consults.urgent_sent). The worker
(``manage.py run_worker``) claims due rows with ``SELECT … FOR UPDATE SKIP LOCKED`` on
PostgreSQL, takes the step (reminder or escalation), moves ``next_due`` on and commits:
a row is held by one worker at a time and its ``next_due`` has moved before the lock is
released, so two workers never send one reminder twice. SQLite has no row locks: run
one worker there.

Reminders and escalations carry no content: a notification (kind and case id) and a
frame with the message's seq and user ids. An escalation target who is not a member is
notified with the case id only; they cannot read the case until a member's client adds
them (the server never adds anyone). Such a target is never named in a room frame or in
GET /api/cases/<id>/urgent (``step_target_wire``): frames go to every socket of the case,
patients included, and patients may not look up on-call staff. A patient's urgent
message never goes outside the case: its steps reach members only.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.utils import timezone

from collab.accounts.models import User
from collab.audit.models import Outcome
from collab.audit.services import AuditAction, audit_record
from collab.cases import models as m
from collab.cases.services.notifications import notify
from collab.escalation import models as em
from collab.escalation.policy import Policy, effective_policy
from collab.escalation.selectors import pending_recipients, step_target_wire
from collab.oncall.services import oncall_now
from collab.realtime import case_group, publish_after_commit

# Rows claimed per transaction: a bounded batch, so one pass never holds many locks.
CLAIM_BATCH = 50


def _policy_of(row: em.Escalation) -> Policy:
    return Policy.parse(row.policy)


def next_due(row: em.Escalation) -> datetime | None:
    """The next reminder or step, whichever comes first; None when both are used up."""
    policy = _policy_of(row)
    times: list[datetime] = []
    if row.reminders_sent < policy.repeat_count:
        times.append(
            row.started_at
            + timedelta(
                minutes=policy.first_reminder_minutes + row.reminders_sent * policy.repeat_minutes
            )
        )
    if row.step_index < len(policy.steps):
        times.append(row.started_at + timedelta(minutes=policy.steps[row.step_index][1]))
    return min(times) if times else None


def escalation_start(*, message: m.Message) -> em.Escalation:
    """The timer of a new urgent message, with the case's effective policy copied in."""
    policy, _ = effective_policy(message.case_id)
    row = em.Escalation(
        message=message,
        case_id=message.case_id,
        started_at=message.stored_at or timezone.now(),
        policy=policy.wire(),
    )
    row.next_due = next_due(row)
    if row.next_due is None:  # no reminders and no chain: nothing will ever be due
        row.done_at, row.done_reason = row.started_at, em.DoneReason.EXHAUSTED
    row.save()
    return row


def escalation_acknowledged(*, message: m.Message) -> None:
    """After an acknowledgement (in its transaction): done once nobody owes one."""
    row = (
        em.Escalation.objects.select_for_update()
        .filter(message=message, done_at__isnull=True)
        .first()
    )
    if row is not None and not pending_recipients(message):
        _finish(row, timezone.now(), em.DoneReason.ACKNOWLEDGED)


def escalation_case_status(*, case_id: uuid.UUID, status: str) -> None:
    """After a status change (in its transaction): closing a case ends its running timers
    (``closed``); reopening it starts none again."""
    if status == m.Status.CLOSED:
        em.Escalation.objects.filter(case_id=case_id, done_at__isnull=True).update(
            done_at=timezone.now(), done_reason=em.DoneReason.CLOSED, next_due=None
        )


def _finish(row: em.Escalation, now: datetime, reason: str) -> None:
    row.done_at, row.done_reason, row.next_due = now, reason, None
    row.save(update_fields=["done_at", "done_reason", "next_due"])


# --- the worker's steps ------------------------------------------------------------


@dataclass
class PassResult:
    """What one pass did (for the command's output and for tests)."""

    claimed: int = 0
    reminders: int = 0
    escalations: int = 0
    finished: int = 0


def _claim(now: datetime, limit: int) -> list[em.Escalation]:
    rows = em.Escalation.objects.filter(done_at__isnull=True, next_due__lte=now)
    if connection.features.has_select_for_update_skip_locked:
        rows = rows.select_for_update(skip_locked=True, of=("self",))
    return list(rows.select_related("message", "case").order_by("next_due", "pk")[:limit])


def escalation_pass(*, now: datetime | None = None, limit: int = CLAIM_BATCH) -> PassResult:
    """Claim up to ``limit`` due timers, take their steps and commit (one transaction)."""
    when = now or timezone.now()
    result = PassResult()
    with transaction.atomic():
        rows = _claim(when, limit)
        result.claimed = len(rows)
        for row in rows:
            _advance(row, when, result)
    return result


def escalation_run_due(*, now: datetime | None = None, limit: int = CLAIM_BATCH) -> PassResult:
    """Passes until nothing is due at ``now`` (what ``run_worker --once`` does)."""
    total = PassResult()
    while True:
        done = escalation_pass(now=now, limit=limit)
        total.claimed += done.claimed
        total.reminders += done.reminders
        total.escalations += done.escalations
        total.finished += done.finished
        if done.claimed < limit:
            return total


def _advance(row: em.Escalation, now: datetime, result: PassResult) -> None:
    message = row.message
    if message.removed_at is not None:
        _finish(row, now, em.DoneReason.REMOVED)
        result.finished += 1
        return
    if row.case.status == m.Status.CLOSED:  # closed before the close hook existed
        _finish(row, now, em.DoneReason.CLOSED)
        result.finished += 1
        return
    pending = pending_recipients(message)
    if not pending:
        _finish(row, now, em.DoneReason.ACKNOWLEDGED)
        result.finished += 1
        return
    policy = _policy_of(row)
    first = row.started_at + timedelta(minutes=policy.first_reminder_minutes)
    if row.reminders_sent < policy.repeat_count and first <= now:
        # Slots missed while no worker ran are skipped: one reminder now, not a burst.
        elapsed = int((now - first) / timedelta(minutes=policy.repeat_minutes)) + 1
        row.reminders_sent = max(row.reminders_sent + 1, min(elapsed, policy.repeat_count))
        _remind(row, message, pending, now)
        result.reminders += 1
    while (
        row.step_index < len(policy.steps)
        and row.started_at + timedelta(minutes=policy.steps[row.step_index][1]) <= now
    ):
        _escalate(row, message, row.step_index, policy.steps[row.step_index][0], now)
        row.step_index += 1
        result.escalations += 1
    row.next_due = next_due(row)
    fields = ["reminders_sent", "step_index", "next_due"]
    if row.next_due is None:
        row.done_at, row.done_reason = now, em.DoneReason.EXHAUSTED
        fields += ["done_at", "done_reason"]
        result.finished += 1
    row.save(update_fields=fields)


def _remind(
    row: em.Escalation, message: m.Message, pending: list[uuid.UUID], now: datetime
) -> None:
    notify(user_ids=pending, kind=m.NotificationKind.URGENT_REMINDER, case_id=message.case_id)
    audit_record(
        action=AuditAction.URGENT_REMINDED,
        case_id=message.case_id,
        target=f"message:{message.seq}",
        details={"seq": message.seq, "reminder": row.reminders_sent, "pending": len(pending)},
    )
    publish_after_commit(
        case_group(message.case_id),
        {
            "type": "case.urgent_reminder",
            "seq": message.seq,
            "reminder": row.reminders_sent,
            "pending": [str(u) for u in pending],
            "at": now.isoformat(),
        },
    )


def escalation_target(case: m.Case, kind: str, at: datetime) -> User | None:
    """Whom a step goes to: the case's opener (``owner``) while still active and a member,
    or the primary (``oncall``) or backup (``backup``) on call for the case's specialty
    at ``at``."""
    if kind == "owner":
        owner = case.opened_by
        if not owner.is_active or not _is_member(case, owner):
            return None
        return owner
    shift = oncall_now(case.specialty, at)
    if shift is None:
        return None
    return shift.primary if kind == "oncall" else shift.backup


def _is_member(case: m.Case, user: User) -> bool:
    return m.Member.objects.filter(case_id=case.pk, user_id=user.pk).exists()


def _escalate(row: em.Escalation, message: m.Message, index: int, kind: str, now: datetime) -> None:
    case = row.case
    target = escalation_target(case, kind, now)
    member = target is not None and _is_member(case, target)
    reason = "no_target"
    if target is not None and not member and message.sender.is_patient:
        # A patient pages members only: never on-call staff outside the case.
        target, reason = None, "patient_sender"
    outcome = em.StepOutcome.NOTIFIED if target is not None else em.StepOutcome.NO_TARGET
    em.EscalationStep.objects.create(
        escalation=row, index=index, to_kind=kind, target=target,
        target_was_member=member, outcome=outcome, at=now,
    )
    audit_record(
        action=AuditAction.URGENT_ESCALATED,
        outcome=Outcome.SUCCESS if target is not None else Outcome.FAILURE,
        reason="" if target is not None else reason,
        case_id=case.pk,
        target=f"message:{message.seq}",
        details={
            "seq": message.seq,
            "step": index,
            "to": kind,
            "user": str(target.pk) if target is not None else "",
            "member": member,
        },
    )
    if target is None:
        return
    # Not a member: the notice points at the case; reading it needs a member to add them.
    notify(user_ids=[target.pk], kind=m.NotificationKind.URGENT_ESCALATED, case_id=case.pk)
    publish_after_commit(
        case_group(case.pk),
        {
            "type": "case.urgent_escalated",
            "seq": message.seq,
            "to": step_target_wire(target, member=member, via=kind),
            "via": kind,
            "member": member,
            "at": now.isoformat(),
        },
    )
