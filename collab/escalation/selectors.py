"""Reads for escalation: who still owes an acknowledgement, and a case's timers."""

from __future__ import annotations

import uuid
from typing import Any

from collab.accounts.models import Device, User
from collab.cases.models import KeyWrap, Member, Message, UrgentAck
from collab.escalation.models import Escalation, EscalationStep


def pending_recipients(message: Message) -> list[uuid.UUID]:
    """Members other than the sender who can read the message (a device of theirs holds
    its epoch's key) and have not acknowledged it: the rule of GET /api/cases/<id>/urgent."""
    readers = set(
        Device.objects.filter(
            pk__in=KeyWrap.objects.filter(case_id=message.case_id, epoch=message.epoch).values(
                "device_id"
            )
        ).values_list("user_id", flat=True)
    )
    members = set(
        Member.objects.filter(case_id=message.case_id).values_list("user_id", flat=True)
    )
    acked = set(UrgentAck.objects.filter(message=message).values_list("user_id", flat=True))
    return sorted((readers & members) - acked - {message.sender_id}, key=str)


# What a room is told of a target outside the case, by step kind (owner: never outside).
OUTSIDE_NAMES = {
    "oncall": "the on-call provider (outside the case)",
    "backup": "the backup on call (outside the case)",
    "owner": "the case owner (outside the case)",
}


def step_target_wire(target: User | None, *, member: bool, via: str) -> dict[str, Any] | None:
    """``to`` of a step: a member by id and name; a target outside the case with no id
    and a description only. Everything here reaches every member, patients included,
    and patients may not learn who is on call (providers ask GET /api/oncall/now)."""
    if target is None:
        return None
    if not member:
        return {"id": None, "name": OUTSIDE_NAMES.get(via, "someone outside the case")}
    return {"id": str(target.pk), "name": str(target)}


def step_wire(step: EscalationStep) -> dict[str, Any]:
    return {
        "index": step.index,
        "via": step.to_kind,
        "outcome": step.outcome,
        "to": step_target_wire(step.target, member=step.target_was_member, via=step.to_kind),
        "member": step.target_was_member,
        "at": step.at.isoformat(),
    }


def escalation_wire(row: Escalation, steps: list[EscalationStep]) -> dict[str, Any]:
    return {
        "started_at": row.started_at.isoformat(),
        "next_due": row.next_due.isoformat() if row.next_due else None,
        "reminders_sent": row.reminders_sent,
        "step_index": row.step_index,
        "done_at": row.done_at.isoformat() if row.done_at else None,
        "done_reason": row.done_reason or None,
        "policy": row.policy,
        "steps": [step_wire(s) for s in steps],
    }


def escalations_by_seq(*, case_id: uuid.UUID) -> dict[int, dict[str, Any]]:
    """Each urgent message's timer in the case, keyed by the message's seq (three queries)."""
    rows = list(
        Escalation.objects.filter(case_id=case_id).select_related("message").only(
            "pk", "started_at", "next_due", "reminders_sent", "step_index", "done_at",
            "done_reason", "policy", "message__seq",
        )
    )
    steps: dict[int, list[EscalationStep]] = {}
    for step in EscalationStep.objects.filter(escalation__in=rows).select_related("target"):
        steps.setdefault(step.escalation_id, []).append(step)
    return {row.message.seq: escalation_wire(row, steps.get(row.pk, [])) for row in rows}
