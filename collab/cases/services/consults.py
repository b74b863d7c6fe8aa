"""The curbside-consult workflow: status, the specialty queue, claims, urgent messages,
leave requests. See docs/workflow.md for the rules in one place."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from django.db import IntegrityError, transaction
from django.utils import timezone

from collab.accounts.models import Role, User
from collab.audit.services import AuditAction, RequestMeta, audit_record
from collab.cases import models as m
from collab.cases.access import MANAGER_ROLES, access_member, is_case_member
from collab.cases.selectors import head_entry
from collab.cases.services import inbox, joins
from collab.cases.services._common import locked_case
from collab.cases.services.notifications import case_member_ids, notify
from collab.crypto import primitives as prim
from collab.crypto.actions import leave_bytes
from collab.crypto.errors import CryptoError
from collab.crypto.log import LogEntry
from collab.crypto.roster import Role as RosterRole
from collab.errors import Conflict, Forbidden, NotFound, ServiceError
from collab.escalation import services as escalation
from collab.oncall import routing as oncall_routing
from collab.realtime import case_group, publish_after_commit

S = m.Status


def _record_status(
    case: m.Case,
    to: str,
    *,
    by_id: uuid.UUID,
    reason: str = "",
    actor: User | None = None,
    meta: RequestMeta | None = None,
) -> m.CaseStatusChange:
    change = m.CaseStatusChange.objects.create(
        case=case, from_status=case.status, to_status=to, changed_by_id=by_id, reason=reason
    )
    case.status = to
    case.status_changed_at = change.changed_at
    fields = ["status", "status_changed_at"]
    if to == S.REQUESTED:
        # A reopened request goes back to the queue for a fresh claim.
        case.claimed_by = None
        case.claimed_at = None
        fields += ["claimed_by", "claimed_at"]
    case.save(update_fields=fields)
    audit_record(
        action=AuditAction.CASE_STATUS_CHANGED,
        actor=actor,
        case_id=case.pk,
        target=f"case:{case.pk}",
        meta=meta,
        details={
            "from": change.from_status,
            "to": to,
            "by": str(by_id),
            "reason": reason,
        },
    )
    publish_after_commit(
        case_group(case.pk),
        {
            "type": "case.status",
            "status": to,
            "from": change.from_status,
            "by": str(by_id),
            "at": change.changed_at.isoformat(),
        },
    )
    inbox.status_changed(case_id=case.pk, status=to, at=change.changed_at)
    notify(
        user_ids=case_member_ids(case.pk, exclude=by_id),
        kind=m.NotificationKind.STATUS_CHANGED,
        case_id=case.pk,
    )
    return change


@transaction.atomic
def case_status_change(
    *, user: User, case_id: uuid.UUID, status: str, meta: RequestMeta | None = None
) -> m.CaseStatusChange:
    """requested→accepted and accepted→answered by a consultant (a provider member who
    did not open the case); any→closed and reopening closed→requested/accepted by an owner."""
    if status not in S.values:
        raise ServiceError("bad_status", f"Status must be one of {', '.join(S.values)}.")
    case = locked_case(case_id)
    member = access_member(user, case_id)
    current = case.status
    if status == current:
        raise Conflict("no_change", f"The case is already {current}.")
    is_owner = member.role == int(RosterRole.OWNER)
    is_consultant = user.role == Role.PROVIDER and user.pk != case.opened_by_id
    reason = ""
    if status == S.CLOSED or current == S.CLOSED:
        if current == S.CLOSED and status not in (S.REQUESTED, S.ACCEPTED):
            raise Conflict("bad_transition", "A closed case reopens as requested or accepted.")
        if not is_owner:
            raise Forbidden("owner_only", "Only a case owner closes or reopens a case.")
        reason = "reopened" if current == S.CLOSED else ""
    elif (current, status) in ((S.REQUESTED, S.ACCEPTED), (S.ACCEPTED, S.ANSWERED)):
        if not is_consultant:
            raise Forbidden(
                "not_consultant", "Only a consulting provider accepts or answers a consult."
            )
    else:
        raise Conflict("bad_transition", f"A case cannot go from {current} to {status}.")
    escalation.escalation_case_status(case_id=case.pk, status=status)  # closing ends timers
    return _record_status(case, status, by_id=user.pk, reason=reason, actor=user, meta=meta)


# --- the queue and claims ----------------------------------------------------------

_URGENCY_ORDER: dict[str, int] = {"urgent": 0, "soon": 1, "routine": 2}


@dataclass(frozen=True)
class QueueItem:
    case_id: uuid.UUID
    specialty: str
    urgency: str
    requested_at: datetime
    requester_name: str
    requester_organisation: str
    # Set while the consult is offered to the caller alone as on-call (collab/oncall).
    offered_until: datetime | None = None

    def wire(self, now: datetime) -> dict[str, object]:
        extra = {"offered_until": self.offered_until.isoformat()} if self.offered_until else {}
        return {
            **extra,
            "case": str(self.case_id),
            "specialty": self.specialty,
            "urgency": self.urgency,
            "requested_at": self.requested_at.isoformat(),
            "age_seconds": max(0, int((now - self.requested_at).total_seconds())),
            "requested_by": {
                "display_name": self.requester_name,
                "organisation": self.requester_organisation,
            },
        }


def consult_queue(*, user: User) -> list[QueueItem]:
    """Open, unclaimed consults for the caller's specialty: metadata only, no patient data."""
    if user.role != Role.PROVIDER:
        raise Forbidden("providers_only", "Only providers see the consult queue.")
    if not user.specialty:
        return []
    cases = (
        m.Case.objects.filter(status=S.REQUESTED, claimed_by__isnull=True, specialty=user.specialty)
        .exclude(members__user=user)
        # Inside the on-call provider's exclusive window the others do not see it yet.
        .exclude(pk__in=oncall_routing.withheld_case_ids(user=user))
        .select_related("opened_by")
        .order_by("opened_at")[:500]
    )
    items = []
    offered = oncall_routing.offered_until(user=user)
    for case in cases:
        # The request's age counts from when it (last) became requested.
        requested_at = case.status_changed_at or case.opened_at
        items.append(
            QueueItem(
                case.pk,
                case.specialty,
                case.urgency,
                requested_at,
                case.opened_by.display_name or case.opened_by.username,
                case.opened_by.organisation,
                offered_until=offered.get(case.pk),
            )
        )
    items.sort(key=lambda i: (_URGENCY_ORDER.get(i.urgency, 9), i.requested_at))
    return items


