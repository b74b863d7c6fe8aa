"""What a patient in their own case room may and may not do, each enforced by the server."""

from __future__ import annotations

import uuid

import pytest

from collab.cases.models import Case, Invitation, LeaveRequest, Member
from collab.client.case_state import CaseState
from collab.crypto.actions import AddUserBody, RemoveUserBody, sign_leave
from collab.crypto.actions import LeaveRequest as SignedLeave
from collab.crypto.roster import Role
from collab.crypto.wire import b64e
from tests.cases.patients import invited_patient
from tests.support.actor import Actor

pytestmark = pytest.mark.django_db


@pytest.fixture
def room() -> tuple[Actor, Actor, CaseState]:
    pcp = Actor("pcp", specialty="Family medicine").register()
    state = pcp.open_case(specialty="Dermatology")
    patient = invited_patient(pcp, state)
    assert pcp.add(state, patient, Role.PATIENT).status_code == 201
    patient.join(state.case_id)
    return pcp, patient, state


def test_patient_cannot_create_or_revoke_invitations(room) -> None:
    pcp, patient, state = room
    response = patient.call("POST", f"/api/cases/{state.case_id}/invitations")
    assert response.status_code == 403
    assert response.json()["error"] == "providers_only"
    assert pcp.call("POST", f"/api/cases/{state.case_id}/invitations").status_code == 201
    pending = Invitation.objects.get(used_at__isnull=True)
    refused = patient.call("POST", f"/api/invitations/{pending.pk}/revoke")
    assert refused.status_code == 403


def test_patient_cannot_add_anyone(room) -> None:
    _, patient, state = room
    friend = Actor("friend").register()
    # Even with the friend's keys in hand (the directory refuses them), the entry is refused.
    body = AddUserBody(friend.user.pk, Role.MEMBER, friend.identity.uik_pub, (friend.cert,))
    response = patient.submit(patient.cases[state.case_id], body, forged=True)
    assert response.status_code == 403
    assert response.json()["error"] == "unauthorized_author"
    assert not Member.objects.filter(user=friend.user).exists()


def test_patient_sees_no_provider_keys_or_directory(room) -> None:
    pcp, patient, _ = room
    response = patient.call("GET", f"/api/users/{pcp.user.pk}/keys")
    assert response.status_code == 403 and response.json()["error"] == "patients_no_directory"
    assert patient.call("GET", f"/api/users/{patient.user.pk}/keys").status_code == 200
    directory = patient.call("GET", "/api/directory?q=pcp")
    assert directory.status_code == 403
    assert directory.json()["error"] == "patients_no_directory"
    colleague = Actor("colleague", specialty="Dermatology").register()
    found = colleague.call("GET", "/api/directory?q=pcp")
    assert found.status_code == 200
    assert [u["display_name"] for u in found.json()["users"]] == ["Pcp"]


def test_patient_cannot_see_the_consult_queue(room) -> None:
    _, patient, _ = room
    response = patient.call("GET", "/api/consults/queue")
    assert response.status_code == 403 and response.json()["error"] == "providers_only"
    derm = Actor("derm", specialty="Dermatology").register()
    assert derm.call("GET", "/api/consults/queue").status_code == 200


def test_patient_cannot_claim_or_change_status(room) -> None:
    _, patient, state = room
    claim = patient.call("POST", f"/api/consults/{state.case_id}/claim")
    assert claim.status_code == 403
    status = patient.call("POST", f"/api/cases/{state.case_id}/status", {"status": "closed"})
    assert status.status_code == 403 and status.json()["error"] == "owner_only"
    accept = patient.call("POST", f"/api/cases/{state.case_id}/status", {"status": "accepted"})
    assert accept.status_code == 403 and accept.json()["error"] == "not_consultant"


def test_patient_cannot_open_cases(room) -> None:
    _, patient, _ = room
    state = CaseState(uuid.uuid4(), patient.device)
    genesis = state.genesis(patient.cert, patient.identity.uik_pub)
    response = patient.call("POST", "/api/cases", {"genesis": b64e(genesis.encode())})
    assert response.status_code == 403 and response.json()["error"] == "providers_only"
    assert Case.objects.count() == 1


def test_patient_cannot_read_other_cases(room) -> None:
    pcp, patient, state = room
    other = pcp.open_case()
    for path in ("", "/log", "/messages", "/join-requests", "/urgent", "/invitations"):
        response = patient.call("GET", f"/api/cases/{other.case_id}{path}")
        assert response.status_code == 403, path
        assert response.json()["error"] == "not_member"
    assert patient.call("GET", f"/api/cases/{state.case_id}").status_code == 200
    listed = patient.call("GET", "/api/cases").json()["cases"]
    assert [c["id"] for c in listed] == [str(state.case_id)]


def test_patient_sees_who_accessed_their_case(room) -> None:
    pcp, patient, state = room
    response = patient.call("GET", f"/api/cases/{state.case_id}/access-log")
    assert response.status_code == 200
    actions = {e["action"] for e in response.json()["entries"]}
    assert "case_opened" in actions
    other = pcp.open_case()
    assert patient.call("GET", f"/api/cases/{other.case_id}/access-log").status_code == 403


def _leave(patient: Actor, state: CaseState) -> SignedLeave:
    epoch = patient.cases[state.case_id].head.epoch
    return sign_leave(
        patient.device.dsk_seed, state.case_id, patient.user.pk, patient.device.device_id, epoch
    )


def test_patient_leaves_by_a_signed_request_a_member_commits(room) -> None:
    pcp, patient, state = room
    leave = _leave(patient, state)
    response = patient.call(
        "POST",
        f"/api/cases/{state.case_id}/leave",
        {
            "device": str(leave.device_id),
            "epoch": leave.epoch,
            "signature": b64e(leave.signature),
        },
    )
    assert response.status_code == 201, response.content
    detail = pcp.call("GET", f"/api/cases/{state.case_id}").json()
    (listed,) = detail["leave_requests"]
    assert listed["user"] == str(patient.user.pk) and listed["epoch"] == leave.epoch
    pcp.sync(state)
    committed = pcp.submit(state, RemoveUserBody(patient.user.pk, leave))
    assert committed.status_code == 201, committed.content
    assert LeaveRequest.objects.get().status == "committed"
    assert not Member.objects.filter(user=patient.user).exists()
    assert patient.call("GET", f"/api/cases/{state.case_id}/access-log").status_code == 403


def test_leave_request_with_a_bad_signature_or_foreign_device_is_refused(room) -> None:
    pcp, patient, state = room
    leave = _leave(patient, state)
    path = f"/api/cases/{state.case_id}/leave"
    bad = patient.call(
        "POST",
        path,
        {"device": str(leave.device_id), "epoch": leave.epoch, "signature": b64e(bytes(64))},
    )
    assert bad.status_code == 400
    foreign = patient.call(
        "POST",
        path,
        {
            "device": str(pcp.device.device_id),
            "epoch": leave.epoch,
            "signature": b64e(leave.signature),
        },
    )
    assert foreign.status_code == 403 and foreign.json()["error"] == "not_in_roster"
    outsider = Actor("outsider").register()
    response = outsider.call(
        "POST",
        path,
        {"device": str(leave.device_id), "epoch": leave.epoch, "signature": b64e(leave.signature)},
    )
    assert response.status_code == 403 and response.json()["error"] == "not_member"
    assert not LeaveRequest.objects.exists()
