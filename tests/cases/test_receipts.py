"""Stored receipts: delivered marks (services.receipts) and GET /api/cases/<id>/receipts.

A delivered mark moves only forward and never past the case's last seq; bad input
changes nothing; the endpoint gives every member's stored read and delivered marks and
who acknowledged urgent messages, to members acting as an active device only.
"""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from collab.accounts import devices
from collab.cases.models import DeliveredMark, ReadMark
from collab.cases.services import consults, inbox, messages, receipts
from collab.cases.services.messages import message_send
from collab.errors import ServiceError
from tests.support.actor import Actor
from tests.support.rooms import Member, build_room
from tests.support.users import verified_client

pytestmark = pytest.mark.django_db


def send(member: Member, text: str, urgent: bool = False) -> int:
    envelope = member.state.seal({"text": text})
    return message_send(user=member.user, device_id=member.device.device_id,
                        case_id=envelope.header.case_id, envelope=envelope, urgent=urgent).seq


def test_delivered_mark_moves_forward_only(django_capture_on_commit_callbacks) -> None:
    a, b = build_room(2, "dm")
    case_id = a.state.case_id
    for i in range(3):
        send(a, f"m{i}")
    with django_capture_on_commit_callbacks() as callbacks:
        first = receipts.delivered_mark_set(user=b.user, case_id=case_id, up_to=2)
    assert (first.up_to, first.moved) == (2, True)
    assert len(callbacks) == 1  # the relay to the room, after commit
    stamp = DeliveredMark.objects.get(case_id=case_id, user=b.user).updated_at
    with django_capture_on_commit_callbacks() as callbacks:
        lower = receipts.delivered_mark_set(user=b.user, case_id=case_id, up_to=1)
        same = receipts.delivered_mark_set(user=b.user, case_id=case_id, up_to=2)
    assert (lower.up_to, lower.moved, same.moved) == (2, False, False)
    assert callbacks == []  # nothing relayed for a mark that did not move
    stored = DeliveredMark.objects.get(case_id=case_id, user=b.user)
    assert (stored.up_to, stored.updated_at) == (2, stamp)
    assert receipts.delivered_mark_set(user=b.user, case_id=case_id, up_to=3).up_to == 3


def test_delivered_beyond_last_seq_is_refused_and_changes_nothing() -> None:
    a, b = build_room(2, "dx")
    case_id = a.state.case_id
    send(a, "one")
    receipts.delivered_mark_set(user=b.user, case_id=case_id, up_to=1)
    with pytest.raises(ServiceError) as refused:
        receipts.delivered_mark_set(user=b.user, case_id=case_id, up_to=2)
    assert refused.value.code == "bad_up_to"
    assert refused.value.extra == {"last_seq": 1}
    assert DeliveredMark.objects.get(case_id=case_id, user=b.user).up_to == 1


def test_outsider_cannot_set_a_delivered_mark() -> None:
    a, _ = build_room(2, "do")
    (outsider,) = build_room(1, "dout")
    send(a, "one")
    with pytest.raises(ServiceError) as refused:
        receipts.delivered_mark_set(user=outsider.user, case_id=a.state.case_id, up_to=1)
    assert refused.value.code == "not_member"
    assert not DeliveredMark.objects.filter(case_id=a.state.case_id).exists()


def test_storing_a_message_writes_no_mark_for_any_recipient() -> None:
    """The send hot path is untouched: marks move only when a recipient reports."""
    room = build_room(5, "hot")
    with CaptureQueriesContext(connection) as ctx:
        send(room[0], "no per-recipient write")
    assert not DeliveredMark.objects.exists()
    assert not ReadMark.objects.filter(case_id=room[0].state.case_id).exists()
    assert not any("delivered" in q["sql"].lower() or "readmark" in q["sql"].lower()
                   for q in ctx.captured_queries)


def _receipts_world() -> tuple[Actor, Actor, Actor, Actor]:
    pcp = Actor("rpcp").register()
    gold = Actor("rgold").register()
    gone = Actor("rgone").register()
    outsider = Actor("rout").register()
    state = pcp.open_case()
    assert pcp.add(state, gold).status_code == 201
    assert pcp.add(state, gone).status_code == 201
    assert pcp.remove(state, gone).status_code == 201
    return pcp, gold, gone, outsider


