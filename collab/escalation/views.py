"""Escalation endpoints: parse, call one service, answer (docs/workflow.md "Escalation")."""

from __future__ import annotations

import uuid

from django.http import HttpRequest, HttpResponse, JsonResponse

from collab.api import api, json_body, user_of
from collab.audit.services import RequestMeta
from collab.cases.access import access_case
from collab.escalation import policy as policies


@api(("GET", "PUT"))
def organisation_policy(request: HttpRequest) -> HttpResponse:
    """Anyone signed in reads the default (it says when they will be reminded); an admin
    replaces it."""
    if request.method == "PUT":
        policy = policies.organisation_policy_set(
            actor=user_of(request), data=json_body(request), meta=RequestMeta.from_request(request)
        )
    else:
        policy = policies.organisation_policy()
    return JsonResponse({"source": "organisation", **policy.wire()})


@api(("GET", "PUT", "DELETE"))
def case_policy(request: HttpRequest, case_id: uuid.UUID) -> HttpResponse:
    """Members read the case's effective policy; a case owner or admin overrides it (PUT)
    or drops the override (DELETE)."""
    user = user_of(request)
    meta = RequestMeta.from_request(request)
    if request.method == "PUT":
        policy = policies.case_policy_set(
            user=user, case_id=case_id, data=json_body(request), meta=meta
        )
        return JsonResponse({"source": "case", **policy.wire()})
    if request.method == "DELETE":
        policy = policies.case_policy_clear(user=user, case_id=case_id, meta=meta)
        return JsonResponse({"source": "organisation", **policy.wire()})
    access_case(user, case_id)
    policy, source = policies.effective_policy(case_id)
    return JsonResponse({"source": source, **policy.wire()})
