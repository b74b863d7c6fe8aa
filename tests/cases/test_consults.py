"""The consult workflow: status, the specialty queue, claims, urgent messages, notifications."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from channels.db import database_sync_to_async as sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connection, connections
from django.utils import timezone

from collab.asgi import application
from collab.audit.models import AuditAction, AuditEvent
from collab.cases.models import (
    Case,
    CaseStatusChange,
    JoinRequest,
    Message,
    Notification,
    UrgentAck,
)
from collab.cases.services.consults import urgent_ack
from collab.cases.services.messages import message_send
from collab.client.case_state import CaseState
from collab.errors import ServiceError
from tests.support.actor import Actor
from tests.support.users import session_cookie
from tests.support.ws import answer_challenge, room_path

pytestmark = pytest.mark.django_db


@pytest.fixture
def pcp() -> Actor:
    pcp = Actor("pcp", specialty="Family medicine").register()
    pcp.user.organisation = "Northside Clinic"
    pcp.user.save(update_fields=["organisation"])
    return pcp


@pytest.fixture
def derm() -> Actor:
    return Actor("derm", specialty="Dermatology").register()


def status(actor: Actor, state: CaseState, to: str):
    return actor.call("POST", f"/api/cases/{state.case_id}/status", {"status": to})


def current(state: CaseState) -> str:
    return Case.objects.get(pk=state.case_id).status


def room(pcp: Actor, derm: Actor) -> CaseState:
    state = pcp.open_case(specialty="Dermatology")
    assert pcp.add(state, derm).status_code == 201
    derm.join(state.case_id)
    Case.objects.filter(pk=state.case_id).update(status="requested")
    CaseStatusChange.objects.all().delete()
    return state


# --- status --------------------------------------------------------------------------


def test_consultant_accepts_and_answers_and_each_change_is_recorded(pcp, derm) -> None:
    state = room(pcp, derm)
    response = status(derm, state, "accepted")
    assert response.status_code == 200, response.content
    assert response.json()["from"] == "requested" and response.json()["by"] == str(derm.user.pk)
    assert status(derm, state, "answered").status_code == 200
    history = list(CaseStatusChange.objects.filter(case_id=state.case_id))
    assert [(h.from_status, h.to_status, h.changed_by_id) for h in history] == [
        ("requested", "accepted", derm.user.pk),
        ("accepted", "answered", derm.user.pk),
    ]
    audited = AuditEvent.objects.filter(action=AuditAction.CASE_STATUS_CHANGED)
    assert [e.details["to"] for e in audited.order_by("seq")] == ["accepted", "answered"]
    detail = pcp.call("GET", f"/api/cases/{state.case_id}").json()
    assert [h["to"] for h in detail["status_history"]] == ["accepted", "answered"]
    assert Notification.objects.filter(user=pcp.user, kind="status_changed").count() == 2
    assert not Notification.objects.filter(user=derm.user, kind="status_changed").exists()


def test_opener_cannot_accept_their_own_request(pcp, derm) -> None:
    state = room(pcp, derm)
    response = status(pcp, state, "accepted")
    assert response.status_code == 403 and response.json()["error"] == "not_consultant"
    assert current(state) == "requested"


def test_non_member_cannot_change_status(pcp, derm) -> None:
    state = pcp.open_case(specialty="Dermatology")
    response = status(derm, state, "accepted")
    assert response.status_code == 403 and response.json()["error"] == "not_member"


@pytest.mark.hostile_input  # sends input the description refuses, on purpose
def test_invalid_transitions_and_values_are_refused(pcp, derm) -> None:
    state = room(pcp, derm)
    assert status(derm, state, "answered").json()["error"] == "bad_transition"
    assert status(derm, state, "requested").json()["error"] == "no_change"
    assert status(derm, state, "lost").json()["error"] == "bad_status"
    assert current(state) == "requested"


def test_only_the_owner_closes_and_reopens(pcp, derm) -> None:
    state = room(pcp, derm)
    denied = status(derm, state, "closed")
    assert denied.status_code == 403 and denied.json()["error"] == "owner_only"
    assert status(pcp, state, "closed").status_code == 200
    assert status(derm, state, "requested").json()["error"] == "owner_only"
    assert status(pcp, state, "answered").json()["error"] == "bad_transition"
    reopened = status(pcp, state, "requested")
    assert reopened.status_code == 200 and reopened.json()["reason"] == "reopened"
    assert current(state) == "requested"
    assert status(pcp, state, "closed").status_code == 200
    assert status(pcp, state, "accepted").status_code == 200


def test_committing_the_claimed_specialist_accepts_the_consult(pcp, derm) -> None:
    state = pcp.open_case(specialty="Dermatology")
    assert derm.call("POST", f"/api/consults/{state.case_id}/claim").status_code == 201
    assert current(state) == "requested"
    assert pcp.add(state, derm).status_code == 201
    assert current(state) == "accepted"
    change = CaseStatusChange.objects.get(case_id=state.case_id)
    assert (change.changed_by_id, change.reason) == (derm.user.pk, "claim_committed")


def test_adding_an_unrequested_member_does_not_accept(pcp, derm) -> None:
    state = pcp.open_case(specialty="Dermatology")
    assert pcp.add(state, derm).status_code == 201  # no claim or invite request pending
    assert current(state) == "requested"


# --- queue and claims ----------------------------------------------------------------


def test_queue_shows_metadata_for_the_specialty_only(pcp, derm) -> None:
    urgent = pcp.open_case(specialty="Dermatology", urgency="urgent")
    routine = pcp.open_case(specialty="Dermatology")
    pcp.open_case(specialty="Cardiology")
    Case.objects.filter(pk=routine.case_id).update(opened_at=timezone.now() - timedelta(hours=2))
    response = derm.call("GET", "/api/consults/queue")
    assert response.status_code == 200
    items = response.json()["consults"]
    assert [i["case"] for i in items] == [str(urgent.case_id), str(routine.case_id)]
    assert set(items[0]) == {
        "case",
        "specialty",
        "urgency",
        "requested_at",
        "age_seconds",
        "requested_by",
    }
    assert items[0]["requested_by"] == {"display_name": "Pcp", "organisation": "Northside Clinic"}
    assert items[1]["age_seconds"] >= 7200
    onc = Actor("onc", specialty="Oncology").register()
    assert onc.call("GET", "/api/consults/queue").json()["consults"] == []


def test_claimed_or_answered_consults_leave_the_queue(pcp, derm) -> None:
    claimed = pcp.open_case(specialty="Dermatology")
    closed = pcp.open_case(specialty="Dermatology")
    status(pcp, closed, "closed")
    other = Actor("derm2", specialty="Dermatology").register()
    assert other.call("POST", f"/api/consults/{claimed.case_id}/claim").status_code == 201
    assert derm.call("GET", "/api/consults/queue").json()["consults"] == []


def test_first_claim_wins_and_later_claims_get_409(pcp, derm) -> None:
    state = pcp.open_case(specialty="Dermatology")
    first = derm.call("POST", f"/api/consults/{state.case_id}/claim")
    assert first.status_code == 201 and first.json()["kind"] == "claim"
    late = Actor("derm2", specialty="Dermatology").register()
    second = late.call("POST", f"/api/consults/{state.case_id}/claim")
    assert second.status_code == 409 and second.json()["error"] == "already_claimed"
    # The older join-request route obeys the same rule.
    third = late.call("POST", f"/api/cases/{state.case_id}/join-requests", {"kind": "claim"})
    assert third.status_code == 409 and third.json()["error"] == "already_claimed"
    assert JoinRequest.objects.filter(case_id=state.case_id).count() == 1
    assert Case.objects.get(pk=state.case_id).claimed_by_id == derm.user.pk
    assert Notification.objects.filter(user=pcp.user, kind="consult_claimed").count() == 1


def test_claim_needs_the_requested_specialty(pcp) -> None:
    state = pcp.open_case(specialty="Dermatology")
    onc = Actor("onc", specialty="Oncology").register()
    response = onc.call("POST", f"/api/consults/{state.case_id}/claim")
    assert response.status_code == 403 and response.json()["error"] == "wrong_specialty"
    assert Case.objects.get(pk=state.case_id).claimed_by_id is None


def test_reopening_as_requested_returns_the_consult_to_the_queue(pcp, derm) -> None:
    state = pcp.open_case(specialty="Dermatology")
    derm.call("POST", f"/api/consults/{state.case_id}/claim")
    status(pcp, state, "closed")
    status(pcp, state, "requested")
    other = Actor("derm2", specialty="Dermatology").register()
    queue = other.call("GET", "/api/consults/queue").json()["consults"]
    assert [i["case"] for i in queue] == [str(state.case_id)]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_claims_one_wins(pcp) -> None:
    state = pcp.open_case(specialty="Dermatology")
    claimers = [Actor(f"derm{i}", specialty="Dermatology").register() for i in range(4)]
    barrier = threading.Barrier(len(claimers))
    codes: list[int] = []

    def claim(actor: Actor) -> None:
        try:
            barrier.wait()
            codes.append(actor.call("POST", f"/api/consults/{state.case_id}/claim").status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=claim, args=(a,)) for a in claimers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [201, 409, 409, 409]
    assert JoinRequest.objects.filter(case_id=state.case_id).count() == 1


# --- direct consults -----------------------------------------------------------------


def test_direct_consult_picks_a_colleague_from_the_directory(pcp, derm) -> None:
    derm.user.organisation = "City Hospital"
    derm.user.save(update_fields=["organisation"])
    found = pcp.call("GET", "/api/directory?q=derm").json()["users"]
    assert found == [
        {
            "id": str(derm.user.pk),
            "display_name": "Derm",
            "specialty": "Dermatology",
            "organisation": "City Hospital",
        }
    ]
    state = pcp.open_case(specialty="")
    path = f"/api/cases/{state.case_id}/join-requests"
    assert pcp.call("POST", path, {"kind": "invite", "user": found[0]["id"]}).status_code == 201
    assert Notification.objects.filter(user=derm.user, kind="join_request").count() == 1
    assert pcp.add(state, derm).status_code == 201
    assert current(state) == "accepted"


# --- urgent messages -----------------------------------------------------------------


def send(actor: Actor, state: CaseState, text: str, urgent: bool) -> int:
    envelope = actor.cases[state.case_id].seal({"text": text})
    return message_send(
        user=actor.user,
        device_id=actor.device.device_id,
        case_id=state.case_id,
        envelope=envelope,
        urgent=urgent,
    ).seq


def test_urgent_message_is_flagged_counted_and_acknowledged_once(pcp, derm) -> None:
    state = room(pcp, derm)
    seq = send(pcp, state, "call me", urgent=True)
    send(pcp, state, "fyi", urgent=False)
    assert Message.objects.get(seq=seq).urgent
    assert Notification.objects.filter(user=derm.user, kind="urgent_message").count() == 1

    def counts(actor: Actor) -> int:
        (case,) = actor.call("GET", "/api/cases").json()["cases"]
        return int(case["unacknowledged_urgent"])

    assert (counts(derm), counts(pcp)) == (1, 0)
    pending = pcp.call("GET", f"/api/cases/{state.case_id}/urgent").json()
    assert pending["unacknowledged_by_member"] == {str(derm.user.pk): [seq]}
    first = urgent_ack(user=derm.user, case_id=state.case_id, seq=seq)
    again = urgent_ack(user=derm.user, case_id=state.case_id, seq=seq)
    assert (first.duplicate, again.duplicate, again.at) == (False, True, first.at)
    assert UrgentAck.objects.count() == 1
    assert counts(derm) == 0
    after = pcp.call("GET", f"/api/cases/{state.case_id}/urgent").json()
    assert after["unacknowledged_by_member"] == {}
    assert after["messages"][0]["acknowledged"][0]["user"] == str(derm.user.pk)


def test_acknowledging_a_non_urgent_message_is_refused(pcp, derm) -> None:
    state = room(pcp, derm)
    seq = send(pcp, state, "fyi", urgent=False)
    with pytest.raises(ServiceError) as error:
        urgent_ack(user=derm.user, case_id=state.case_id, seq=seq)
    assert error.value.code == "not_urgent"
    assert not UrgentAck.objects.exists()


def test_non_member_cannot_acknowledge_or_list_urgent(pcp, derm) -> None:
    state = room(pcp, derm)
    seq = send(pcp, state, "call me", urgent=True)
    outsider = Actor("outsider").register()
    with pytest.raises(ServiceError) as error:
        urgent_ack(user=outsider.user, case_id=state.case_id, seq=seq)
    assert error.value.code == "not_member"
    assert outsider.call("GET", f"/api/cases/{state.case_id}/urgent").status_code == 403
    assert not UrgentAck.objects.exists()


# --- notifications -------------------------------------------------------------------


def test_notifications_carry_only_kind_and_case_and_are_marked_read(pcp, derm) -> None:
    state = pcp.open_case(specialty="Dermatology")
    derm.call("POST", f"/api/consults/{state.case_id}/claim")
    (notice,) = pcp.call("GET", "/api/notifications").json()["notifications"]
    assert set(notice) == {"id", "kind", "case", "created_at", "read"}
    assert (notice["kind"], notice["case"], notice["read"]) == (
        "consult_claimed",
        str(state.case_id),
        False,
    )
    assert derm.call("POST", f"/api/notifications/{notice['id']}/read").status_code == 404
    assert pcp.call("POST", f"/api/notifications/{notice['id']}/read").status_code == 200
    assert pcp.call("GET", "/api/notifications?unread=1").json()["notifications"] == []
    assert derm.call("GET", "/api/notifications").json()["notifications"] == []


# --- the socket: urgent flag, ack_urgent, status and notify frames --------------------


async def _socket(actor: Actor, state: CaseState) -> WebsocketCommunicator:
    headers = [
        (b"origin", b"http://127.0.0.1"),
        (b"host", b"127.0.0.1"),
        (b"cookie", session_cookie(actor.client).encode()),
    ]
    path = room_path(state.case_id, actor.device.device_id)
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    await answer_challenge(communicator, state.case_id, actor.device.device_id)
    assert (await communicator.receive_json_from())["type"] == "hello"
    return communicator


_held: dict[int, list[dict[str, Any]]] = {}


async def _next(communicator: WebsocketCommunicator, kind: str) -> dict[str, Any]:
    """The next frame of ``kind``; frames of other kinds are kept for later calls."""
    held = _held.setdefault(id(communicator), [])
    for kept in held:
        if kept["type"] == kind:
            held.remove(kept)
            return kept
    while True:
        frame: dict[str, Any] = await communicator.receive_json_from(timeout=5)
        if frame["type"] == kind:
            return frame
        held.append(frame)


@pytest.mark.django_db(transaction=True)
@pytest.mark.hostile_input  # urgent: "yes" on purpose
async def test_socket_urgent_send_ack_and_status_frames() -> None:
    pcp = await sync_to_async(lambda: Actor("pcp").register())()
    derm = await sync_to_async(lambda: Actor("derm", specialty="Dermatology").register())()
    state = await sync_to_async(room)(pcp, derm)
    pcp_ws = await _socket(pcp, state)
    derm_ws = await _socket(derm, state)
    envelope = await sync_to_async(lambda: pcp.cases[state.case_id].seal({"text": "now"}))()
    await pcp_ws.send_json_to({"type": "send", "envelope": envelope.to_wire(), "urgent": True})
    ack = await _next(pcp_ws, "ack")
    message = await _next(derm_ws, "message")
    assert message["urgent"] is True and message["seq"] == ack["seq"]
    notify = await _next(derm_ws, "notify")
    assert set(notify) == {"type", "id", "kind", "case"}
    assert (notify["kind"], notify["case"]) == ("urgent_message", str(state.case_id))
    await derm_ws.send_json_to({"type": "ack_urgent", "seq": ack["seq"], "ref": "a1"})
    mine = await _next(derm_ws, "urgent_ack")
    assert (mine["ref"], mine["user"], mine["duplicate"]) == ("a1", str(derm.user.pk), False)
    theirs = await _next(pcp_ws, "urgent_ack")
    assert (theirs["seq"], theirs["user"], theirs["at"]) == (ack["seq"], mine["user"], mine["at"])
    await derm_ws.send_json_to({"type": "ack_urgent", "seq": ack["seq"]})
    assert (await _next(derm_ws, "urgent_ack"))["duplicate"] is True
    plain = await sync_to_async(lambda: pcp.cases[state.case_id].seal({"text": "fyi"}))()
    await pcp_ws.send_json_to({"type": "send", "envelope": plain.to_wire()})
    plain_ack = await _next(pcp_ws, "ack")
    await derm_ws.send_json_to({"type": "ack_urgent", "seq": plain_ack["seq"]})
    assert (await _next(derm_ws, "error"))["code"] == "not_urgent"
    await pcp_ws.send_json_to({"type": "send", "envelope": plain.to_wire(), "urgent": "yes"})
    assert (await _next(pcp_ws, "error"))["code"] == "bad_field"
    await sync_to_async(status)(derm, state, "accepted")
    frame = await _next(pcp_ws, "status")
    assert (frame["status"], frame["from"], frame["by"]) == (
        "accepted",
        "requested",
        str(derm.user.pk),
    )
    await pcp_ws.disconnect()
    await derm_ws.disconnect()
    await sync_to_async(connections.close_all)()  # the consumers' thread keeps connections
