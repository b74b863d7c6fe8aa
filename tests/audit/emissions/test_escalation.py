"""Emission tests for escalation: the policy set through the API and the command, and the
reminders and escalation steps taken by ``run_worker --once`` under a shifted clock.
Each asserts exactly the events written, field by field, and that no content is in them."""

from __future__ import annotations

import json
from io import StringIO

import pytest
import time_machine
from django.core.management import call_command

from collab.audit.models import AuditAction
from collab.cases.models import Message
from tests.audit.emissions import emits
from tests.audit.emissions.test_cases import (
    assert_no_content,
    expected,
    fields,
    head_seq,
    only,
    written,
)
from tests.escalation.support import at, consult_room, on_call, send_urgent, set_policy
from tests.support.actor import Actor

pytestmark = pytest.mark.django_db

UA = "emission-test/1.0"
POLICY = {
    "first_reminder_minutes": 2,
    "repeat_minutes": 3,
    "repeat_count": 1,
    "steps": [{"to": "oncall", "after_minutes": 4}, {"to": "backup", "after_minutes": 5}],
}


def worker_at(message: Message, minutes: float) -> None:
    with time_machine.travel(at(message, minutes), tick=False):
        call_command("run_worker", "--once", stdout=StringIO())


@pytest.mark.hostile_input  # a zero interval on purpose
@emits(AuditAction.ESCALATION_POLICY_CHANGED)
def test_policy_changes_are_recorded_and_refusals_are_not() -> None:
    admin = Actor("admin", role="admin").register()
    pcp = Actor("pcp").register()
    # Refused (a zero interval; a provider): nothing recorded.
    before = head_seq()
    assert admin.call("PUT", "/api/escalation/policy", {**POLICY, "repeat_minutes": 0}
                      ).status_code == 400
    assert pcp.call("PUT", "/api/escalation/policy", POLICY).status_code == 403
    assert written(before) == []
    # The organisation's, by an admin, with the request's user agent.
    before = head_seq()
    response = admin.send(
        "PUT", "/api/escalation/policy", json.dumps(POLICY).encode(),
        "application/json", extra={"HTTP_USER_AGENT": UA},
    )
    assert response.status_code == 200, response.content
    event = only(before, AuditAction.ESCALATION_POLICY_CHANGED)
    assert fields(event) == expected(
        AuditAction.ESCALATION_POLICY_CHANGED,
        actor=admin.user,
        target="escalation_policy",
        details={
            "scope": "organisation", "first_reminder_minutes": 2, "repeat_minutes": 3,
            "repeat_count": 1, "steps": "oncall@4,backup@5",
        },
    )
    assert event.user_agent == UA
    # A case's override by its owner, then cleared.
    state = consult_room(pcp)
    path = f"/api/cases/{state.case_id}/escalation-policy"
    before = head_seq()
    assert pcp.call("PUT", path, {**POLICY, "steps": []}).status_code == 200
    event = only(before, AuditAction.ESCALATION_POLICY_CHANGED)
    assert fields(event) == expected(
        AuditAction.ESCALATION_POLICY_CHANGED,
        actor=pcp.user,
        case=state.case_id,
        target=f"case:{state.case_id}",
        details={
            "scope": "case", "first_reminder_minutes": 2, "repeat_minutes": 3,
            "repeat_count": 1, "steps": "",
        },
    )
    before = head_seq()
    assert pcp.call("DELETE", path).status_code == 200
    event = only(before, AuditAction.ESCALATION_POLICY_CHANGED)
    assert fields(event) == expected(
        AuditAction.ESCALATION_POLICY_CHANGED,
        actor=pcp.user,
        case=state.case_id,
        target=f"case:{state.case_id}",
        details={"scope": "case", "cleared": True},
    )
    # The operator's command: no actor.
    before = head_seq()
    call_command("escalation_policy", "--count", "2", stdout=StringIO())
    event = only(before, AuditAction.ESCALATION_POLICY_CHANGED)
    assert fields(event) == expected(
        AuditAction.ESCALATION_POLICY_CHANGED,
        target="escalation_policy",
        details={
            "scope": "organisation", "first_reminder_minutes": 2, "repeat_minutes": 3,
            "repeat_count": 2, "steps": "oncall@4,backup@5",
        },
    )


@emits(AuditAction.URGENT_REMINDED, AuditAction.URGENT_ESCALATED)
def test_reminders_and_escalations_are_recorded_without_content() -> None:
    set_policy(POLICY)
    pcp = Actor("pcp").register()
    derm = Actor("derm", specialty="Dermatology").register()
    oncall = Actor("oncall", specialty="Dermatology").register()
    on_call(oncall, None)  # no backup: the second step has no target
    state = consult_room(pcp, derm)
    message = send_urgent(pcp, state, "the patient's potassium is 6.9")
    ciphertext = bytes(message.ciphertext)
    # Nothing due yet: nothing recorded.
    before = head_seq()
    worker_at(message, 1)
    assert written(before) == []
    before = head_seq()
    worker_at(message, 2)
    event = only(before, AuditAction.URGENT_REMINDED)
    assert fields(event) == expected(
        AuditAction.URGENT_REMINDED,
        case=state.case_id,
        target=f"message:{message.seq}",
        details={"seq": message.seq, "reminder": 1, "pending": 1},
    )
    assert_no_content(event, ciphertext, "potassium")
    before = head_seq()
    worker_at(message, 4)
    event = only(before, AuditAction.URGENT_ESCALATED)
    assert fields(event) == expected(
        AuditAction.URGENT_ESCALATED,
        case=state.case_id,
        target=f"message:{message.seq}",
        details={
            "seq": message.seq, "step": 0, "to": "oncall", "user": str(oncall.user.pk),
            "member": False,
        },
    )
    assert_no_content(event, ciphertext, "potassium")
    before = head_seq()
    worker_at(message, 5)
    event = only(before, AuditAction.URGENT_ESCALATED)
    assert fields(event) == expected(
        AuditAction.URGENT_ESCALATED,
        case=state.case_id,
        target=f"message:{message.seq}",
        outcome="failure",
        reason="no_target",
        details={"seq": message.seq, "step": 1, "to": "backup", "user": "", "member": False},
    )
    # The chain is used up: later passes record nothing.
    before = head_seq()
    worker_at(message, 30)
    assert written(before) == []


@emits(AuditAction.URGENT_ESCALATED)
def test_a_patients_step_outside_the_case_is_recorded_as_refused() -> None:
    from collab.crypto.roster import Role
    from tests.cases.patients import invited_patient

    set_policy(POLICY)
    pcp = Actor("pcp").register()
    oncall = Actor("oncall", specialty="Dermatology").register()
    on_call(oncall, None)
    state = consult_room(pcp)
    patient = invited_patient(pcp, state)
    assert pcp.add(state, patient, Role.PATIENT).status_code == 201
    patient.join(state.case_id)
    message = send_urgent(patient, state, "my chest hurts badly")
    ciphertext = bytes(message.ciphertext)
    worker_at(message, 2)
    before = head_seq()
    worker_at(message, 4)
    event = only(before, AuditAction.URGENT_ESCALATED)
    assert fields(event) == expected(
        AuditAction.URGENT_ESCALATED,
        case=state.case_id,
        target=f"message:{message.seq}",
        outcome="failure",
        reason="patient_sender",
        details={"seq": message.seq, "step": 0, "to": "oncall", "user": "", "member": False},
    )
    assert_no_content(event, ciphertext, "chest")
