"""Join requests: recorded by the server, committed by an authorised member's client."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from django.db import IntegrityError, transaction
from django.utils import timezone

from collab.accounts.models import IdentityKey, Role, User
from collab.audit.services import AuditAction, RequestMeta, audit_record
from collab.cases import models as m
from collab.cases.access import MANAGER_ROLES, is_case_manager, is_case_member
from collab.cases.selectors import head_entry
from collab.cases.services._common import locked_case
from collab.cases.services.notifications import case_member_ids, notify
from collab.errors import Conflict, Forbidden, NotFound, ServiceError
from collab.realtime import case_group, publish_after_commit

MAX_DECLINE_REASON = 500


@transaction.atomic
def join_request_create(
    *, requester: User, case_id: uuid.UUID, user: User, kind: str, meta: RequestMeta | None = None
) -> m.JoinRequest:
    """A claim is a provider asking for themselves; an invite names a colleague and
    comes from a case owner or admin."""
    case = m.Case.objects.filter(pk=case_id).first()
    if case is None:
        raise NotFound("no_case", "No such case.")
    if kind == m.JoinKind.CLAIM:
        if requester != user or requester.role != Role.PROVIDER:
            raise Forbidden("claim_not_allowed", "Only a provider claims a consult for themselves.")
        if case.specialty and requester.specialty != case.specialty:
            raise Forbidden("wrong_specialty", "This consult asks for another specialty.")
    elif kind == m.JoinKind.INVITE:
        if not is_case_manager(user=requester, case_id=case.pk):
            raise Forbidden("not_manager", "Only a case owner or admin invites colleagues.")
        if user.role != Role.PROVIDER:
            raise Forbidden("providers_only", "Named invitations are for providers.")
    elif kind == m.JoinKind.REJOIN:
        if requester != user:
            raise Forbidden("rejoin_not_allowed", "Only the reset user asks to rejoin.")
        _check_rejoin(case, user)
    else:
        raise Forbidden("bad_kind", "Unknown join request kind.")
    if kind != m.JoinKind.REJOIN and is_case_member(user=user, case_id=case_id):
        raise Conflict("already_member", "Already a member of this case.")
    try:
        with transaction.atomic():
            request = m.JoinRequest.objects.create(
                case=case, user=user, kind=kind, requested_by=requester
            )
    except IntegrityError:
        raise Conflict(
            "already_requested", "A request for this person is already pending."
        ) from None
    audit_record(
        action=AuditAction.JOIN_REQUESTED,
        actor=requester,
        case_id=case.pk,
        meta=meta,
        target=f"user:{user.pk}",
        details={"kind": kind},
    )
    publish_after_commit(
        case_group(case.pk), {"type": "case.join_request", "user": str(user.pk), "kind": kind}
    )
    if kind == m.JoinKind.INVITE:
        notify(user_ids=[user.pk], kind=m.NotificationKind.JOIN_REQUEST, case_id=case.pk)
    elif kind == m.JoinKind.REJOIN:
        # The people who can readmit them, and who must compare the new key with them.
        notify(
            user_ids=case_member_ids(case.pk, exclude=user.pk, roles=MANAGER_ROLES),
            kind=m.NotificationKind.JOIN_REQUEST,
            case_id=case.pk,
        )
    return request


def _check_rejoin(case: m.Case, user: User) -> None:
    """A rejoin is for a member of the case whose identity was reset: the head roster
    still lists them under a key that is no longer the one they registered. A case
    owner or admin's client commits it (remove_user, then add_user with the new key)
    only after a person accepts the changed key; this only records the ask."""
    if not is_case_member(user=user, case_id=case.pk):
        raise Forbidden("not_member", "Only a member of the case rejoins it.")
    registered = IdentityKey.objects.filter(user=user).values_list("uik_pub", flat=True).first()
    if registered is None:
        raise Conflict("no_identity", "Register the new identity key first.")
    member = head_entry(case).roster.user(user.pk)
    if member is not None and member.uik_pub == bytes(registered):
        raise Conflict("already_member", "Already a member of this case with this key.")


def _locked_pending(join_id: int, permit: Callable[[m.JoinRequest], None]) -> m.JoinRequest:
    """The join request under lock, after its case row: the same lock order as a log
    commit (case, then join requests), so the two never deadlock. ``permit`` runs on an
    unlocked read first, so a caller without the right locks nothing, and again under
    the lock."""
    found = m.JoinRequest.objects.filter(pk=join_id).first()
    if found is None:
        raise NotFound("no_join_request", "No such join request.")
    permit(found)
    locked_case(found.case_id)
    join = m.JoinRequest.objects.select_for_update().filter(pk=join_id).first()
    if join is None:
        raise NotFound("no_join_request", "No such join request.")
    permit(join)  # again under the case lock: a role may have changed meanwhile
    return join


def _manager_of(user: User) -> Callable[[m.JoinRequest], None]:
    def permit(join: m.JoinRequest) -> None:
        if not is_case_manager(user=user, case_id=join.case_id):
            raise Forbidden("not_manager", "Only a case owner or admin declines a join request.")

    return permit


def _party_to(user: User) -> Callable[[m.JoinRequest], None]:
    def permit(join: m.JoinRequest) -> None:
        if user.pk not in (join.user_id, join.requested_by_id):
            raise Forbidden(
                "not_requester", "Only the requester or the person asked for withdraws."
            )

    return permit


def _check_pending(join: m.JoinRequest) -> None:
    if join.status != m.JoinStatus.PENDING:
        raise Conflict("not_pending", f"This request is {join.status}.", status=join.status)


def _resolve(join: m.JoinRequest, *, status: str, by: User) -> None:
    """Mark the pending request resolved (a conditional update: once only), and put a
    declined or withdrawn claim's consult back in the queue."""
    now = timezone.now()
    done = m.JoinRequest.objects.filter(pk=join.pk, status=m.JoinStatus.PENDING).update(
        status=status, resolved_by=by, resolved_at=now
    )
    if done != 1:
        raise Conflict("not_pending", "This request is no longer pending.")
    join.status, join.resolved_by, join.resolved_at = status, by, now
    if join.kind == m.JoinKind.CLAIM:
        m.Case.objects.filter(pk=join.case_id, claimed_by=join.user_id).update(
            claimed_by=None, claimed_at=None
        )
    publish_after_commit(
        case_group(join.case_id),
        {
            "type": "case.join_resolved",
            "user": str(join.user_id),
            "kind": join.kind,
            "status": status,
        },
    )


