"""On-call schedules: services, shifts, and who covers a specialty now.

Writes are admin-only (``collab.accounts.policy.is_admin``), audited ``ONCALL_CHANGED``
in the same transaction. A schedule is metadata only: a specialty, a service name, user
ids and hours; nothing about a patient. See docs/workflow.md "On-call".

Error codes (ServiceError subclasses, mapped by collab.api):
``admins_only`` 403, ``providers_only`` 403, ``no_service`` 404, ``no_shift`` 404,
``no_user`` 404, ``service_exists`` 409, ``shift_overlap`` 409, ``bad_service`` 400,
``bad_time`` 400, ``bad_hours`` 400, ``shift_too_long`` 400, ``not_provider`` 400,
``wrong_specialty`` 400, ``backup_is_primary`` 400.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from collab.accounts.models import Role, User
from collab.accounts.policy import is_admin
from collab.audit.services import AuditAction, RequestMeta, audit_record
from collab.errors import Conflict, Forbidden, NotFound, ServiceError
from collab.oncall.models import OnCallService, Shift

# A shift longer than this is almost certainly a typo (a year for a day).
MAX_SHIFT = timedelta(days=31)
MAX_NAME = 120
MAX_SPECIALTY = 80


@dataclass(frozen=True)
class OnCallNow:
    """Who covers a specialty at one moment. ``primary``/``backup`` are None when unset
    or no longer active (a deactivated account is nobody to route to)."""

    service: OnCallService
    primary: User | None
    backup: User | None
    ends_at: datetime
    shift_id: int = 0


def _active(user: User | None) -> User | None:
    return user if user is not None and user.is_active else None


def oncall_now(specialty: str, at: datetime | None = None) -> OnCallNow | None:
    """The shift covering ``at`` (default now) in the specialty's service, else None."""
    specialty = (specialty or "").strip()
    if not specialty:
        return None
    when = at or timezone.now()
    shift = (
        Shift.objects.filter(
            service__specialty=specialty, starts_at__lte=when, ends_at__gt=when
        )
        .select_related("service", "primary", "backup")
        .order_by("starts_at", "pk")
        .first()
    )
    if shift is None:
        return None
    return OnCallNow(
        service=shift.service,
        primary=_active(shift.primary),
        backup=_active(shift.backup),
        ends_at=shift.ends_at,
        shift_id=shift.pk,
    )


# --- reads -------------------------------------------------------------------------


def access_schedule_reader(user: User) -> None:
    """Providers (who route and take consults) and admins (who edit) read schedules."""
    if not (user.role == Role.PROVIDER or is_admin(user)):
        raise Forbidden("providers_only", "Only providers and admins see on-call schedules.")


def access_schedule_editor(user: User) -> None:
    if not is_admin(user):
        raise Forbidden("admins_only", "Only an administrator edits on-call schedules.")


def service_list() -> list[OnCallService]:
    return list(OnCallService.objects.order_by("specialty")[:500])


def shift_list(
    *, service: OnCallService, since: datetime | None = None, limit: int = 200
) -> list[Shift]:
    """Shifts still running or to come from ``since`` (default now), soonest first."""
    when = since or timezone.now()
    return list(
        Shift.objects.filter(service=service, ends_at__gt=when)
        .select_related("primary", "backup")
        .order_by("starts_at", "pk")[: max(1, min(limit, 500))]
    )


def service_get(service_id: int) -> OnCallService:
    service = OnCallService.objects.filter(pk=service_id).first()
    if service is None:
        raise NotFound("no_service", "No such on-call service.")
    return service


def service_by_specialty(specialty: str) -> OnCallService:
    service = OnCallService.objects.filter(specialty=specialty.strip()).first()
    if service is None:
        raise NotFound("no_service", "No on-call service for that specialty.")
    return service


# --- writes ------------------------------------------------------------------------


def _audit(
    *, actor: User | None, op: str, service: OnCallService, meta: RequestMeta | None, **more: object
) -> None:
    if actor is None:
        more["via"] = "command"  # the operator's shell: no signed-in actor
    audit_record(
        action=AuditAction.ONCALL_CHANGED,
        actor=actor,
        target=f"oncall_service:{service.pk}",
        meta=meta,
        details={"op": op, "service": service.pk, "specialty": service.specialty, **more},
    )


@transaction.atomic
def service_create(
    *, actor: User | None, name: str, specialty: str, meta: RequestMeta | None = None
) -> OnCallService:
    """A new service for a specialty (``actor`` None: the operator's command line)."""
    if actor is not None:
        access_schedule_editor(actor)
    specialty = (specialty or "").strip()
    name = (name or "").strip() or specialty
    if not specialty or len(specialty) > MAX_SPECIALTY or len(name) > MAX_NAME:
        raise ServiceError(
            "bad_service",
            f"A service needs a specialty of 1 to {MAX_SPECIALTY} characters and a name of"
            f" at most {MAX_NAME}.",
        )
    if OnCallService.objects.filter(specialty=specialty).exists() or (
        OnCallService.objects.filter(name=name).exists()
    ):
        raise Conflict("service_exists", "A service with that specialty or name exists.")
    try:
        with transaction.atomic():
            service = OnCallService.objects.create(name=name, specialty=specialty)
    except IntegrityError:
        raise Conflict("service_exists", "A service with that specialty or name exists.") from None
    _audit(actor=actor, op="service_created", service=service, meta=meta, name=name)
    return service


