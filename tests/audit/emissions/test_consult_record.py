"""Emission test for the consult record: a consultant's ``consult_report`` sent over the
case-room socket writes the message's MESSAGE_STORED and the two CASE_STATUS_CHANGED
events of the answer (requested→accepted→answered), in that order, carrying none of the
report's text; a report by the requester is refused and writes nothing."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async as sync_to_async

from collab.audit.models import AuditAction
from collab.client import consult
from tests.audit.emissions import emits
from tests.audit.emissions.test_socket import (
    UA,
    assert_no_content,
    fields,
    head_seq,
    next_of,
    open_room,
    send_text,
    settled,
    stored_event,
    written,
)
from tests.support.rooms import build_room

pytestmark = pytest.mark.django_db(transaction=True)

ASSESSMENT = "suspected melanoma in situ, private"


@emits(AuditAction.MESSAGE_STORED, AuditAction.CASE_STATUS_CHANGED)
async def test_report_over_the_socket_records_the_message_and_the_answer(settings) -> None:
    settings.SESSION_CHECK_SECONDS = 3600
    opener, specialist = await sync_to_async(build_room)(2)
    body = consult.report_body(assessment=ASSESSMENT, recommendations="excise, private",
                               minutes=20, first_date="2025-12-02", last_date="2025-12-02")
    socket = await open_room(specialist)
    envelope = specialist.state.seal(body, content_type="consult_report")
    before = await sync_to_async(head_seq)()
    await socket.send_to(text_data=send_text(envelope, "r1"))
    ack = await next_of(socket, "ack", "error")
    assert (ack["type"], ack["seq"]) == ("ack", 1), ack
    await settled(socket)
    events = await sync_to_async(written)(before)
    status = {"outcome": "success", "reason": "", "actor_id": specialist.user.pk,
              "device_id": None, "case_id": specialist.state.case_id,
              "target": f"case:{specialist.state.case_id}"}
    assert [fields(e) for e in events] == [
        stored_event(specialist, envelope, 1),
        {"action": AuditAction.CASE_STATUS_CHANGED, **status,
         "details": {"from": "requested", "to": "accepted", "by": str(specialist.user.pk),
                     "reason": "report"}},
        {"action": AuditAction.CASE_STATUS_CHANGED, **status,
         "details": {"from": "accepted", "to": "answered", "by": str(specialist.user.pk),
                     "reason": "report"}},
    ]
    for event in events:
        assert event.user_agent == UA
        assert_no_content(event, envelope, ASSESSMENT, "excise, private")
    await socket.disconnect()
    # The requester's own report: refused with not_consultant, nothing written.
    socket = await open_room(opener)
    forged = opener.state.seal(body, content_type="consult_report")
    before = await sync_to_async(head_seq)()
    await socket.send_to(text_data=send_text(forged, "r2"))
    error = await next_of(socket, "ack", "error")
    assert (error["type"], error["code"]) == ("error", "not_consultant"), error
    await settled(socket)
    assert await sync_to_async(written)(before) == []
    await socket.disconnect()
