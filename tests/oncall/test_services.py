"""On-call schedules: the lookup and every validation rule (refused input changes nothing)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from collab.accounts.models import User
from collab.audit.models import AuditAction, AuditEvent
from collab.errors import ServiceError
from collab.oncall import services
from collab.oncall.models import OnCallService, Shift
from collab.oncall.services import OnCallNow, oncall_now
from tests.oncall.support import at, derm_service, derm_user, shift
from tests.support.users import make_user

pytestmark = pytest.mark.django_db


def refused(code: str, **kwargs: object) -> None:
    before = (Shift.objects.count(), AuditEvent.objects.count())
    with pytest.raises(ServiceError) as caught:
        services.shift_add(actor=None, **kwargs)  # type: ignore[arg-type]
    assert caught.value.code == code, caught.value.message
    assert (Shift.objects.count(), AuditEvent.objects.count()) == before


def test_oncall_now_names_the_covering_shift_and_its_backup() -> None:
    service = derm_service()
    ann, bob, cat = derm_user("ann"), derm_user("bob"), derm_user("cat")
    now = timezone.now()
    first = shift(service, ann, at(-1, now), at(2, now), backup=bob)
    shift(service, cat, at(2, now), at(10, now))
    found = oncall_now("Dermatology", now)
    assert found == OnCallNow(
        service=service, primary=ann, backup=bob, ends_at=first.ends_at, shift_id=first.pk
    )
    # The end is exclusive: at 2 h the next shift covers, without a backup.
    later = oncall_now("Dermatology", at(2, now))
    assert later is not None and (later.primary, later.backup) == (cat, None)
    assert oncall_now("Dermatology", at(10, now)) is None
    assert oncall_now("Cardiology", now) is None
    assert oncall_now("", now) is None


def test_a_deactivated_primary_is_nobody_to_route_to() -> None:
    service = derm_service()
    ann, bob = derm_user("ann"), derm_user("bob")
    shift(service, ann, at(-1), at(1), backup=bob)
    ann.is_active = False
    ann.save(update_fields=["is_active"])
    found = oncall_now("Dermatology")
    assert found is not None and (found.primary, found.backup) == (None, bob)


def test_overlapping_primary_shifts_are_refused_and_adjoining_ones_allowed() -> None:
    service = derm_service()
    ann, bob = derm_user("ann"), derm_user("bob")
    base = timezone.now()
    kept = shift(service, ann, at(0, base), at(8, base))
    for start, end in ((-1, 1), (7, 9), (1, 2), (-1, 9), (0, 8)):
        refused(
            "shift_overlap", service_id=service.pk, primary_id=bob.pk, backup_id=None,
            starts_at=at(start, base), ends_at=at(end, base),
        )
    adjoining = shift(service, bob, at(8, base), at(16, base))
    assert list(Shift.objects.order_by("starts_at")) == [kept, adjoining]


def test_invalid_hours_are_refused() -> None:
    service = derm_service()
    ann = derm_user("ann")
    base = timezone.now()
    common = {"service_id": service.pk, "primary_id": ann.pk, "backup_id": None}
    refused("bad_hours", **common, starts_at=at(2, base), ends_at=at(2, base))
    refused("bad_hours", **common, starts_at=at(2, base), ends_at=at(1, base))
    refused("shift_too_long", **common, starts_at=at(0, base), ends_at=base + timedelta(days=32))
    refused("bad_time", **common, starts_at="2026-12-01T08:00", ends_at="2026-12-01T16:00+00:00")
    refused("bad_time", **common, starts_at="tomorrow", ends_at="2026-12-01T16:00+00:00")
    refused("no_service", service_id=999, primary_id=ann.pk, backup_id=None,
            starts_at=at(0, base), ends_at=at(1, base))


def test_only_active_providers_of_the_specialty_cover_a_shift() -> None:
    service = derm_service()
    ann = derm_user("ann")
    cardio = make_user("cardio", specialty="Cardiology")
    patient = make_user("pat", role="patient")
    admin = make_user("root", role="admin")
    gone = derm_user("gone")
    gone.is_active = False
    gone.save(update_fields=["is_active"])
    times = {"starts_at": at(0), "ends_at": at(1)}
    refused("wrong_specialty", service_id=service.pk, primary_id=cardio.pk, backup_id=None, **times)
    refused("not_provider", service_id=service.pk, primary_id=patient.pk, backup_id=None, **times)
    refused("not_provider", service_id=service.pk, primary_id=admin.pk, backup_id=None, **times)
    refused("not_provider", service_id=service.pk, primary_id=gone.pk, backup_id=None, **times)
    refused("no_user", service_id=service.pk, primary_id="not-a-uuid", backup_id=None, **times)
    # The backup takes the same consults, so the same rule; and is someone else.
    refused("wrong_specialty", service_id=service.pk, primary_id=ann.pk, backup_id=cardio.pk,
            **times)
    refused("backup_is_primary", service_id=service.pk, primary_id=ann.pk, backup_id=ann.pk,
            **times)


def test_one_service_per_specialty_and_name() -> None:
    derm_service()
    for name, specialty in (("Other", "Dermatology"), ("Dermatology consults", "Skin")):
        with pytest.raises(ServiceError) as caught:
            services.service_create(actor=None, name=name, specialty=specialty)
        assert caught.value.code == "service_exists"
    for specialty in ("", "  ", "x" * 81):
        with pytest.raises(ServiceError) as caught:
            services.service_create(actor=None, name="", specialty=specialty)
        assert caught.value.code == "bad_service"
    assert OnCallService.objects.count() == 1
    assert AuditEvent.objects.filter(action=AuditAction.ONCALL_CHANGED).count() == 1


def test_non_admins_cannot_write_through_the_services() -> None:
    service = derm_service()
    ann = derm_user("ann")
    staff = make_user("staff", role="provider")
    staff.is_staff = staff.is_superuser = True  # the Django admin site grants nothing here
    staff.save(update_fields=["is_staff", "is_superuser"])
    for actor in (ann, staff):
        with pytest.raises(ServiceError) as caught:
            services.service_create(actor=actor, name="X", specialty="X")
        assert caught.value.code == "admins_only"
        with pytest.raises(ServiceError) as caught:
            services.shift_add(actor=actor, service_id=service.pk, primary_id=ann.pk,
                               backup_id=None, starts_at=at(0), ends_at=at(1))
        assert caught.value.code == "admins_only"
    assert Shift.objects.count() == 0 and OnCallService.objects.count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_overlapping_adds_store_one_shift() -> None:
    """The service row lock serialises writers: of four overlapping adds racing, one is
    stored and the others are refused shift_overlap."""
    service = derm_service()
    people = [derm_user(f"racer{i}") for i in range(4)]
    barrier = threading.Barrier(len(people))
    base = timezone.now()
    codes: list[str] = []

    def add(person: User) -> None:
        try:
            barrier.wait()
            services.shift_add(actor=None, service_id=service.pk, primary_id=person.pk,
                               backup_id=None, starts_at=at(0, base), ends_at=at(8, base))
            codes.append("stored")
        except ServiceError as failure:
            codes.append(failure.code)
        finally:
            connection.close()

    threads = [threading.Thread(target=add, args=(p,)) for p in people]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == ["shift_overlap"] * 3 + ["stored"]
    assert Shift.objects.count() == 1
