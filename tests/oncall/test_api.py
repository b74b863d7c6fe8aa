"""The /api/oncall/ routes: admins edit, providers read, everyone else is refused, and
refused input answers its own code and changes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from collab.audit.models import AuditAction, AuditEvent
from collab.oncall.models import OnCallService, Shift
from tests.oncall.support import at, derm_service, shift
from tests.support.actor import Actor

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin() -> Actor:
    return Actor("root", role="admin")


@pytest.fixture
def ann() -> Actor:
    return Actor("ann", specialty="Dermatology").register()


@pytest.fixture
def bob() -> Actor:
    return Actor("bob", specialty="Dermatology").register()


def post(actor: Actor, path: str, body: Any = None) -> Any:
    return actor.call("POST", path, body if body is not None else {}, device=False)


def get(actor: Actor, path: str) -> Any:
    return actor.call("GET", path, device=False)


def state() -> tuple[int, int, int]:
    return (
        OnCallService.objects.count(),
        Shift.objects.count(),
        AuditEvent.objects.filter(action=AuditAction.ONCALL_CHANGED).count(),
    )


def test_an_admin_builds_a_schedule_and_a_provider_sees_who_is_on_call(admin, ann, bob) -> None:
    made = post(admin, "/api/oncall/services", {"specialty": "Dermatology",
                                                 "name": "Dermatology consults"})
    assert made.status_code == 201, made.content
    service = made.json()
    assert service == {"id": service["id"], "name": "Dermatology consults",
                       "specialty": "Dermatology"}
    people = get(admin, f"/api/oncall/services/{service['id']}/providers").json()["providers"]
    assert {p["id"] for p in people} == {str(ann.user.pk), str(bob.user.pk)}
    start, end = at(-1).replace(microsecond=0), at(7).replace(microsecond=0)
    added = post(admin, f"/api/oncall/services/{service['id']}/shifts", {
        "primary": str(ann.user.pk), "backup": str(bob.user.pk),
        "starts_at": start.isoformat(), "ends_at": end.isoformat(),
    })
    assert added.status_code == 201, added.content
    shift_id = added.json()["id"]
    now = get(ann, "/api/oncall/now?specialty=Dermatology").json()
    assert now == {
        "specialty": "Dermatology",
        "service": service,
        "on_call": {
            "shift": shift_id,
            "primary": {"id": str(ann.user.pk), "display_name": "Ann"},
            "backup": {"id": str(bob.user.pk), "display_name": "Bob"},
            "ends_at": end.isoformat(),
        },
    }
    listed = get(bob, "/api/oncall/services").json()["services"]
    assert [(s["specialty"], s["now"]["shift"]) for s in listed] == [("Dermatology", shift_id)]
    shifts = get(bob, f"/api/oncall/services/{service['id']}/shifts").json()
    assert [s["id"] for s in shifts["shifts"]] == [shift_id]
    removed = post(admin, f"/api/oncall/shifts/{shift_id}/remove")
    assert removed.status_code == 200 and removed.json() == {"removed": shift_id}
    assert get(ann, "/api/oncall/now?specialty=Dermatology").json()["on_call"] is None


def test_nobody_on_call_reads_as_null(ann) -> None:
    answer = get(ann, "/api/oncall/now?specialty=Cardiology").json()
    assert answer == {"specialty": "Cardiology", "service": None, "on_call": None}


def test_providers_and_patients_cannot_edit_schedules(ann, bob) -> None:
    service = derm_service()
    kept = shift(service, ann.user, at(-1), at(1))
    patient = Actor("pat", role="patient")
    before = state()
    for actor in (ann, patient):
        attempts = [
            post(actor, "/api/oncall/services", {"specialty": "Cardiology"}),
            post(actor, f"/api/oncall/services/{service.pk}/shifts", {
                "primary": str(bob.user.pk), "starts_at": at(2).isoformat(),
                "ends_at": at(3).isoformat()}),
            post(actor, f"/api/oncall/shifts/{kept.pk}/remove"),
            get(actor, f"/api/oncall/services/{service.pk}/providers"),
        ]
        assert [(r.status_code, r.json()["error"]) for r in attempts] == [
            (403, "admins_only")] * 4
    assert state() == before


def test_patients_cannot_read_schedules() -> None:
    service = derm_service()
    patient = Actor("pat", role="patient")
    for path in ("/api/oncall/services", "/api/oncall/now?specialty=Dermatology",
                 f"/api/oncall/services/{service.pk}/shifts"):
        response = get(patient, path)
        assert (response.status_code, response.json()["error"]) == (403, "providers_only")


@pytest.mark.hostile_input  # sends input the description refuses, on purpose
def test_bad_schedules_get_their_own_code_and_change_nothing(admin, ann, bob) -> None:
    service = derm_service()
    shift(service, ann.user, at(0), at(8))
    path = f"/api/oncall/services/{service.pk}/shifts"
    good = {"primary": str(bob.user.pk), "starts_at": at(8).isoformat(),
            "ends_at": at(16).isoformat()}
    cases = [
        ({**good, "starts_at": at(7).isoformat()}, 409, "shift_overlap"),
        ({**good, "ends_at": good["starts_at"]}, 400, "bad_hours"),
        ({**good, "ends_at": at(7).isoformat()}, 400, "bad_hours"),
        ({**good, "ends_at": at(24 * 40).isoformat()}, 400, "shift_too_long"),
        ({**good, "starts_at": "2026-12-01T08:00"}, 400, "bad_time"),
        ({**good, "starts_at": 12}, 400, "bad_time"),
        # Converting year 1 at +14:00 to UTC overflows: refused, not a 500.
        ({**good, "starts_at": "0001-01-01T00:00:00+14:00"}, 400, "bad_time"),
        ({**good, "ends_at": "9999-12-31T23:59:59-12:00"}, 400, "bad_time"),
        ({**good, "backup": str(bob.user.pk)}, 400, "backup_is_primary"),
        ({**good, "primary": str(admin.user.pk)}, 400, "not_provider"),
        ({**good, "primary": "00000000-0000-0000-0000-000000000000"}, 404, "no_user"),
    ]
    cardio = Actor("cardio", specialty="Cardiology")
    cases.append(({**good, "backup": str(cardio.user.pk)}, 400, "wrong_specialty"))
    before = state()
    got = [(post(admin, path, body).status_code, post(admin, path, body).json()["error"])
           for body, _, _ in cases]
    assert got == [(status, code) for _, status, code in cases]
    assert post(admin, "/api/oncall/services/999/shifts", good).json()["error"] == "no_service"
    assert post(admin, "/api/oncall/shifts/999/remove").json()["error"] == "no_shift"
    assert get(admin, "/api/oncall/services/999/shifts").json()["error"] == "no_service"
    dup = post(admin, "/api/oncall/services", {"specialty": "Dermatology"})
    assert (dup.status_code, dup.json()["error"]) == (409, "service_exists")
    empty = post(admin, "/api/oncall/services", {"specialty": ""})
    assert (empty.status_code, empty.json()["error"]) == (400, "bad_service")
    assert get(ann, "/api/oncall/now").json()["error"] == "bad_field"
    assert state() == before
    overlap = post(admin, path, cases[0][0]).json()
    assert overlap["shift"] == Shift.objects.get().pk
