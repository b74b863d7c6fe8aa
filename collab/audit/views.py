"""Audit endpoints: parse, call one service or selector, answer JSON."""

from __future__ import annotations

import uuid
from typing import Any

from django.http import HttpRequest, JsonResponse

from collab.accounts.models import User
from collab.audit import canonical, selectors, services
from collab.audit.filters import FilterError, parse_filter
from collab.audit.models import AuditAction, Outcome
from collab.audit.services import RequestMeta
from collab.methods import allow_methods

FHIR_JSON = "application/fhir+json"


def _error(code: str, detail: str, status: int) -> JsonResponse:
    return JsonResponse({"error": code, "detail": detail}, status=status)


def _signed_in(request: HttpRequest) -> User | None:
    user = request.user
    return user if isinstance(user, User) and user.is_active else None


def _deny(
    request: HttpRequest, user: User, *, target: str, case_id: uuid.UUID | None = None
) -> JsonResponse:
    services.audit_record(
        action=AuditAction.ACCESS_DENIED,
        actor=user,
        outcome=Outcome.FAILURE,
        reason="forbidden",
        case_id=case_id,
        target=target,
        meta=RequestMeta.from_request(request),
    )
    return _error("forbidden", "You may not see this audit information.", 403)


def _unauthenticated() -> JsonResponse:
    return _error("unauthenticated", "Sign in first.", 401)


@allow_methods("GET")
def export_view(request: HttpRequest) -> JsonResponse:
    user = _signed_in(request)
    if user is None:
        return _unauthenticated()
    if not selectors.is_audit_admin(user):
        return _deny(request, user, target="audit:export")
    try:
        flt = parse_filter(request.GET.dict())
    except FilterError as exc:
        return _error("bad_filter", str(exc), 400)
    bundle = services.audit_export(flt=flt, actor=user, meta=RequestMeta.from_request(request))
    return JsonResponse(bundle, content_type=FHIR_JSON)


def _checkpoint_wire(cp: Any) -> dict[str, Any]:
    return {
        "seq": cp.seq,
        "hash": cp.event_hash,
        "signed_at": canonical.timestamp(cp.signed_at),
        "reason": cp.reason,
        "public_key": cp.public_key,
        "signature": cp.signature,
    }


@allow_methods("GET")
def checkpoints_view(request: HttpRequest) -> JsonResponse:
    user = _signed_in(request)
    if user is None:
        return _unauthenticated()
    if not selectors.is_audit_admin(user):
        return _deny(request, user, target="audit:checkpoints")
    checkpoints = selectors.checkpoints_recent()
    services.audit_record(
        action=AuditAction.AUDIT_VIEWED,
        actor=user,
        target="audit:checkpoints",
        meta=RequestMeta.from_request(request),
        details={"count": len(checkpoints)},
    )
    return JsonResponse({"checkpoints": [_checkpoint_wire(cp) for cp in checkpoints]})
