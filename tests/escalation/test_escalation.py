"""Escalation of unacknowledged urgent messages: reminders and the chain at the policy's
times (a controllable clock, time_machine; no sleeps), acknowledgements stopping them,
the worker command, and the state served after a reload."""

from __future__ import annotations

from io import StringIO

import pytest
import time_machine
from django.core.management import call_command

from collab.audit.models import AuditAction, AuditEvent
from collab.cases.models import Member, Message, Notification, NotificationKind
from collab.cases.services.consults import urgent_ack
from collab.escalation.models import DoneReason, Escalation, EscalationStep
from collab.escalation.services import escalation_run_due
from tests.escalation.support import at, consult_room, on_call, send_urgent, set_policy
from tests.support.actor import Actor

pytestmark = pytest.mark.django_db

REMINDER = NotificationKind.URGENT_REMINDER
ESCALATED = NotificationKind.URGENT_ESCALATED


@pytest.fixture
def pcp() -> Actor:
    return Actor("pcp", specialty="Family medicine").register()


@pytest.fixture
def derm() -> Actor:
    return Actor("derm", specialty="Dermatology").register()


def worker_at(message: Message, minutes: float) -> str:
    """``run_worker --once`` with the clock at ``minutes`` after the message was stored."""
    out = StringIO()
    with time_machine.travel(at(message, minutes), tick=False):
        call_command("run_worker", "--once", stdout=out)
    return out.getvalue()


def notices(kind: str) -> list[tuple[str, str]]:
    return sorted(
        (n.user.username, str(n.case_id)) for n in Notification.objects.filter(kind=kind)
    )


def audit(action: str) -> list[dict[str, object]]:
    return [e.details for e in AuditEvent.objects.filter(action=action).order_by("seq")]


def test_unacknowledged_urgent_message_escalates_along_the_chain_at_the_configured_times(
    pcp: Actor, derm: Actor
) -> None:
    set_policy()
    oncall = Actor("oncall", specialty="Dermatology").register()
    backup = Actor("backup", specialty="Dermatology").register()
    on_call(oncall, backup)
    state = consult_room(pcp, derm)
    message = send_urgent(pcp, state)
    case = str(state.case_id)
    row = Escalation.objects.get(message=message)
    assert (row.next_due, row.reminders_sent, row.step_index) == (at(message, 2), 0, 0)

    # Before the first reminder: nothing is due, nothing is sent.
    assert worker_at(message, 1.9).startswith("0 due")
    assert notices(REMINDER) == []
    # 2, 4 and 6 minutes: three reminders to the member who has not acknowledged.
    for n, minutes in enumerate((2, 4, 6), start=1):
        assert worker_at(message, minutes).startswith("1 due, 1 reminder(s), 0 escalation")
        assert notices(REMINDER) == [("derm", case)] * n
    assert [d["reminder"] for d in audit(AuditAction.URGENT_REMINDED)] == [1, 2, 3]
    # The count is used up: at 8 minutes nothing more.
    assert worker_at(message, 8).startswith("0 due")
    assert notices(REMINDER) == [("derm", case)] * 3
    # 10 minutes: the on-call primary (not a member: notified only, never added).
    assert worker_at(message, 10).startswith("1 due, 0 reminder(s), 1 escalation")
    assert notices(ESCALATED) == [("oncall", case)]
    assert not Member.objects.filter(case_id=state.case_id, user=oncall.user).exists()
    # 15: the backup; 20: the case owner; then the timer is finished.
    worker_at(message, 15)
    assert notices(ESCALATED) == [("backup", case), ("oncall", case)]
    assert worker_at(message, 20).endswith("1 escalation(s), 1 finished\n")
    assert notices(ESCALATED) == [("backup", case), ("oncall", case), ("pcp", case)]
    steps = []
    for s in EscalationStep.objects.order_by("index"):
        assert s.target is not None  # each step here goes to a known person
        steps.append((s.index, s.to_kind, s.target.username, s.target_was_member, s.at))
    assert steps == [
        (0, "oncall", "oncall", False, at(message, 10)),
        (1, "backup", "backup", False, at(message, 15)),
        (2, "owner", "pcp", True, at(message, 20)),
    ]
    row.refresh_from_db()
    assert (row.done_reason, row.done_at, row.next_due) == (
        DoneReason.EXHAUSTED, at(message, 20), None
    )
    assert [(d["to"], d["member"]) for d in audit(AuditAction.URGENT_ESCALATED)] == [
        ("oncall", False), ("backup", False), ("owner", True)
    ]
    # Later passes find nothing.
    assert worker_at(message, 60).startswith("0 due")

    # After a reload, members read the whole story from GET /api/cases/<id>/urgent.
    (item,) = derm.call("GET", f"/api/cases/{state.case_id}/urgent").json()["messages"]
    timer = item["escalation"]
    assert (timer["reminders_sent"], timer["step_index"], timer["done_reason"]) == (
        3, 3, "exhausted"
    )
    # Targets outside the case are described, never identified (the room includes patients).
    assert [(s["via"], s["to"], s["member"]) for s in timer["steps"]] == [
        ("oncall", {"id": None, "name": "the on-call provider (outside the case)"}, False),
        ("backup", {"id": None, "name": "the backup on call (outside the case)"}, False),
        ("owner", {"id": str(pcp.user.pk), "name": "Pcp"}, True),
    ]


