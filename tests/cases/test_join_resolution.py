"""Join requests resolved without a log entry: declined by a manager, withdrawn by the
requester; who may do which, what is audited, notified and rung, and the listings."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from channels.db import database_sync_to_async as sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connection
from django.test import Client

from collab.asgi import application
from collab.audit.models import AuditAction, AuditEvent
from collab.cases.models import Case, JoinRequest, Notification
from collab.client.case_state import CaseState
from collab.crypto.roster import Role
from tests.cases.patients import invited_patient
from tests.support.actor import Actor
from tests.support.users import session_cookie
from tests.support.ws import answer_challenge, room_path

pytestmark = pytest.mark.django_db


@pytest.fixture
def pcp() -> Actor:
    return Actor("pcp", specialty="Family medicine").register()


@pytest.fixture
def derm() -> Actor:
    actor = Actor("derm", specialty="Dermatology").register()
    actor.user.organisation = "Skin Institute"
    actor.user.save(update_fields=["organisation"])
    return actor


def claim(actor: Actor, state: CaseState) -> int:
    response = actor.call("POST", f"/api/consults/{state.case_id}/claim")
    assert response.status_code == 201, response.content
    return int(response.json()["id"])


def name(manager: Actor, state: CaseState, colleague: Actor) -> int:
    response = manager.call(
        "POST",
        f"/api/cases/{state.case_id}/join-requests",
        {"kind": "invite", "user": str(colleague.user.pk)},
    )
    assert response.status_code == 201, response.content
    return int(response.json()["id"])


def decline(actor: Actor, join_id: int, body: dict[str, Any] | None = None) -> Any:
    return actor.call("POST", f"/api/join-requests/{join_id}/decline", body or {})


def withdraw(actor: Actor, join_id: int) -> Any:
    return actor.call("POST", f"/api/join-requests/{join_id}/withdraw", {})


def events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("seq"))


def notified(actor: Actor, kind: str) -> bool:
    return Notification.objects.filter(user=actor.user, kind=kind).exists()


# --- decline --------------------------------------------------------------------------


def test_owner_declines_a_claim_and_the_consult_returns_to_the_queue(pcp, derm) -> None:
    state = pcp.open_case(specialty="Dermatology")
    join_id = claim(derm, state)
    assert Case.objects.get(pk=state.case_id).claimed_by_id == derm.user.pk
    response = decline(pcp, join_id, {"reason": "wrong patient"})
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["id"], body["status"], body["user"], body["kind"]) == (
        join_id,
        "declined",
        str(derm.user.pk),
        "claim",
    )
    join = JoinRequest.objects.get(pk=join_id)
    assert (join.status, join.resolved_by_id) == ("declined", pcp.user.pk)
    assert join.resolved_at is not None
    assert Case.objects.get(pk=state.case_id).claimed_by_id is None
    queue = derm.call("GET", "/api/consults/queue").json()["consults"]
    assert [c["case"] for c in queue] == [str(state.case_id)]
    (event,) = events(AuditAction.JOIN_DECLINED)
    assert (event.actor_id, event.case_id, event.target) == (
        pcp.user.pk,
        state.case_id,
        f"user:{derm.user.pk}",
    )
    assert event.details == {"kind": "claim", "reason_length": 13}
    assert notified(derm, "join_declined")
    # A fresh claim is possible after a decline.
    assert claim(derm, state) != join_id


def test_case_admin_declines_a_named_invite(pcp, derm) -> None:
    admin = Actor("adm", specialty="Family medicine").register()
    state = pcp.open_case()
    assert pcp.add(state, admin, role=Role.ADMIN).status_code == 201
    join_id = name(pcp, state, derm)
    assert decline(admin, join_id).status_code == 200
    assert JoinRequest.objects.get(pk=join_id).status == "declined"
    assert events(AuditAction.JOIN_DECLINED)[0].details == {"kind": "invite", "reason_length": 0}


def test_plain_member_cannot_decline(pcp, derm) -> None:
    member = Actor("onc", specialty="Dermatology").register()
    state = pcp.open_case(specialty="Dermatology")
    assert pcp.add(state, member).status_code == 201  # role member
    join_id = claim(derm, state)
    response = decline(member, join_id)
    assert response.status_code == 403 and response.json()["error"] == "not_manager"
    assert JoinRequest.objects.get(pk=join_id).status == "pending"
    assert Case.objects.get(pk=state.case_id).claimed_by_id == derm.user.pk
    assert not events(AuditAction.JOIN_DECLINED)
    assert not notified(derm, "join_declined")


def test_outsider_and_the_requester_cannot_decline(pcp, derm) -> None:
    state = pcp.open_case(specialty="Dermatology")
    join_id = claim(derm, state)
    outsider = Actor("out").register()
    for actor in (outsider, derm):
        response = decline(actor, join_id)
        assert response.status_code == 403 and response.json()["error"] == "not_manager"
    assert JoinRequest.objects.get(pk=join_id).status == "pending"
    assert not events(AuditAction.JOIN_DECLINED)


def test_only_a_pending_request_is_declined(pcp, derm) -> None:
    state = pcp.open_case(specialty="Dermatology")
    join_id = claim(derm, state)
    assert decline(pcp, join_id).status_code == 200
    again = decline(pcp, join_id)
    assert again.status_code == 409
    assert (again.json()["error"], again.json()["status"]) == ("not_pending", "declined")
    assert withdraw(derm, join_id).json()["error"] == "not_pending"
    # A committed request is not pending either.
    onc = Actor("onc", specialty="Dermatology").register()
    named = name(pcp, state, onc)
    assert pcp.add(state, onc).status_code == 201
    committed = decline(pcp, named)
    assert (committed.status_code, committed.json()["status"]) == (409, "committed")
    assert len(events(AuditAction.JOIN_DECLINED)) == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_decline_and_withdraw_resolve_once() -> None:
    pcp = Actor("pcp").register()
    derm = Actor("derm", specialty="Dermatology").register()
    state = pcp.open_case(specialty="Dermatology")
    join_id = claim(derm, state)
    barrier = threading.Barrier(2)
    results: dict[str, int] = {}

    def run(label: str, act: Any) -> None:
        try:
            barrier.wait()
            results[label] = act().status_code
        finally:
            connection.close()

    threads = [
        threading.Thread(target=run, args=("decline", lambda: decline(pcp, join_id))),
        threading.Thread(target=run, args=("withdraw", lambda: withdraw(derm, join_id))),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results.values()) == [200, 409]
    status = JoinRequest.objects.get(pk=join_id).status
    assert status == ("declined" if results["decline"] == 200 else "withdrawn")
    assert len(events(AuditAction.JOIN_DECLINED)) + len(events(AuditAction.JOIN_WITHDRAWN)) == 1


def test_unknown_join_request_is_404(pcp) -> None:
    response = decline(pcp, 999999)
    assert response.status_code == 404 and response.json()["error"] == "no_join_request"
    assert withdraw(pcp, 999999).status_code == 404


@pytest.mark.hostile_input  # sends input the description refuses, on purpose
def test_decline_reason_is_bounded_and_never_stored(pcp, derm) -> None:
    state = pcp.open_case(specialty="Dermatology")
    join_id = claim(derm, state)
    assert decline(pcp, join_id, {"reason": "x" * 501}).json()["error"] == "bad_field"
    assert decline(pcp, join_id, {"reason": 5}).json()["error"] == "bad_field"
    assert JoinRequest.objects.get(pk=join_id).status == "pending"
    secret = "patient Jane Doe is not mine"
    assert decline(pcp, join_id, {"reason": secret}).status_code == 200
    (event,) = events(AuditAction.JOIN_DECLINED)
    assert secret not in str(event.details) and event.details["reason_length"] == len(secret)


def test_declined_patient_cannot_be_added(pcp) -> None:
    state = pcp.open_case()
    patient = invited_patient(pcp, state)
    join = JoinRequest.objects.get(user=patient.user)
    assert decline(pcp, join.pk).status_code == 200
    assert notified(patient, "join_declined")
    response = pcp.add(state, patient, role=Role.PATIENT)
    assert response.status_code == 403 and response.json()["error"] == "no_invitation"


# --- withdraw -------------------------------------------------------------------------


def test_claimant_withdraws_and_the_managers_are_told(pcp, derm) -> None:
    state = pcp.open_case(specialty="Dermatology")
    join_id = claim(derm, state)
    response = withdraw(derm, join_id)
    assert response.status_code == 200 and response.json()["status"] == "withdrawn"
    join = JoinRequest.objects.get(pk=join_id)
    assert (join.status, join.resolved_by_id) == ("withdrawn", derm.user.pk)
    assert Case.objects.get(pk=state.case_id).claimed_by_id is None
    (event,) = events(AuditAction.JOIN_WITHDRAWN)
    assert (event.actor_id, event.target, event.details) == (
        derm.user.pk,
        f"user:{derm.user.pk}",
        {"kind": "claim"},
    )
    assert notified(pcp, "join_withdrawn")
    assert not notified(derm, "join_withdrawn")


def test_the_manager_who_named_a_colleague_withdraws_and_the_colleague_is_told(
    pcp, derm
) -> None:
    state = pcp.open_case()
    join_id = name(pcp, state, derm)
    assert withdraw(pcp, join_id).status_code == 200
    assert JoinRequest.objects.get(pk=join_id).status == "withdrawn"
    assert notified(derm, "join_withdrawn")
    assert not notified(pcp, "join_withdrawn")


def test_named_colleague_withdraws(pcp, derm) -> None:
    state = pcp.open_case()
    join_id = name(pcp, state, derm)
    assert withdraw(derm, join_id).status_code == 200
    assert notified(pcp, "join_withdrawn")


def test_outsider_and_other_members_cannot_withdraw(pcp, derm) -> None:
    admin = Actor("adm").register()
    state = pcp.open_case(specialty="Dermatology")
    assert pcp.add(state, admin, role=Role.ADMIN).status_code == 201
    join_id = claim(derm, state)
    outsider = Actor("out").register()
    # Not even a manager withdraws someone else's claim (that is a decline).
    for actor in (outsider, admin, pcp):
        response = withdraw(actor, join_id)
        assert response.status_code == 403 and response.json()["error"] == "not_requester"
    assert JoinRequest.objects.get(pk=join_id).status == "pending"
    assert not events(AuditAction.JOIN_WITHDRAWN)


def test_patient_withdraws_their_own_request(pcp) -> None:
    state = pcp.open_case()
    patient = invited_patient(pcp, state)
    join = JoinRequest.objects.get(user=patient.user)
    other = invited_patient(pcp, pcp.open_case(), username="pat2")
    assert withdraw(other, join.pk).status_code == 403
    assert withdraw(patient, join.pk).status_code == 200
    assert JoinRequest.objects.get(pk=join.pk).status == "withdrawn"
    assert notified(pcp, "join_withdrawn")


# --- listings -------------------------------------------------------------------------


def test_my_join_requests_lists_what_i_asked_for_or_filed(pcp, derm) -> None:
    state = pcp.open_case(specialty="Dermatology")
    join_id = claim(derm, state)
    onc = Actor("onc").register()
    named = name(pcp, state, onc)
    mine = derm.call("GET", "/api/join-requests").json()["join_requests"]
    assert [set(r) for r in mine] == [{"id", "case", "user", "kind", "status", "created_at"}]
    assert (mine[0]["id"], mine[0]["case"], mine[0]["status"]) == (
        join_id,
        str(state.case_id),
        "pending",
    )
    assert [r["id"] for r in pcp.call("GET", "/api/join-requests").json()["join_requests"]] == [
        named
    ]
    assert [r["id"] for r in onc.call("GET", "/api/join-requests").json()["join_requests"]] == [
        named
    ]
    assert Actor("out").register().call("GET", "/api/join-requests").json()["join_requests"] == []
    decline(pcp, join_id)
    assert derm.call("GET", "/api/join-requests").json()["join_requests"] == []


def test_join_request_listings_say_who_is_asking(pcp, derm) -> None:
    state = pcp.open_case(specialty="Dermatology")
    join_id = claim(derm, state)
    patient = invited_patient(pcp, state)
    for path in (f"/api/cases/{state.case_id}", f"/api/cases/{state.case_id}/join-requests"):
        listed = {r["user"]: r for r in pcp.call("GET", path).json()["join_requests"]}
        entry = listed[str(derm.user.pk)]
        assert entry == {
            "id": join_id,
            "user": str(derm.user.pk),
            "kind": "claim",
            "requested_by": str(derm.user.pk),
            "created_at": entry["created_at"],
            "display_name": "Derm",
            "role": "provider",
            "organisation": "Skin Institute",
            "specialty": "Dermatology",
            "invitation": None,
        }
        theirs = listed[str(patient.user.pk)]
        assert (theirs["kind"], theirs["role"], theirs["requested_by"]) == (
            "patient",
            "patient",
            str(pcp.user.pk),
        )
        invitation = theirs["invitation"]
        assert set(invitation) == {
            "id",
            "created_by",
            "inviter_device",
            "invite_pub",
            "invite_sig",
            "created_ms",
            "proof_sig",
        }
        assert invitation["created_by"] == str(pcp.user.pk)
        assert invitation["invite_pub"] is None and invitation["proof_sig"] is None


# --- the socket -----------------------------------------------------------------------


async def _room_socket(actor: Actor, state: CaseState) -> WebsocketCommunicator:
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


async def _next(communicator: WebsocketCommunicator, kind: str) -> dict[str, Any]:
    while True:
        frame: dict[str, Any] = await communicator.receive_json_from(timeout=5)
        if frame["type"] == kind:
            return frame


@pytest.mark.django_db(transaction=True)
async def test_open_rooms_hear_join_resolved() -> None:
    pcp = await sync_to_async(lambda: Actor("pcp").register())()
    derm = await sync_to_async(lambda: Actor("derm", specialty="Dermatology").register())()
    state = await sync_to_async(pcp.open_case)("Dermatology")
    room = await _room_socket(pcp, state)
    join_id = await sync_to_async(claim)(derm, state)
    assert (await _next(room, "join_request"))["user"] == str(derm.user.pk)
    response = await sync_to_async(decline)(pcp, join_id)
    assert response.status_code == 200
    frame = await _next(room, "join_resolved")
    assert frame == {
        "type": "join_resolved",
        "user": str(derm.user.pk),
        "kind": "claim",
        "status": "declined",
    }
    again = await sync_to_async(claim)(derm, state)
    await sync_to_async(withdraw)(derm, again)
    frame = await _next(room, "join_resolved")
    assert (frame["status"], frame["user"]) == ("withdrawn", str(derm.user.pk))
    await room.disconnect()


def test_patient_member_cannot_decline(pcp, derm) -> None:
    state = pcp.open_case(specialty="Dermatology")
    patient = invited_patient(pcp, state)
    assert pcp.add(state, patient, role=Role.PATIENT).status_code == 201
    join_id = claim(derm, state)
    response = decline(patient, join_id)
    assert response.status_code == 403 and response.json()["error"] == "not_manager"
    assert JoinRequest.objects.get(pk=join_id).status == "pending"


# --- every new route, without a session or without the second factor ---------------------

NEW_ROUTES = [
    ("GET", "/api/join-requests"),
    ("POST", "/api/join-requests/1/decline"),
    ("POST", "/api/join-requests/1/withdraw"),
    ("GET", "/api/invitations/mine"),
    ("POST", "/api/invitations/00000000-0000-4000-8000-000000000000/proof"),
    ("GET", "/api/identity/pins"),
    ("PUT", "/api/identity/pins"),
]


def _send(client: Any, method: str, path: str) -> Any:
    if method == "GET":
        return client.get(path)
    return getattr(client, method.lower())(path, data="{}", content_type="application/json")


@pytest.mark.hostile_input  # sends input the description refuses, on purpose
@pytest.mark.parametrize(("method", "path"), NEW_ROUTES)
def test_new_routes_refuse_without_a_full_sign_in(method: str, path: str) -> None:
    assert _send(Client(), method, path).status_code == 401
    provider = Actor("half", specialty="Dermatology")
    half = Client()
    half.force_login(provider.user, backend="django.contrib.auth.backends.ModelBackend")
    response = _send(half, method, path)
    assert response.status_code == 403
    assert response.json()["error"] == "second_factor_required"