@transaction.atomic
def consult_claim(
    *, user: User, case_id: uuid.UUID, meta: RequestMeta | None = None
) -> m.JoinRequest:
    """The first provider of the requested specialty to claim wins (409 ``already_claimed``
    for the others); the claim is a join request for the case owner's client to commit."""
    if user.role != Role.PROVIDER:
        raise Forbidden("providers_only", "Only providers claim consults.")
    case = locked_case(case_id)
    if is_case_member(user=user, case_id=case.pk):
        raise Conflict("already_member", "Already a member of this case.")
    if case.claimed_by_id == user.pk:
        raise Conflict("already_requested", "You have already claimed this consult.")
    if case.claimed_by_id is not None:
        raise Conflict("already_claimed", "Another specialist has claimed this consult.")
    if case.status != S.REQUESTED:
        raise Conflict("not_requested", "This consult is not waiting for a specialist.")
    oncall_routing.claim_check(case=case, user=user)
    join = joins.join_request_create(
        requester=user, case_id=case_id, user=user, kind=m.JoinKind.CLAIM, meta=meta
    )
    # The row lock above serialises claims; the conditional update makes it certain.
    won = m.Case.objects.filter(pk=case.pk, claimed_by__isnull=True).update(
        claimed_by=user, claimed_at=timezone.now()
    )
    if won != 1:
        raise Conflict("already_claimed", "Another specialist has claimed this consult.")
    notify(
        user_ids=case_member_ids(case.pk, roles=MANAGER_ROLES),
        kind=m.NotificationKind.CONSULT_CLAIMED,
        case_id=case.pk,
    )
    return join


# --- after a membership-log entry is stored -----------------------------------------


def on_entry_stored(
    *, case: m.Case, entry: LogEntry, actor: User, meta: RequestMeta | None = None
) -> None:
    """Called by log_entry_submit in the same transaction, after the entry is stored.

    Committing a claimed specialist (or a named colleague) accepts a requested consult;
    a committed removal resolves the leaver's pending leave request.
    """
    in_roster = [u.user_id for u in entry.roster.users]
    m.LeaveRequest.objects.filter(case=case, status=m.JoinStatus.PENDING).exclude(
        user_id__in=in_roster
    ).update(status=m.JoinStatus.COMMITTED, resolved_epoch=entry.epoch)
    if case.status != S.REQUESTED:
        return
    joined = (
        m.JoinRequest.objects.filter(
            case=case,
            status=m.JoinStatus.COMMITTED,
            resolved_epoch=entry.epoch,
            kind__in=[m.JoinKind.CLAIM, m.JoinKind.INVITE],
        )
        .order_by("created_at")
        .first()
    )
    if joined is not None:
        _record_status(
            case,
            S.ACCEPTED,
            by_id=joined.user_id,
            reason=f"{joined.kind}_committed",
            actor=actor,
            meta=meta,  # the committing request's address, as on its log event
        )


# --- urgent messages ---------------------------------------------------------------


