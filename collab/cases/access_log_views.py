"""A case's access log for its members (the patient's "who accessed my case"): the
membership rule is the cases app's, the trail the audit app's (history.access_log_read)."""

from __future__ import annotations

import uuid
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse

from collab.api import api, user_of
from collab.audit import canonical
from collab.audit.models import AuditEvent
from collab.audit.services import RequestMeta
from collab.cases.services import history
from collab.errors import ServiceError


def _access_wire(event: AuditEvent) -> dict[str, Any]:
    actor = None
    if event.actor_id is not None:
        name = str(event.actor) if event.actor is not None else ""
        actor = {"id": str(event.actor_id), "display": name}
    return {
        "seq": event.seq,
        "time": canonical.timestamp(event.recorded_at),
        "action": event.action,
        "outcome": event.outcome,
        "actor": actor,
        "device_id": str(event.device_id) if event.device_id else None,
    }


@api(("GET",))
def case_access_log(request: HttpRequest, case_id: uuid.UUID) -> HttpResponse:
    """Newest first, ACCESS_LOG_PAGE_SIZE a page; ``page`` past the last gives the last."""
    raw_page = request.GET.get("page", "1")
    if not raw_page.isdigit() or int(raw_page) < 1:
        raise ServiceError("bad_page", "page must be a positive integer")
    log = history.access_log_read(
        user=user_of(request),
        case_id=case_id,
        page=int(raw_page),
        meta=RequestMeta.from_request(request),
    )
    return JsonResponse(
        {
            "case": str(case_id),
            "page": log.page,
            "pages": log.pages,
            "count": log.count,
            "entries": [_access_wire(event) for event in log.entries],
        }
    )
