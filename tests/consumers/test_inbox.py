"""The inbox socket (/ws/inbox/): the live case list. New messages (one frame per case
and stored batch), status changes, being added and removed, notifications; the session
rules of every socket; and a removed member hears nothing more of the case."""

from __future__ import annotations

import json
from typing import Any

import pytest
from channels.db import database_sync_to_async as sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.contrib.sessions.backends.db import SessionStore
from django.db import connection

from collab.accounts.models import User
from collab.asgi import application
from collab.cases.models import Member as MemberRow
from collab.cases.models import Notification
from collab.cases.services import consults
from collab.cases.services.membership import log_entry_submit
from collab.cases.services.messages import SendRequest, message_send, message_send_batch
from collab.cases.services.notifications import notify
from collab.consumers import base
from collab.crypto.actions import AddUserBody, RemoveUserBody
from collab.crypto.roster import Role
from collab.realtime import LAYER, group_join, inbox_group
from tests.support.communicators import open_inbox
from tests.support.rooms import Member, build_room

pytestmark = pytest.mark.django_db(transaction=True)


async def drain(communicator: WebsocketCommunicator, user: User) -> list[dict[str, Any]]:
    """Every frame the layer brought before a sentinel notification rung after them.

    Events reach one socket's channel in the order they were published, so whatever an
    earlier action published has arrived once the sentinel has (a ping would not do: the
    socket may answer it before a pending layer event)."""
    notice = (await sync_to_async(notify)(user_ids=[user.pk], kind="join_request",
                                           case_id=None))[0]
    seen = []
    while (frame := await communicator.receive_json_from(timeout=5)) != {
        "type": "notify", "id": notice.pk, "kind": "join_request", "case": None
    }:
        seen.append(frame)
    return seen


def send(member: Member, text: str) -> int:
    envelope = member.state.seal({"text": text})
    return message_send(user=member.user, device_id=member.device.device_id,
                        case_id=envelope.header.case_id, envelope=envelope).seq


def remove(owner: Member, gone: Member) -> None:
    entry = owner.state.next_entry(RemoveUserBody(gone.user.pk))
    log_entry_submit(user=owner.user, device_id=owner.device.device_id,
                     case_id=owner.state.case_id, entry=entry)
    owner.state.accept_entries([entry])


def add(owner: Member, other: Member) -> None:
    body = AddUserBody(other.user.pk, Role.MEMBER, other.identity.uik_pub, (other.cert,))
    entry = owner.state.next_entry(body)
    log_entry_submit(user=owner.user, device_id=owner.device.device_id,
                     case_id=owner.state.case_id, entry=entry)
    owner.state.accept_entries([entry])


async def test_hello_names_the_users_cases_and_a_message_bumps_the_list() -> None:
    owner, member = await sync_to_async(build_room)(2, "ib")
    other_owner, _ = await sync_to_async(build_room)(2, "ibx")  # member is not in this one
    inbox, hello = await open_inbox(member.session)
    assert hello == {"type": "hello", "user": str(member.user.pk),
                     "cases": [str(owner.state.case_id)]}
    seq = await sync_to_async(send)(owner, "new")
    await sync_to_async(send)(other_owner, "elsewhere")
    assert await drain(inbox, member.user) == [
        {"type": "case_activity", "case": str(owner.state.case_id), "last_seq": seq}
    ]
    await inbox.disconnect()


async def test_a_stored_batch_rings_each_case_once_not_per_message() -> None:
    owner, member = await sync_to_async(build_room)(2, "ibb")
    inbox, _ = await open_inbox(member.session)
    def batch() -> None:
        requests = []
        for i in range(5):
            envelope = owner.state.seal({"text": f"m{i}"})
            requests.append(SendRequest(owner.user, owner.device.device_id,
                                        owner.state.case_id, envelope))
        message_send_batch(requests)

    await sync_to_async(batch)()
    assert await drain(inbox, member.user) == [
        {"type": "case_activity", "case": str(owner.state.case_id), "last_seq": 5}
    ]
    await inbox.disconnect()