@dataclass(frozen=True)
class UrgentAckResult:
    seq: int
    user_id: uuid.UUID
    at: datetime
    duplicate: bool


@transaction.atomic
def urgent_ack(
    *,
    user: User,
    case_id: uuid.UUID,
    seq: int,
    device_id: uuid.UUID | None = None,
    meta: RequestMeta | None = None,
) -> UrgentAckResult:
    """Acknowledge an urgent message once (a repeat returns the first acknowledgement).

    ``URGENT_ACKNOWLEDGED`` is recorded for the first acknowledgement only: a repeat
    changes nothing and records nothing (the first event already says who and when)."""
    access_member(user, case_id)
    message = m.Message.objects.filter(case_id=case_id, seq=seq).only("pk", "urgent").first()
    if message is None:
        raise NotFound("no_message", "No such message.")
    if not message.urgent:
        raise ServiceError("not_urgent", "That message did not ask for acknowledgement.")
    existing = m.UrgentAck.objects.filter(message=message, user=user).first()
    if existing is not None:
        return UrgentAckResult(seq, user.pk, existing.at, duplicate=True)
    try:
        with transaction.atomic():
            ack = m.UrgentAck.objects.create(message=message, user=user)
    except IntegrityError:
        ack = m.UrgentAck.objects.get(message=message, user=user)
        return UrgentAckResult(seq, user.pk, ack.at, duplicate=True)
    # Before the audit append: the worker locks a timer and then the audit head, so
    # taking them in the same order here cannot deadlock with it.
    escalation.escalation_acknowledged(message=message)  # done once nobody owes one
    audit_record(
        action=AuditAction.URGENT_ACKNOWLEDGED,
        actor=user,
        device_id=device_id,
        case_id=case_id,
        target=f"message:{seq}",
        meta=meta,
        details={"seq": seq},
    )
    publish_after_commit(
        case_group(case_id),
        {
            "type": "case.urgent_ack",
            "seq": seq,
            "user": str(user.pk),
            "at": ack.at.isoformat(),
            "device": str(device_id) if device_id else "",
        },
    )
    return UrgentAckResult(seq, user.pk, ack.at, duplicate=False)


def urgent_sent(*, message: m.Message) -> None:
    """Called by message_send for a new urgent message: notify the other members."""
    notify(
        user_ids=case_member_ids(message.case_id, exclude=message.sender_id),
        kind=m.NotificationKind.URGENT_MESSAGE,
        case_id=message.case_id,
    )
    escalation.escalation_start(message=message)  # reminders and the chain (docs/workflow.md)


# --- leaving ---------------------------------------------------------------------


@transaction.atomic
def leave_request_create(
    *,
    user: User,
    case_id: uuid.UUID,
    device_id: uuid.UUID,
    epoch: int,
    signature: bytes,
    meta: RequestMeta | None = None,
) -> m.LeaveRequest:
    """Store a member's signed CR1 leave request for another member's client to commit
    as remove_user with ``leave`` (the leaver never authors their own removal).

    A stored request records ``LEAVE_REQUESTED``; a refused one records nothing (the
    caller is answered; nothing changed)."""
    case = locked_case(case_id)
    access_member(user, case_id)
    device = (
        m.MemberDevice.objects.filter(case=case, device_id=device_id, device__user=user)
        .select_related("device")
        .first()
    )
    if device is None:
        raise Forbidden("not_in_roster", "Sign the leave request with one of your case devices.")
    rostered = head_entry(case).roster.user(user.pk)
    if rostered is None or not rostered.since_epoch <= epoch <= case.head_epoch:
        raise ServiceError("bad_epoch", "epoch must lie between your joining and the head epoch.")
    try:
        prim.verify(
            bytes(device.device.dsk_pub), leave_bytes(case.pk, user.pk, device_id, epoch), signature
        )
    except CryptoError as error:
        raise ServiceError(error.code, error.message or "Bad leave signature.") from None
    try:
        with transaction.atomic():
            leave = m.LeaveRequest.objects.create(
                case=case, user=user, device_id=device_id, epoch=epoch, signature=signature
            )
    except IntegrityError:
        raise Conflict("already_requested", "Your leave request is already pending.") from None
    audit_record(
        action=AuditAction.LEAVE_REQUESTED,
        actor=user,
        device_id=device_id,
        case_id=case.pk,
        target=f"leave:{leave.pk}",
        meta=meta,
        details={"epoch": epoch},
    )
    publish_after_commit(case_group(case.pk), {"type": "case.leave_request", "user": str(user.pk)})
    notify(
        user_ids=case_member_ids(case.pk, exclude=user.pk),
        kind=m.NotificationKind.LEAVE_REQUEST,
        case_id=case.pk,
    )
    return leave