def test_an_acknowledgement_stops_the_escalation(pcp: Actor, derm: Actor) -> None:
    set_policy()
    oncall = Actor("oncall", specialty="Dermatology").register()
    on_call(oncall, None)
    state = consult_room(pcp, derm)
    message = send_urgent(pcp, state)
    worker_at(message, 2)
    assert notices(REMINDER) == [("derm", str(state.case_id))]
    with time_machine.travel(at(message, 3), tick=False):
        urgent_ack(user=derm.user, case_id=state.case_id, seq=message.seq)
    row = Escalation.objects.get(message=message)
    assert (row.done_reason, row.done_at, row.next_due) == (
        DoneReason.ACKNOWLEDGED, at(message, 3), None
    )
    # Nothing more at any later time: no reminder, no escalation.
    for minutes in (4, 6, 10, 15, 20, 60):
        assert worker_at(message, minutes).startswith("0 due")
    assert len(notices(REMINDER)) == 1
    assert notices(ESCALATED) == []
    assert not EscalationStep.objects.exists()


def test_an_acknowledgement_stops_reminders_for_that_member_only(pcp: Actor, derm: Actor) -> None:
    set_policy()
    derm2 = Actor("derm2", specialty="Dermatology").register()
    state = consult_room(pcp, derm, derm2)
    message = send_urgent(pcp, state)
    case = str(state.case_id)
    worker_at(message, 2)
    assert notices(REMINDER) == [("derm", case), ("derm2", case)]
    urgent_ack(user=derm.user, case_id=state.case_id, seq=message.seq)
    assert Escalation.objects.get(message=message).done_at is None  # derm2 still owes one
    worker_at(message, 4)
    assert notices(REMINDER) == [("derm", case), ("derm2", case), ("derm2", case)]
    assert audit(AuditAction.URGENT_REMINDED)[-1] == {"seq": message.seq, "reminder": 2,
                                                      "pending": 1}
    urgent_ack(user=derm2.user, case_id=state.case_id, seq=message.seq)
    assert Escalation.objects.get(message=message).done_reason == DoneReason.ACKNOWLEDGED


def test_no_on_call_shift_is_a_recorded_step_without_a_target(pcp: Actor, derm: Actor) -> None:
    set_policy({**_no_reminders(), "steps": [{"to": "oncall", "after_minutes": 5},
                                             {"to": "owner", "after_minutes": 6}]})
    state = consult_room(pcp, derm)
    message = send_urgent(pcp, state)
    worker_at(message, 5)
    (step,) = EscalationStep.objects.all()
    assert (step.to_kind, step.target, step.outcome) == ("oncall", None, "no_target")
    (event,) = AuditEvent.objects.filter(action=AuditAction.URGENT_ESCALATED)
    assert (event.outcome, event.reason, event.details["user"]) == ("failure", "no_target", "")
    assert notices(ESCALATED) == []
    worker_at(message, 6)
    assert notices(ESCALATED) == [("pcp", str(state.case_id))]