def _covering_provider(user_id: object, service: OnCallService, field: str) -> User:
    try:
        uid = uuid.UUID(str(user_id))
    except ValueError:
        raise NotFound("no_user", f"No such user for {field}.") from None
    user = User.objects.filter(pk=uid).first()
    if user is None:
        raise NotFound("no_user", f"No such user for {field}.")
    if user.role != Role.PROVIDER or not user.is_active:
        raise ServiceError("not_provider", f"The {field} must be an active provider.", field=field)
    if user.specialty != service.specialty:
        raise ServiceError(
            "wrong_specialty", f"The {field} must be of the {service.specialty} specialty.",
            field=field,
        )
    return user


_FIRST_YEAR, _LAST_YEAR = 2000, 2100


def parse_time(value: object, field: str) -> datetime:
    """An ISO 8601 instant with an offset (a naive time is refused: whose midnight?)."""
    if isinstance(value, datetime):
        when = value
    else:
        try:
            when = datetime.fromisoformat(str(value))
        except ValueError:
            raise ServiceError(
                "bad_time", f"{field} must be an ISO 8601 time with an offset.", field=field
            ) from None
    if timezone.is_naive(when):
        raise ServiceError(
            "bad_time", f"{field} must carry a UTC offset (e.g. 2026-12-01T08:00+01:00).",
            field=field,
        )
    # Years near 1 or 9999 overflow when the database converts them to UTC.
    if not _FIRST_YEAR <= when.year <= _LAST_YEAR:
        raise ServiceError(
            "bad_time", f"{field} must fall between {_FIRST_YEAR} and {_LAST_YEAR}.", field=field
        )
    return when


@transaction.atomic
def shift_add(
    *,
    actor: User | None,
    service_id: int,
    primary_id: object,
    backup_id: object | None,
    starts_at: object,
    ends_at: object,
    meta: RequestMeta | None = None,
) -> Shift:
    """Add a shift: end after start, at most MAX_SHIFT long, a primary and an optional
    backup who are active providers of the service's specialty (the backup covers the
    same consults, so the same rule), never the same person, and no overlap with another
    primary shift of the service. Refused input changes nothing."""
    if actor is not None:
        access_schedule_editor(actor)
    # The service row lock serialises writers, so two overlapping adds cannot both pass.
    service = OnCallService.objects.select_for_update().filter(pk=service_id).first()
    if service is None:
        raise NotFound("no_service", "No such on-call service.")
    start = parse_time(starts_at, "starts_at")
    end = parse_time(ends_at, "ends_at")
    if end <= start:
        raise ServiceError("bad_hours", "ends_at must be after starts_at.")
    if end - start > MAX_SHIFT:
        raise ServiceError("shift_too_long", f"A shift lasts at most {MAX_SHIFT.days} days.")
    primary = _covering_provider(primary_id, service, "primary")
    backup = None
    if backup_id not in (None, ""):
        backup = _covering_provider(backup_id, service, "backup")
        if backup.pk == primary.pk:
            raise ServiceError("backup_is_primary", "The backup must be someone else.")
    clash = (
        Shift.objects.filter(service=service, starts_at__lt=end, ends_at__gt=start)
        .order_by("starts_at")
        .first()
    )
    if clash is not None:
        raise Conflict(
            "shift_overlap", "Another primary shift of this service covers part of those hours.",
            shift=clash.pk,
        )
    shift = Shift.objects.create(
        service=service, primary=primary, backup=backup, starts_at=start, ends_at=end,
        created_by=actor,
    )
    _audit(
        actor=actor, op="shift_added", service=service, meta=meta, shift=shift.pk,
        primary=str(primary.pk), backup=str(backup.pk) if backup else None,
        starts_at=start.isoformat(), ends_at=end.isoformat(),
    )
    return shift


@transaction.atomic
def shift_remove(*, actor: User | None, shift_id: int, meta: RequestMeta | None = None) -> None:
    if actor is not None:
        access_schedule_editor(actor)
    shift = Shift.objects.select_related("service").filter(pk=shift_id).first()
    if shift is None:
        raise NotFound("no_shift", "No such shift.")
    service = OnCallService.objects.select_for_update().get(pk=shift.service_id)
    shift.delete()
    _audit(actor=actor, op="shift_removed", service=service, meta=meta, shift=shift_id)
