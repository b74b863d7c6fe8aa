"""Shared set-up for the escalation tests: a consult room, an on-call shift, a policy."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone

from collab.cases.models import Message
from collab.cases.services.messages import message_send
from collab.client.case_state import CaseState
from collab.escalation import policy as policies
from collab.oncall.models import OnCallService, Shift
from tests.support.actor import Actor

# Short and distinct so each step's time is unambiguous in the tests.
POLICY = {
    "first_reminder_minutes": 2,
    "repeat_minutes": 2,
    "repeat_count": 3,
    "steps": [
        {"to": "oncall", "after_minutes": 10},
        {"to": "backup", "after_minutes": 15},
        {"to": "owner", "after_minutes": 20},
    ],
}


def consult_room(pcp: Actor, *others: Actor) -> CaseState:
    state = pcp.open_case(specialty="Dermatology")
    for other in others:
        assert pcp.add(state, other).status_code == 201
        other.join(state.case_id)
    return state


def on_call(primary: Actor, backup: Actor | None) -> Shift:
    service = OnCallService.objects.create(name="Dermatology consults", specialty="Dermatology")
    now = timezone.now()
    return Shift.objects.create(
        service=service,
        primary=primary.user,
        backup=backup.user if backup else None,
        starts_at=now - timedelta(hours=1),
        ends_at=now + timedelta(hours=12),
    )


def set_policy(data: dict[str, object] | None = None) -> None:
    policies.organisation_policy_set(actor=None, data=data or POLICY)


def send_urgent(actor: Actor, state: CaseState, text: str = "call me now") -> Message:
    envelope = actor.cases[state.case_id].seal({"text": text})
    seq = message_send(
        user=actor.user,
        device_id=actor.device.device_id,
        case_id=state.case_id,
        envelope=envelope,
        urgent=True,
    ).seq
    return Message.objects.get(case_id=state.case_id, seq=seq)


def at(message: Message, minutes: float) -> datetime:
    return message.stored_at + timedelta(minutes=minutes)
