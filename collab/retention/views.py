"""Retention endpoints: parse, call one service, answer."""

from __future__ import annotations

import uuid

from django.http import HttpRequest, HttpResponse, JsonResponse

from collab.accounts.models import User
from collab.accounts.policy import is_admin
from collab.api import api, json_body, user_of
from collab.audit.services import RequestMeta
from collab.cases import models as m
from collab.cases.access import access_admin
from collab.retention import services
from collab.retention.models import RetentionPolicy
from collab.retention.schedule import policy_current, retention_wire

# The admin's case list: newest first, metadata only, bounded.
MAX_ADMIN_CASES = 500


def _policy_wire(policy: RetentionPolicy, *, reader: User) -> dict[str, object]:
    # Who set it is for admins: a patient sees no staff directory, not even this one name.
    shown = policy.updated_by_id is not None and is_admin(reader)
    by: User | None = policy.updated_by if shown else None
    return {
        "lifespan_days": policy.lifespan_days,
        "updated_at": policy.updated_at.isoformat() if policy.updated_at else None,
        "updated_by": (
            {"id": str(by.pk), "display_name": by.display_name or by.username} if by else None
        ),
    }


@api(("GET", "PUT"))
def policy(request: HttpRequest) -> HttpResponse:
    """Anyone signed in reads the policy (it says what happens to their cases); an admin
    sets it."""
    if request.method == "PUT":
        user = user_of(request)
        access_admin(user, "Only an administrator sets the retention policy.")
        body = json_body(request)
        if "lifespan_days" not in body:
            return JsonResponse(
                {"error": "bad_lifespan", "detail": "Send lifespan_days (days, or null)."},
                status=400,
            )
        updated = services.retention_policy_set(
            actor=user, lifespan_days=body["lifespan_days"], meta=RequestMeta.from_request(request)
        )
        return JsonResponse(_policy_wire(updated, reader=user))
    return JsonResponse(_policy_wire(policy_current(), reader=user_of(request)))


def _admin_case_wire(case: m.Case, current: RetentionPolicy) -> dict[str, object]:
    return {
        "id": str(case.pk),
        "specialty": case.specialty,
        "urgency": case.urgency,
        "status": case.status,
        "opened_at": case.opened_at.isoformat(),
        "retention": retention_wire(case, current),
    }


@api(("GET",))
def cases(request: HttpRequest) -> HttpResponse:
    """Every case's retention state for the admin's page: metadata, never content."""
    access_admin(user_of(request), "Only an administrator sees every case's retention.")
    current = policy_current()
    rows = m.Case.objects.order_by("-opened_at")[:MAX_ADMIN_CASES]
    return JsonResponse({"cases": [_admin_case_wire(c, current) for c in rows]})


@api(("POST", "DELETE"))
def hold(request: HttpRequest, case_id: uuid.UUID) -> HttpResponse:
    """POST places a legal hold on the case, DELETE releases it (admins only)."""
    user = user_of(request)
    meta = RequestMeta.from_request(request)
    if request.method == "POST":
        case = services.legal_hold_place(actor=user, case_id=case_id, meta=meta)
    else:
        case = services.legal_hold_release(actor=user, case_id=case_id, meta=meta)
    return JsonResponse(_admin_case_wire(case, policy_current()))
