"""Shared set-up for the on-call tests: a Dermatology service and its providers."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone

from collab.accounts.models import User
from collab.oncall import services
from collab.oncall.models import OnCallService, Shift
from tests.support.users import make_user


def at(hours: float, base: datetime | None = None) -> datetime:
    """An instant ``hours`` from ``base`` (default now), timezone-aware."""
    return (base or timezone.now()) + timedelta(hours=hours)


def derm_service() -> OnCallService:
    return services.service_create(actor=None, name="Dermatology consults", specialty="Dermatology")


def shift(
    service: OnCallService,
    primary: User,
    start: datetime,
    end: datetime,
    backup: User | None = None,
) -> Shift:
    return services.shift_add(
        actor=None,
        service_id=service.pk,
        primary_id=primary.pk,
        backup_id=backup.pk if backup else None,
        starts_at=start,
        ends_at=end,
    )


def derm_user(name: str) -> User:
    return make_user(name, specialty="Dermatology")
