"""Join requests: recorded by the server, committed by an authorised member's client."""

from __future__ import annotations

import uuid

from django.db import IntegrityError, transaction

from collab.accounts.models import Role, User
from collab.audit.services import AuditAction, RequestMeta, audit_record
from collab.cases import models as m
from collab.cases.selectors import is_case_member
from collab.cases.services.notifications import notify
from collab.crypto.roster import Role as RosterRole
from collab.errors import Conflict, Forbidden, NotFound
from collab.realtime import case_group, publish_after_commit

MANAGER_ROLES = (int(RosterRole.OWNER), int(RosterRole.ADMIN))


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
        manager = m.Member.objects.filter(
            case=case, user=requester, role__in=MANAGER_ROLES
        ).exists()
        if not manager:
            raise Forbidden("not_manager", "Only a case owner or admin invites colleagues.")
        if user.role != Role.PROVIDER:
            raise Forbidden("providers_only", "Named invitations are for providers.")
    else:
        raise Forbidden("bad_kind", "Unknown join request kind.")
    if is_case_member(user=user, case_id=case_id):
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
    return request