@transaction.atomic
def join_request_decline(
    *, user: User, join_id: int, reason: str = "", meta: RequestMeta | None = None
) -> m.JoinRequest:
    """A case owner or admin declines a pending request; the person asked for is told
    (``join_declined``). The reason is not stored, only its length is audited."""
    if len(reason) > MAX_DECLINE_REASON:
        raise ServiceError(
            "bad_field", f"reason must be at most {MAX_DECLINE_REASON} characters."
        )
    join = _locked_pending(join_id, _manager_of(user))
    _check_pending(join)
    _resolve(join, status=m.JoinStatus.DECLINED, by=user)
    audit_record(
        action=AuditAction.JOIN_DECLINED,
        actor=user,
        case_id=join.case_id,
        meta=meta,
        target=f"user:{join.user_id}",
        details={"kind": join.kind, "reason_length": len(reason)},
    )
    notify(
        user_ids=[join.user_id], kind=m.NotificationKind.JOIN_DECLINED, case_id=join.case_id
    )
    return join


@transaction.atomic
def join_request_withdraw(
    *, user: User, join_id: int, meta: RequestMeta | None = None
) -> m.JoinRequest:
    """The person asked for, or whoever filed the request, withdraws it; the case
    managers (and the person asked for, when someone else withdrew) are told."""
    join = _locked_pending(join_id, _party_to(user))
    _check_pending(join)
    _resolve(join, status=m.JoinStatus.WITHDRAWN, by=user)
    audit_record(
        action=AuditAction.JOIN_WITHDRAWN,
        actor=user,
        case_id=join.case_id,
        meta=meta,
        target=f"user:{join.user_id}",
        details={"kind": join.kind},
    )
    told = case_member_ids(join.case_id, exclude=user.pk, roles=MANAGER_ROLES)
    if join.user_id != user.pk:
        told.append(join.user_id)
    notify(user_ids=told, kind=m.NotificationKind.JOIN_WITHDRAWN, case_id=join.case_id)
    return join


def rejoin_requests_file(*, user: User, actor: User | None = None, by: str = "") -> list[uuid.UUID]:
    """After an identity reset (in the reset's transaction): a pending ``rejoin`` request
    in each case the user is a member of, so the case's owners and admins see it (the new
    key shows once the user registers it) without the user's client filing anything.
    Cases where a request of theirs is already pending are left as they are."""
    pending = set(
        m.JoinRequest.objects.filter(user=user, status=m.JoinStatus.PENDING).values_list(
            "case_id", flat=True
        )
    )
    filed: list[uuid.UUID] = []
    for case_id in m.Member.objects.filter(user=user).values_list("case_id", flat=True):
        if case_id in pending:
            continue
        m.JoinRequest.objects.create(
            case_id=case_id, user=user, kind=m.JoinKind.REJOIN, requested_by=user
        )
        audit_record(
            action=AuditAction.JOIN_REQUESTED,
            actor=actor,
            case_id=case_id,
            target=f"user:{user.pk}",
            details={"kind": m.JoinKind.REJOIN.value, "by": by},
        )
        publish_after_commit(
            case_group(case_id),
            {"type": "case.join_request", "user": str(user.pk), "kind": m.JoinKind.REJOIN.value},
        )
        notify(
            user_ids=case_member_ids(case_id, exclude=user.pk, roles=MANAGER_ROLES),
            kind=m.NotificationKind.JOIN_REQUEST,
            case_id=case_id,
        )
        filed.append(case_id)
    return filed
