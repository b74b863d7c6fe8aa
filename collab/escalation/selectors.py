"""Reads for escalation: who still owes an acknowledgement, and a case's timers."""

from __future__ import annotations

import uuid
from typing import Any

from collab.accounts.models import Device
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


def step_wire(step: EscalationStep) -> dict[str, Any]:
    target = step.target
    return {
        "index": step.index,
        "via": step.to_kind,
        "outcome": step.outcome,
        "to": None if target is None else {"id": str(target.pk), "name": str(target)},
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
