"""On-call endpoints under /api/oncall/: parse, call one service, answer.

Reads for providers and admins; writes for admins only (collab/oncall/services.py)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse

from collab.accounts.models import Role, User
from collab.api import api, json_body, user_of
from collab.audit.services import RequestMeta
from collab.errors import ServiceError
from collab.oncall import services
from collab.oncall.models import OnCallService, Shift


def person_wire(user: User | None) -> dict[str, Any] | None:
    if user is None:
        return None
    return {"id": str(user.pk), "display_name": user.display_name or user.username}


def service_wire(service: OnCallService) -> dict[str, Any]:
    return {"id": service.pk, "name": service.name, "specialty": service.specialty}


def shift_wire(shift: Shift) -> dict[str, Any]:
    return {
        "id": shift.pk,
        "service": shift.service_id,
        "primary": person_wire(shift.primary),
        "backup": person_wire(shift.backup),
        "starts_at": shift.starts_at.isoformat(),
        "ends_at": shift.ends_at.isoformat(),
    }


def now_wire(now: services.OnCallNow | None) -> dict[str, Any] | None:
    if now is None:
        return None
    return {
        "shift": now.shift_id,
        "primary": person_wire(now.primary),
        "backup": person_wire(now.backup),
        "ends_at": now.ends_at.isoformat(),
    }


@api(("GET", "POST"))
def service_collection(request: HttpRequest) -> HttpResponse:
    """GET: every service with who is on call now. POST {name, specialty}: add one."""
    user = user_of(request)
    if request.method == "POST":
        body = json_body(request)
        service = services.service_create(
            actor=user,
            name=str(body.get("name") or ""),
            specialty=str(body.get("specialty") or ""),
            meta=RequestMeta.from_request(request),
        )
        return JsonResponse(service_wire(service), status=201)
    services.access_schedule_reader(user)
    return JsonResponse(
        {
            "services": [
                {**service_wire(s), "now": now_wire(services.oncall_now(s.specialty))}
                for s in services.service_list()
            ]
        }
    )


@api(("GET",))
def oncall_now(request: HttpRequest) -> HttpResponse:
    """Who is on call now for ``?specialty=`` (``on_call`` null: nobody, or no service)."""
    user = user_of(request)
    services.access_schedule_reader(user)
    specialty = request.GET.get("specialty", "").strip()
    if not specialty or len(specialty) > services.MAX_SPECIALTY:
        raise ServiceError("bad_field", "specialty must be 1 to 80 characters.")
    now = services.oncall_now(specialty)
    return JsonResponse(
        {
            "specialty": specialty,
            "service": service_wire(now.service) if now else None,
            "on_call": now_wire(now),
        }
    )


@api(("GET", "POST"))
def service_shifts(request: HttpRequest, service_id: int) -> HttpResponse:
    """GET: current and coming shifts. POST {primary, backup, starts_at, ends_at}: add."""
    user = user_of(request)
    if request.method == "POST":
        body = json_body(request)
        shift = services.shift_add(
            actor=user,
            service_id=service_id,
            primary_id=body.get("primary"),
            backup_id=body.get("backup"),
            starts_at=body.get("starts_at"),
            ends_at=body.get("ends_at"),
            meta=RequestMeta.from_request(request),
        )
        return JsonResponse(shift_wire(shift), status=201)
    services.access_schedule_reader(user)
    service = services.service_get(service_id)
    return JsonResponse(
        {
            "service": service_wire(service),
            "now": now_wire(services.oncall_now(service.specialty)),
            "shifts": [shift_wire(s) for s in services.shift_list(service=service)],
        }
    )


@api(("GET",))
def service_providers(request: HttpRequest, service_id: int) -> HttpResponse:
    """The active providers of the service's specialty: whom an admin may schedule."""
    services.access_schedule_editor(user_of(request))
    service = services.service_get(service_id)
    people = User.objects.filter(
        role=Role.PROVIDER, is_active=True, specialty=service.specialty
    ).order_by("display_name", "username")[:500]
    return JsonResponse({"providers": [person_wire(p) for p in people]})


@api(("POST",))
def shift_remove(request: HttpRequest, shift_id: int) -> HttpResponse:
    services.shift_remove(
        actor=user_of(request), shift_id=shift_id, meta=RequestMeta.from_request(request)
    )
    return JsonResponse({"removed": shift_id})
