"""Who a step is shown to and when timers stop: a target outside the case is never
identified to the room (patients included), a patient's urgent message never pages
anyone outside the case, closing a case ends its timers, a removed owner is not paged,
and two first case overrides at once both succeed (PostgreSQL)."""

from __future__ import annotations

import threading
import time

import pytest
import time_machine
from django.db import connection, connections, transaction

from collab.audit.models import AuditAction, AuditEvent
from collab.cases.models import Case, Message, Notification, NotificationKind, Status
from collab.cases.services.consults import case_status_change
from collab.client.case_state import CaseState
from collab.crypto.roster import Role
from collab.escalation import policy as policies
from collab.escalation.models import CasePolicy, DoneReason, Escalation, EscalationStep
from collab.escalation.services import PassResult, escalation_run_due
from tests.cases.patients import invited_patient
from tests.escalation.support import POLICY, at, consult_room, on_call, send_urgent, set_policy
from tests.support.actor import Actor

ESCALATED = NotificationKind.URGENT_ESCALATED
REMINDER = NotificationKind.URGENT_REMINDER


def run_at(message: Message, minutes: float) -> PassResult:
    with time_machine.travel(at(message, minutes), tick=False):
        return escalation_run_due()


def patient_room() -> tuple[Actor, Actor, Actor, CaseState, Actor]:
    """pcp (owner), derm and a patient in one case; a secretly named on-call provider."""
    pcp = Actor("pcp", specialty="Family medicine").register()
    derm = Actor("derm", specialty="Dermatology").register()
    oncall = Actor("drsecret", specialty="Dermatology").register()
    oncall.user.display_name = "Dr Secret Oncall"
    oncall.user.save(update_fields=["display_name"])
    on_call(oncall, None)
    state = consult_room(pcp, derm)
    patient = invited_patient(pcp, state)
    assert pcp.add(state, patient, Role.PATIENT).status_code == 201
    patient.join(state.case_id)
    return pcp, derm, patient, state, oncall


@pytest.mark.django_db
def test_a_target_outside_the_case_is_never_identified_to_the_room() -> None:
    pcp, derm, patient, state, oncall = patient_room()
    set_policy({**POLICY, "steps": [{"to": "oncall", "after_minutes": 3},
                                    {"to": "owner", "after_minutes": 4}]})
    message = send_urgent(derm, state)
    run_at(message, 4)
    assert Notification.objects.filter(user=oncall.user, kind=ESCALATED).exists()
    for reader in (patient, pcp):
        response = reader.call("GET", f"/api/cases/{state.case_id}/urgent")
        text = response.content.decode()
        assert str(oncall.user.pk) not in text and "Secret" not in text
        assert "drsecret" not in text
        steps = response.json()["messages"][0]["escalation"]["steps"]
        assert [(s["via"], s["to"], s["member"]) for s in steps] == [
            ("oncall", {"id": None, "name": "the on-call provider (outside the case)"}, False),
            ("owner", {"id": str(pcp.user.pk), "name": "Pcp"}, True),  # a member: named
        ]


@pytest.mark.django_db
def test_a_patients_urgent_message_never_pages_anyone_outside_the_case() -> None:
    pcp, _derm, patient, state, oncall = patient_room()
    set_policy({"first_reminder_minutes": 1, "repeat_minutes": 1, "repeat_count": 1,
                "steps": [{"to": "oncall", "after_minutes": 2},
                          {"to": "owner", "after_minutes": 3}]})
    message = send_urgent(patient, state)
    done = run_at(message, 3)
    assert (done.reminders, done.escalations) == (1, 2)
    # The members are reminded and the owner (a member) is paged; on call is not.
    assert sorted(
        n.user.username for n in Notification.objects.filter(kind=REMINDER)
    ) == ["derm", "pcp"]
    assert [n.user.username for n in Notification.objects.filter(kind=ESCALATED)] == ["pcp"]
    steps = [(s.to_kind, s.target_id, s.outcome) for s in EscalationStep.objects.all()]
    assert steps == [("oncall", None, "no_target"), ("owner", pcp.user.pk, "notified")]
    events = AuditEvent.objects.filter(action=AuditAction.URGENT_ESCALATED).order_by("seq")
    assert [(e.outcome, e.reason, e.details["user"]) for e in events] == [
        ("failure", "patient_sender", ""), ("success", "", str(pcp.user.pk)),
    ]
    body = patient.call("GET", f"/api/cases/{state.case_id}/urgent").content.decode()
    assert str(oncall.user.pk) not in body and "Secret" not in body


