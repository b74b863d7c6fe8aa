"""Consult routing: a consult requested from a specialty goes to its on-call provider
first, with an exclusive window before the rest of the specialty sees it in the queue.

Hooked into case_open (offer), consult_queue (withhold) and consult_claim (refuse
others inside the window). Ids only: the notice and the audit event name the case and
the provider, never anything about the patient.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from collab.accounts.models import User
from collab.audit.services import AuditAction, RequestMeta, audit_record
from collab.cases import models as m
from collab.cases.services.notifications import notify
from collab.errors import Conflict
from collab.oncall.models import ConsultOffer
from collab.oncall.services import oncall_now


def first_window() -> timedelta:
    """COLLAB_ONCALL_FIRST_MINUTES: the on-call provider's exclusive time (0: none)."""
    return timedelta(minutes=max(0, int(getattr(settings, "ONCALL_FIRST_MINUTES", 10))))


def offer_target(case: m.Case, at: datetime) -> tuple[User, int] | None:
    """The on-call primary, or the backup when the primary is unavailable or opened the
    case themselves (nobody is offered their own request); None: straight to the queue."""
    now = oncall_now(case.specialty, at)
    if now is None:
        return None
    for person in (now.primary, now.backup):
        if person is not None and person.pk != case.opened_by_id:
            return person, now.shift_id
    return None


def consult_offer(*, case: m.Case, meta: RequestMeta | None = None) -> ConsultOffer | None:
    """Called by case_open in its transaction for a case with a specialty."""
    if not case.specialty or case.status != m.Status.REQUESTED:
        return None
    at = timezone.now()
    target = offer_target(case, at)
    if target is None:
        return None
    person, shift_id = target
    offer = ConsultOffer.objects.create(
        case=case,
        offered_to=person,
        shift_id=shift_id or None,
        offered_at=at,
        exclusive_until=at + first_window(),
    )
    audit_record(
        action=AuditAction.CONSULT_OFFERED,
        actor=None,
        case_id=case.pk,
        target=f"user:{person.pk}",
        meta=meta,
        details={
            "offered_to": str(person.pk),
            "shift": shift_id,
            "exclusive_until": offer.exclusive_until.isoformat(),
        },
    )
    notify(user_ids=[person.pk], kind=m.NotificationKind.CONSULT_OFFERED, case_id=case.pk)
    return offer


def withheld_case_ids(*, user: User, at: datetime | None = None) -> QuerySet[ConsultOffer, Any]:
    """Cases offered to someone else whose exclusive window is still open (a subquery)."""
    when = at or timezone.now()
    return (
        ConsultOffer.objects.filter(exclusive_until__gt=when)
        .exclude(offered_to=user)
        .values("case_id")
    )


def offered_until(*, user: User, at: datetime | None = None) -> dict[Any, datetime]:
    """Case id -> end of the window, for the consults offered to ``user`` right now."""
    when = at or timezone.now()
    rows = ConsultOffer.objects.filter(offered_to=user, exclusive_until__gt=when).values_list(
        "case_id", "exclusive_until"
    )
    return dict(rows[:500])


def claim_check(*, case: m.Case, user: User, at: datetime | None = None) -> None:
    """Inside the window only the offered provider claims (409 ``offered_to_oncall``)."""
    when = at or timezone.now()
    offer = ConsultOffer.objects.filter(case=case, exclusive_until__gt=when).first()
    if offer is not None and offer.offered_to_id != user.pk:
        raise Conflict(
            "offered_to_oncall",
            "This consult is offered to the on-call provider first.",
            until=offer.exclusive_until.isoformat(),
        )