def test_receipts_give_every_members_stored_marks_and_acknowledgements() -> None:
    pcp, gold, _, _ = _receipts_world()
    (case_id,) = pcp.cases
    state = pcp.cases[case_id]
    for i, urgent in enumerate((False, True, False)):
        envelope = state.seal({"text": f"m{i}"})
        message_send(user=pcp.user, device_id=pcp.device.device_id, case_id=case_id,
                     envelope=envelope, urgent=urgent)
    messages.read_mark_set(user=gold.user, case_id=case_id, up_to=2)
    receipts.delivered_mark_set(user=gold.user, case_id=case_id, up_to=3)
    ack = consults.urgent_ack(user=gold.user, case_id=case_id, seq=2,
                              device_id=gold.device.device_id)
    response = pcp.call("GET", f"/api/cases/{case_id}/receipts")
    assert response.status_code == 200, response.content
    body = response.json()
    read = ReadMark.objects.get(case_id=case_id, user=gold.user)
    delivered = DeliveredMark.objects.get(case_id=case_id, user=gold.user)
    by_user = {m["user"]: m for m in body["members"]}
    assert body["case"] == str(case_id) and body["last_seq"] == 3
    assert set(by_user) == {str(pcp.user.pk), str(gold.user.pk)}  # the removed one is gone
    assert by_user[str(gold.user.pk)] == {
        "user": str(gold.user.pk),
        "read": {"up_to": 2, "at": read.updated_at.isoformat()},
        "delivered": {"up_to": 3, "at": delivered.updated_at.isoformat()},
    }
    assert by_user[str(pcp.user.pk)] == {"user": str(pcp.user.pk), "read": None,
                                         "delivered": None}
    assert body["urgent"] == [
        {"seq": 2, "acknowledged": [{"user": str(gold.user.pk), "at": ack.at.isoformat()}]}
    ]


def test_receipts_cost_the_same_queries_whatever_the_room_size() -> None:
    small, large = build_room(2, "qs"), build_room(12, "ql")
    counts = []
    for room in (small, large):
        send(room[0], "urgent", urgent=True)
        for member in room[1:]:
            receipts.delivered_mark_set(user=member.user, case_id=room[0].state.case_id,
                                        up_to=1)
        with CaptureQueriesContext(connection) as ctx:
            answer = receipts.case_receipts(case_id=room[0].state.case_id)
        assert len(answer["members"]) == len(room)
        counts.append(len(ctx.captured_queries))
    assert counts[0] == counts[1], counts


@pytest.mark.parametrize("who", ["outsider", "removed", "revoked"])
def test_receipts_are_refused_to_non_members_and_revoked_devices(who: str) -> None:
    pcp, gold, gone, outsider = _receipts_world()
    (case_id,) = pcp.cases
    caller = {"outsider": outsider, "removed": gone, "revoked": gold}[who]
    if who == "revoked":
        devices.device_revoke(actor=gold.user, device_id=gold.device.device_id)
        gold.client = verified_client(gold.user)  # a session the revoked device never used
    response = caller.call("GET", f"/api/cases/{case_id}/receipts")
    expected = "device_revoked" if who == "revoked" else "not_member"
    assert (response.status_code, response.json()["error"]) == (403, expected)


def test_the_inbox_doorbell_adds_no_query_to_message_storage(monkeypatch, settings) -> None:
    """The one extra publish per case and batch is built from what the batch holds."""
    settings.AUDIT_CHECKPOINT_EVERY = 0  # a checkpoint is one more insert when one is due
    room = build_room(3, "qq")
    send(room[0], "warm-up")  # the audit head row exists from here on

    def stored_queries() -> int:
        with CaptureQueriesContext(connection) as ctx:
            send(room[1], "counted")
        return len(ctx.captured_queries)

    with_doorbell = stored_queries()
    monkeypatch.setattr(inbox, "activity_events", lambda last_seqs: [])
    assert stored_queries() == with_doorbell


def test_the_case_list_counts_others_messages_after_the_read_mark() -> None:
    pcp, gold, _, _ = _receipts_world()
    (case_id,) = pcp.cases
    state = pcp.cases[case_id]
    gold_state = gold.join(case_id)
    for i in range(3):
        envelope = state.seal({"text": f"m{i}"})
        message_send(user=pcp.user, device_id=pcp.device.device_id, case_id=case_id,
                     envelope=envelope)
    own = gold_state.seal({"text": "gold's own"})
    message_send(user=gold.user, device_id=gold.device.device_id, case_id=case_id, envelope=own)
    messages.read_mark_set(user=gold.user, case_id=case_id, up_to=1)

    def unread(actor: Actor) -> int:
        (item,) = [c for c in actor.call("GET", "/api/cases").json()["cases"]
                   if c["id"] == str(case_id)]
        return int(item["unread"])

    assert unread(gold) == 2  # seqs 2 and 3; its own message (4) is not unread
    assert unread(pcp) == 1  # gold's message
