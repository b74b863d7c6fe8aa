"""Stored receipts of a case, for a client that reloads (services.receipts)."""

from __future__ import annotations

import uuid

from django.http import HttpRequest, HttpResponse, JsonResponse

from collab.api import api, proven_device, user_of
from collab.cases.access import access_case_device
from collab.cases.services import receipts


@api(("GET",))
def case_receipts(request: HttpRequest, case_id: uuid.UUID) -> HttpResponse:
    """Per member: read and delivered up to (and when); per urgent message: who
    acknowledged. A member acting as one of their active devices."""
    user = user_of(request)
    access_case_device(user, case_id, proven_device(request))
    return JsonResponse(receipts.case_receipts(case_id=case_id))
