"""Emission tests for on-call schedules and consult routing: each drives the real route,
command or case opening and diffs the exact events written (ids, hours and codes only)."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from collab.audit.models import AuditAction
from collab.oncall.models import ConsultOffer, OnCallService, Shift
from tests.audit.emissions import emits
from tests.audit.emissions.test_cases import (
    assert_no_content,
    expected,
    fields,
    head_seq,
    only,
    written,
)
from tests.oncall.support import at, derm_service, shift
from tests.support.actor import Actor

pytestmark = pytest.mark.django_db

A = AuditAction.ONCALL_CHANGED


@emits(AuditAction.ONCALL_CHANGED)
def test_every_schedule_change_is_recorded_and_a_refused_one_is_not() -> None:
    admin = Actor("root", role="admin")
    ann = Actor("ann", specialty="Dermatology")
    before = head_seq()
    made = admin.call("POST", "/api/oncall/services",
                      {"specialty": "Dermatology", "name": "Dermatology consults"}, device=False)
    assert made.status_code == 201
    service = OnCallService.objects.get()
    target = f"oncall_service:{service.pk}"
    assert fields(only(before, A)) == expected(
        A, actor=admin.user, target=target,
        details={"op": "service_created", "service": service.pk, "specialty": "Dermatology",
                 "name": "Dermatology consults"},
    )
    start, end = at(1).replace(microsecond=0), at(9).replace(microsecond=0)
    path = f"/api/oncall/services/{service.pk}/shifts"
    body = {"primary": str(ann.user.pk), "starts_at": start.isoformat(),
            "ends_at": end.isoformat()}
    before = head_seq()
    assert admin.call("POST", path, body, device=False).status_code == 201
    added = Shift.objects.get()
    event = only(before, A)
    assert fields(event) == expected(
        A, actor=admin.user, target=target,
        details={"op": "shift_added", "service": service.pk, "specialty": "Dermatology",
                 "shift": added.pk, "primary": str(ann.user.pk), "backup": None,
                 "starts_at": start.isoformat(), "ends_at": end.isoformat()},
    )
    assert_no_content(event, admin.session_id)
    # Refused: an overlapping shift, and a provider trying to edit. Nothing recorded.
    before = head_seq()
    assert admin.call("POST", path, body, device=False).status_code == 409
    assert ann.call("POST", f"/api/oncall/shifts/{added.pk}/remove", {},
                    device=False).status_code == 403
    assert written(before) == []
    before = head_seq()
    assert admin.call("POST", f"/api/oncall/shifts/{added.pk}/remove", {},
                      device=False).status_code == 200
    assert fields(only(before, A)) == expected(
        A, actor=admin.user, target=target,
        details={"op": "shift_removed", "service": service.pk, "specialty": "Dermatology",
                 "shift": added.pk},
    )


@emits(AuditAction.ONCALL_CHANGED)
def test_the_command_records_its_changes_without_an_actor() -> None:
    ann = Actor("ann", specialty="Dermatology")
    start, end = at(1).replace(microsecond=0), at(9).replace(microsecond=0)
    before = head_seq()
    call_command("oncall", "add", "--specialty", "Dermatology", "--primary", "ann",
                 "--start", start.isoformat(), "--end", end.isoformat(), stdout=StringIO())
    service, added = OnCallService.objects.get(), Shift.objects.get()
    target = f"oncall_service:{service.pk}"
    assert [fields(e) for e in written(before)] == [
        expected(A, target=target, details={
            "op": "service_created", "service": service.pk, "specialty": "Dermatology",
            "name": "Dermatology", "via": "command"}),
        expected(A, target=target, details={
            "op": "shift_added", "service": service.pk, "specialty": "Dermatology",
            "shift": added.pk, "primary": str(ann.user.pk), "backup": None,
            "starts_at": start.isoformat(), "ends_at": end.isoformat(), "via": "command"}),
    ]


@emits(AuditAction.CONSULT_OFFERED)
def test_a_consult_offered_to_the_oncall_provider_is_recorded_with_ids_only() -> None:
    pcp = Actor("pcp", specialty="Family medicine").register()
    ann = Actor("ann", specialty="Dermatology").register()
    bob = Actor("bob", specialty="Dermatology").register()
    covering = shift(derm_service(), ann.user, at(-1), at(8), backup=bob.user)
    before = head_seq()
    state = pcp.open_case(specialty="Dermatology")
    offer = ConsultOffer.objects.get()
    events = written(before)
    assert [e.action for e in events] == [AuditAction.CASE_OPENED, AuditAction.CONSULT_OFFERED]
    event = events[1]
    assert fields(event) == expected(
        AuditAction.CONSULT_OFFERED, case=state.case_id, target=f"user:{ann.user.pk}",
        details={"offered_to": str(ann.user.pk), "shift": covering.pk,
                 "exclusive_until": offer.exclusive_until.isoformat()},
    )
    assert offer.exclusive_until > timezone.now()
    genesis = state.chain[0]
    assert_no_content(event, genesis.encode(), genesis.entry_hash(), pcp.identity.uik_pub)
    # Nobody on call for the specialty: no offer, nothing recorded beyond the opening.
    before = head_seq()
    pcp.open_case(specialty="Cardiology")
    assert [e.action for e in written(before)] == [AuditAction.CASE_OPENED]
