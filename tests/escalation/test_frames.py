"""The room hears reminders and escalations as content-free frames; the target's own
sockets hear the notification."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async as sync_to_async

from collab.escalation.services import escalation_pass
from tests.cases.test_consults import _next, _socket
from tests.escalation.support import at, consult_room, on_call, send_urgent, set_policy
from tests.support.actor import Actor

POLICY = {
    "first_reminder_minutes": 2,
    "repeat_minutes": 2,
    "repeat_count": 1,
    "steps": [{"to": "oncall", "after_minutes": 3}],
}


@pytest.mark.django_db(transaction=True)
async def test_reminder_and_escalation_frames_reach_the_room() -> None:
    def setup() -> tuple[Actor, Actor, Actor, object]:
        set_policy(POLICY)
        pcp = Actor("pcp").register()
        derm = Actor("derm", specialty="Dermatology").register()
        oncall = Actor("oncall", specialty="Dermatology").register()
        on_call(oncall, None)
        return pcp, derm, oncall, consult_room(pcp, derm)

    pcp, derm, _oncall, state = await sync_to_async(setup)()
    pcp_ws = await _socket(pcp, state)
    derm_ws = await _socket(derm, state)
    message = await sync_to_async(send_urgent)(pcp, state)
    await _next(derm_ws, "message")

    await sync_to_async(escalation_pass)(now=at(message, 2))
    for ws in (pcp_ws, derm_ws):
        frame = await _next(ws, "urgent_reminder")
        assert frame == {
            "type": "urgent_reminder",
            "seq": message.seq,
            "reminder": 1,
            "pending": [str(derm.user.pk)],
            "at": at(message, 2).isoformat(),
        }
    notice = await _next(derm_ws, "notify")
    while notice["kind"] != "urgent_reminder":  # the urgent_message notice came first
        notice = await _next(derm_ws, "notify")
    assert notice["case"] == str(state.case_id)

    await sync_to_async(escalation_pass)(now=at(message, 3))
    for ws in (pcp_ws, derm_ws):
        frame = await _next(ws, "urgent_escalated")
        assert frame == {
            "type": "urgent_escalated",
            "seq": message.seq,
            # Not a member: every socket of the case gets the frame, so no id or name.
            "to": {"id": None, "name": "the on-call provider (outside the case)"},
            "via": "oncall",
            "member": False,
            "at": at(message, 3).isoformat(),
        }
    for ws in (pcp_ws, derm_ws):
        await ws.disconnect()