@pytest.mark.django_db
def test_closing_the_case_ends_its_timers_and_reopening_does_not_restart_them() -> None:
    pcp = Actor("pcp", specialty="Family medicine").register()
    derm = Actor("derm", specialty="Dermatology").register()
    oncall = Actor("oc", specialty="Dermatology").register()
    state = consult_room(pcp, derm)
    on_call(oncall, None)
    set_policy({"first_reminder_minutes": 1, "repeat_minutes": 1, "repeat_count": 5,
                "steps": [{"to": "oncall", "after_minutes": 2}]})
    message = send_urgent(pcp, state)
    case_status_change(user=pcp.user, case_id=state.case_id, status="closed")
    row = Escalation.objects.get(message=message)
    assert (row.done_reason, row.next_due) == (DoneReason.CLOSED, None)
    case_status_change(user=pcp.user, case_id=state.case_id, status="requested")
    done = run_at(message, 3)
    assert done.claimed == 0
    assert not Notification.objects.filter(kind__in=[REMINDER, ESCALATED]).exists()
    assert not EscalationStep.objects.exists()


@pytest.mark.django_db
def test_a_timer_of_a_closed_case_finishes_at_the_next_pass_without_paging() -> None:
    # A case closed while its timer was left running (written directly, as before the
    # close hook): the worker ends the timer instead of taking its steps.
    pcp = Actor("pcp", specialty="Family medicine").register()
    derm = Actor("derm", specialty="Dermatology").register()
    oncall = Actor("oc", specialty="Dermatology").register()
    state = consult_room(pcp, derm)
    on_call(oncall, None)
    set_policy({"first_reminder_minutes": 1, "repeat_minutes": 1, "repeat_count": 5,
                "steps": [{"to": "oncall", "after_minutes": 2}]})
    message = send_urgent(pcp, state)
    Case.objects.filter(pk=state.case_id).update(status=Status.CLOSED)
    done = run_at(message, 3)
    assert (done.claimed, done.finished, done.reminders, done.escalations) == (
        1, 1, 0, 0
    )
    assert Escalation.objects.get(message=message).done_reason == DoneReason.CLOSED
    assert not Notification.objects.filter(kind__in=[REMINDER, ESCALATED]).exists()


@pytest.mark.django_db
def test_an_owner_removed_from_the_case_is_not_paged() -> None:
    pcp = Actor("pcp", specialty="Family medicine").register()
    derm = Actor("derm", specialty="Dermatology").register()
    nurse = Actor("nurse", specialty="Dermatology").register()
    state = pcp.open_case(specialty="Dermatology")
    assert pcp.add(state, derm, Role.OWNER).status_code == 201
    assert pcp.add(state, nurse).status_code == 201
    derm_state = derm.join(state.case_id)
    nurse.join(state.case_id)
    assert derm.remove(derm_state, pcp).status_code == 201  # the opener leaves the case
    set_policy({"first_reminder_minutes": 1, "repeat_minutes": 1, "repeat_count": 0,
                "steps": [{"to": "owner", "after_minutes": 2}]})
    message = send_urgent(derm, derm_state)
    run_at(message, 3)
    assert not Notification.objects.filter(user=pcp.user, kind=ESCALATED).exists()
    (step,) = EscalationStep.objects.all()
    assert (step.to_kind, step.target_id, step.outcome) == ("owner", None, "no_target")
    event = AuditEvent.objects.get(action=AuditAction.URGENT_ESCALATED)
    assert (event.outcome, event.reason) == ("failure", "no_target")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_first_case_overrides_at_once_both_succeed() -> None:
    pcp = Actor("pcp", specialty="Family medicine").register()
    state = pcp.open_case(specialty="Dermatology")
    first = {**POLICY, "repeat_count": 1}
    second = {**POLICY, "repeat_count": 2}
    errors: list[BaseException] = []
    written = threading.Event()
    release = threading.Event()

    def hold_first() -> None:
        # Writes the override and holds its transaction open until the second waits.
        try:
            with transaction.atomic():
                policies.case_policy_set(user=pcp.user, case_id=state.case_id, data=first)
                written.set()
                release.wait(30)
        except BaseException as error:  # reported by the assertion below
            errors.append(error)
        finally:
            written.set()
            connection.close()

    def second_write() -> None:
        try:
            policies.case_policy_set(user=pcp.user, case_id=state.case_id, data=second)
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    a = threading.Thread(target=hold_first)
    a.start()
    written.wait(30)
    b = threading.Thread(target=second_write)
    b.start()
    # Commit the first only once the second is waiting on a lock (the case row after
    # the fix; the unique index of the one-to-one before it).
    waiting = False
    with connections["default"].cursor() as cursor:
        for _ in range(600):
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND datname = current_database()"
            )
            waiting = bool(cursor.fetchone()[0])
            if waiting:
                break
            time.sleep(0.05)  # polling for the other thread's lock wait, not a timer
    release.set()
    a.join()
    b.join()
    assert waiting  # the two writes did overlap
    assert errors == []
    assert CasePolicy.objects.get(case_id=state.case_id).repeat_count == 2
