"""The case socket's ``delivered`` frame: stored as the user's delivered mark, relayed to
the room as a content-free ``delivered`` frame; a lower mark changes nothing; bad input
gets a clear error and changes nothing."""

from __future__ import annotations

import time
from typing import Any

import pytest
from channels.db import database_sync_to_async as sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.sessions.backends.db import SessionStore

from collab.accounts.policy import LAST_ACTIVITY_KEY
from collab.cases.models import DeliveredMark
from collab.cases.services.messages import message_send
from collab.consumers import base
from tests.support.communicators import open_room
from tests.support.rooms import Member, build_room

pytestmark = pytest.mark.django_db(transaction=True)


async def until(communicator: WebsocketCommunicator, kind: str) -> dict[str, Any]:
    """The next frame of ``kind`` (live messages and the like in between are skipped)."""
    while True:
        frame: dict[str, Any] = await communicator.receive_json_from(timeout=5)
        if frame["type"] == kind:
            return frame


def send(member: Member, text: str) -> int:
    envelope = member.state.seal({"text": text})
    return message_send(user=member.user, device_id=member.device.device_id,
                        case_id=envelope.header.case_id, envelope=envelope).seq


def mark(member: Member) -> tuple[int, Any] | None:
    found = DeliveredMark.objects.filter(case_id=member.state.case_id, user=member.user).first()
    return None if found is None else (found.up_to, found.updated_at)


async def pong(communicator: WebsocketCommunicator) -> list[dict[str, Any]]:
    """Everything before the answer to a ping: the frames an earlier frame caused."""
    await communicator.send_json_to({"type": "ping", "ref": "p"})
    seen = []
    while (frame := await communicator.receive_json_from(timeout=5))["type"] != "pong":
        seen.append(frame)
    return seen


async def test_delivered_is_stored_and_relayed_to_the_room_without_content() -> None:
    sender, recipient = await sync_to_async(build_room)(2, "dl")
    seq = await sync_to_async(send)(sender, "hello")
    sending = await open_room(sender)
    receiving = await open_room(recipient)
    await receiving.send_json_to({"type": "delivered", "up_to": seq})
    relayed = await until(sending, "delivered")
    stored = await sync_to_async(mark)(recipient)
    assert stored is not None and stored[0] == seq
    assert relayed == {"type": "delivered", "user": str(recipient.user.pk), "up_to": seq,
                       "at": stored[1].isoformat()}
    # The recipient's own socket hears it too (its other devices show the same mark).
    assert (await until(receiving, "delivered"))["up_to"] == seq
    await sending.disconnect()
    await receiving.disconnect()


async def test_a_lower_delivered_mark_changes_nothing_and_relays_nothing() -> None:
    sender, recipient = await sync_to_async(build_room)(2, "dlow")
    for i in range(4):
        await sync_to_async(send)(sender, f"m{i}")
    receiving = await open_room(recipient)
    await receiving.send_json_to({"type": "delivered", "up_to": 3})
    assert (await until(receiving, "delivered"))["up_to"] == 3
    before = await sync_to_async(mark)(recipient)
    await receiving.send_json_to({"type": "delivered", "up_to": 2})
    await receiving.send_json_to({"type": "delivered", "up_to": 3})
    assert await sync_to_async(mark)(recipient) == before
    # The next relay is the next move: a relayed 2 or 3 would have come before it.
    await receiving.send_json_to({"type": "delivered", "up_to": 4})
    frames = [await receiving.receive_json_from(timeout=5)]
    while frames[-1]["type"] != "delivered":
        frames.append(await receiving.receive_json_from(timeout=5))
    assert [f for f in frames if f["type"] == "error"] == []
    assert frames[-1]["up_to"] == 4
    await receiving.disconnect()


@pytest.mark.hostile_input
@pytest.mark.parametrize(
    ("up_to", "code", "extra"),
    [("3", "bad_field", {}), (1.5, "bad_field", {}), (True, "bad_field", {}),
     (-1, "bad_field", {}), (None, "bad_field", {}), (5, "bad_up_to", {"last_seq": 2})],
)
async def test_bad_delivered_input_is_refused_and_changes_nothing(up_to, code, extra) -> None:
    sender, recipient = await sync_to_async(build_room)(2, "dbad")
    for i in range(2):
        await sync_to_async(send)(sender, f"m{i}")
    receiving = await open_room(recipient)
    await receiving.send_json_to({"type": "delivered", "up_to": 1})
    await until(receiving, "delivered")
    before = await sync_to_async(mark)(recipient)
    await receiving.send_json_to({"type": "delivered", "up_to": up_to, "ref": "d1"})
    error = await until(receiving, "error")
    assert (error["code"], error["ref"]) == (code, "d1")
    assert {k: error[k] for k in extra} == extra
    assert await sync_to_async(mark)(recipient) == before
    await receiving.disconnect()


async def test_delivered_does_not_postpone_automatic_logoff(monkeypatch) -> None:
    monkeypatch.setattr(base, "ACTIVITY_WRITE_SECONDS", 0.0)  # write on every counted frame
    sender, recipient = await sync_to_async(build_room)(2, "didle")
    await sync_to_async(send)(sender, "hello")
    receiving = await open_room(recipient)
    earlier = time.time() - 100.0

    def set_last_activity() -> None:
        session = SessionStore(recipient.session)
        session[LAST_ACTIVITY_KEY] = earlier
        session.save()

    await sync_to_async(set_last_activity)()
    await receiving.send_json_to({"type": "delivered", "up_to": 1})
    await until(receiving, "delivered")
    await pong(receiving)
    stored = await sync_to_async(lambda: SessionStore(recipient.session)[LAST_ACTIVITY_KEY])()
    assert stored == earlier
    await receiving.disconnect()