async def test_status_changes_and_notifications_reach_the_inbox() -> None:
    owner, member = await sync_to_async(build_room)(2, "ibs")
    inbox, _ = await open_inbox(owner.session)
    change = await sync_to_async(consults.case_status_change)(
        user=member.user, case_id=owner.state.case_id, status="accepted"
    )

    def escalated() -> Notification:
        notify(user_ids=[owner.user.pk], kind="urgent_escalated", case_id=owner.state.case_id)
        return Notification.objects.get(user=owner.user, kind="urgent_escalated")

    notice = await sync_to_async(escalated)()
    frames = await drain(inbox, owner.user)
    assert {"type": "case_status", "case": str(owner.state.case_id), "status": "accepted",
            "at": change.changed_at.isoformat()} in frames
    assert {"type": "notify", "id": notice.pk, "kind": "urgent_escalated",
            "case": str(owner.state.case_id)} in frames
    await inbox.disconnect()


async def test_removed_member_gets_nothing_more_of_the_case() -> None:
    owner, member, gone = await sync_to_async(build_room)(3, "ibr")
    inbox, _ = await open_inbox(gone.session)
    await sync_to_async(remove)(owner, gone)
    removed = {"type": "case_removed", "case": str(owner.state.case_id)}
    assert await drain(inbox, gone.user) == [removed]
    await sync_to_async(send)(owner, "after the removal")
    await sync_to_async(consults.case_status_change)(
        user=member.user, case_id=owner.state.case_id, status="accepted"
    )
    assert await drain(inbox, gone.user) == []
    await inbox.disconnect()


async def test_a_member_removed_without_a_doorbell_stops_at_the_next_check(settings) -> None:
    """The roster doorbell was lost (a channel-layer outage): the membership check drops it."""
    settings.SESSION_CHECK_SECONDS = 0.1
    owner, gone = await sync_to_async(build_room)(2, "ibq")
    inbox, _ = await open_inbox(gone.session)
    await sync_to_async(
        lambda: MemberRow.objects.filter(case_id=owner.state.case_id, user=gone.user).delete()
    )()
    frame = await inbox.receive_json_from(timeout=5)
    assert frame == {"type": "case_removed", "case": str(owner.state.case_id)}
    await sync_to_async(send)(owner, "after the removal")
    assert [f for f in await drain(inbox, gone.user) if f["type"] == "case_activity"] == []
    await inbox.disconnect()


async def test_an_added_member_follows_the_case_at_once() -> None:
    (owner,) = await sync_to_async(build_room)(1, "iba")
    (newcomer,) = await sync_to_async(build_room)(1, "ibn")
    inbox, hello = await open_inbox(newcomer.session)
    assert str(owner.state.case_id) not in hello["cases"]
    await sync_to_async(add)(owner, newcomer)
    added = {"type": "case_added", "case": str(owner.state.case_id)}
    assert await drain(inbox, newcomer.user) == [added]
    seq = await sync_to_async(send)(owner, "welcome")
    assert await drain(inbox, newcomer.user) == [
        {"type": "case_activity", "case": str(owner.state.case_id), "last_seq": seq}
    ]
    await inbox.disconnect()


async def test_a_forged_added_doorbell_for_a_non_member_is_ignored() -> None:
    """The doorbell alone adds nothing: the database must agree the user is a member."""
    (owner,) = await sync_to_async(build_room)(1, "ibf")
    (stranger,) = await sync_to_async(build_room)(1, "ibg")
    inbox, _ = await open_inbox(stranger.session)
    await get_channel_layer().group_send(
        inbox_group(stranger.user.pk), {"type": "case.activity_added",
                                        "case": str(owner.state.case_id)}
    )
    await sync_to_async(send)(owner, "not for the stranger")
    assert await drain(inbox, stranger.user) == []
    await inbox.disconnect()