def test_a_missed_stretch_sends_one_reminder_not_a_burst(pcp: Actor, derm: Actor) -> None:
    """A worker down from minute 1 to 7 sends one reminder at 7 (slots 2, 4, 6 elapsed)."""
    set_policy({**_no_reminders(), "repeat_count": 10, "steps": []})
    state = consult_room(pcp, derm)
    message = send_urgent(pcp, state)
    worker_at(message, 7)
    assert len(notices(REMINDER)) == 1
    row = Escalation.objects.get(message=message)
    assert (row.reminders_sent, row.next_due) == (3, at(message, 8))


def test_a_running_timer_keeps_the_policy_it_started_with(pcp: Actor, derm: Actor) -> None:
    set_policy()
    state = consult_room(pcp, derm)
    message = send_urgent(pcp, state)
    set_policy({**_no_reminders(), "first_reminder_minutes": 30, "repeat_count": 1, "steps": []})
    worker_at(message, 2)
    assert len(notices(REMINDER)) == 1
    later = send_urgent(pcp, state, "second")
    assert Escalation.objects.get(message=later).next_due == at(later, 30)


def test_the_case_override_applies_to_new_urgent_messages(pcp: Actor, derm: Actor) -> None:
    set_policy()
    state = consult_room(pcp, derm)
    path = f"/api/cases/{state.case_id}/escalation-policy"
    custom = {"first_reminder_minutes": 5, "repeat_minutes": 1, "repeat_count": 1, "steps": []}
    assert pcp.call("PUT", path, custom).json() == {"source": "case", **custom}
    message = send_urgent(pcp, state)
    row = Escalation.objects.get(message=message)
    assert (row.policy, row.next_due) == (custom, at(message, 5))
    assert worker_at(message, 5).endswith("1 reminder(s), 0 escalation(s), 1 finished\n")


def test_a_worker_pass_with_nothing_due_changes_nothing(pcp: Actor, derm: Actor) -> None:
    state = consult_room(pcp, derm)
    send_urgent(pcp, state)
    before = AuditEvent.objects.count()
    result = escalation_run_due()
    assert (result.claimed, result.reminders, result.escalations) == (0, 0, 0)
    assert AuditEvent.objects.count() == before


def test_a_message_without_recipients_finishes_at_its_first_step(pcp: Actor) -> None:
    set_policy()
    state = consult_room(pcp)
    message = send_urgent(pcp, state)
    assert worker_at(message, 2).startswith("1 due, 0 reminder(s), 0 escalation(s), 1 finished")
    assert Escalation.objects.get(message=message).done_reason == DoneReason.ACKNOWLEDGED
    assert notices(REMINDER) == []


def test_a_removed_message_ends_its_timer_without_a_reminder(pcp: Actor, derm: Actor) -> None:
    """A recalled or purged message (its tombstone) is not reminded or escalated."""
    set_policy()
    state = consult_room(pcp, derm)
    message = send_urgent(pcp, state)
    Message.objects.filter(pk=message.pk).update(
        removed_at=at(message, 1), removed_reason="recalled"
    )
    assert worker_at(message, 2).startswith("1 due, 0 reminder(s), 0 escalation(s), 1 finished")
    assert Escalation.objects.get(message=message).done_reason == DoneReason.REMOVED
    assert notices(REMINDER) == []
    assert not AuditEvent.objects.filter(action=AuditAction.URGENT_REMINDED).exists()


def test_run_worker_refuses_a_bad_interval() -> None:
    with pytest.raises(SystemExit) as stopped:
        call_command("run_worker", "--interval", "0", stderr=StringIO())
    assert stopped.value.code == 2


def _no_reminders() -> dict[str, object]:
    return {"first_reminder_minutes": 2, "repeat_minutes": 2, "repeat_count": 0}