async def test_inbox_closes_when_the_session_ends(settings) -> None:
    settings.SESSION_CHECK_SECONDS = 0.1
    (member,) = await sync_to_async(build_room)(1, "ibe")
    inbox, _ = await open_inbox(member.session)
    await sync_to_async(lambda: SessionStore(member.session).delete())()
    frames = []
    while True:
        output = await inbox.receive_output(timeout=5)
        if output["type"] == "websocket.close":
            break
        frames.append(json.loads(output["text"]))
    assert output["code"] == 4401
    assert [f["code"] for f in frames if f["type"] == "error"] == ["session_ended"]


async def test_inbox_closes_for_a_user_made_inactive(settings) -> None:
    settings.SESSION_CHECK_SECONDS = 0.1
    (member,) = await sync_to_async(build_room)(1, "ibi")
    inbox, _ = await open_inbox(member.session)
    await sync_to_async(lambda: User.objects.filter(pk=member.user.pk).update(is_active=False))()
    output = await inbox.receive_output(timeout=5)
    while output["type"] != "websocket.close":
        output = await inbox.receive_output(timeout=5)
    assert output["code"] == 4401


async def test_inbox_needs_a_signed_in_session() -> None:
    headers = [(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1")]
    communicator = WebsocketCommunicator(application, "/ws/inbox/", headers=headers)
    connected, code = await communicator.connect()
    if connected:  # accepted so that the close code reaches the client
        output = await communicator.receive_output(timeout=5)
        while output["type"] != "websocket.close":
            output = await communicator.receive_output(timeout=5)
        code = output["code"]
    assert code == 4401


async def test_opening_the_inbox_costs_the_same_queries_whatever_the_number_of_cases() -> None:
    counter: list[str] = []

    def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        counter.append(sql)
        return execute(sql, params, many, context)

    def rooms_for(member: Member, n: int) -> None:
        for _ in range(n):
            (owner,) = build_room(1, "ibo")
            add(owner, member)

    (few,), (many,) = await sync_to_async(build_room)(1, "ibc"), await sync_to_async(
        build_room)(1, "ibd")
    await sync_to_async(rooms_for)(few, 1)
    await sync_to_async(rooms_for)(many, 6)
    await sync_to_async(lambda: connection.execute_wrappers.append(count))()
    counts = []
    for member in (few, many):
        start = len(counter)
        inbox, hello = await open_inbox(member.session)
        counts.append(len(counter) - start)
        await inbox.disconnect()
    await sync_to_async(lambda: connection.execute_wrappers.remove(count))()
    assert len(hello["cases"]) == 7
    assert 0 < counts[0] == counts[1], counts


async def test_after_a_layer_outage_the_inbox_joins_its_cases_and_says_resync(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Groups the layer could not take at the handshake are joined on recovery, and the
    client is told to fetch its list again (doorbells may have been lost meanwhile)."""
    owner, member = await sync_to_async(build_room)(2, "ibl")
    real_join = group_join  # what base imported, before the patch

    async def down(layer: Any, group: str, channel: str) -> bool:
        if group.startswith("activity."):
            LAYER.healthy = False
            return False
        return await real_join(layer, group, channel)

    monkeypatch.setattr(base, "group_join", down)
    try:
        inbox, hello = await open_inbox(member.session)
        assert "resync" not in hello
        seq = await sync_to_async(send)(owner, "while the layer was down")
        monkeypatch.setattr(base, "group_join", real_join)
        LAYER.healthy = True
        await LAYER._resync()
    finally:
        LAYER.healthy = True
    assert await inbox.receive_json_from(timeout=5) == {
        "type": "hello", "user": str(member.user.pk), "cases": [str(owner.state.case_id)],
        "resync": True,
    }
    seq = await sync_to_async(send)(owner, "after the recovery")
    assert await drain(inbox, member.user) == [
        {"type": "case_activity", "case": str(owner.state.case_id), "last_seq": seq}
    ]
    await inbox.disconnect()
