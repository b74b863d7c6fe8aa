"""Patient invitations bound by the link: the inviter device's signed statement over the
invite key, and the patient's proof with it; who may post what, what is stored, audited
and listed."""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest
from channels.db import database_sync_to_async as sync_to_async
from channels.testing import WebsocketCommunicator
from django.utils import timezone

from collab.accounts.models import User
from collab.asgi import application
from collab.audit.models import AuditAction, AuditEvent
from collab.cases.models import Invitation, JoinRequest
from collab.client.case_state import CaseState
from collab.crypto import invite as inv
from collab.crypto.roster import Role
from collab.crypto.wire import b64d, b64e
from tests.cases.patients import patient_actor, sign_up
from tests.support.actor import Actor
from tests.support.users import session_cookie
from tests.support.ws import answer_challenge, room_path

pytestmark = pytest.mark.django_db

CREATED_MS = 1_764_000_000_000


@pytest.fixture
def pcp() -> Actor:
    return Actor("pcp", specialty="Family medicine").register()


def binding(
    provider: Actor, state: CaseState, secret: bytes, **override: Any
) -> dict[str, Any]:
    _, invite_pub = inv.invite_keypair(secret)
    sig = inv.sign_invitation(
        provider.device.dsk_seed,
        state.case_id,
        provider.user.pk,
        provider.device.device_id,
        invite_pub,
        CREATED_MS,
    )
    body = {
        "invite_pub": b64e(invite_pub),
        "invite_sig": b64e(sig),
        "inviter_device": str(provider.device.device_id),
        "created_ms": CREATED_MS,
    }
    return {**body, **override}


def create(provider: Actor, state: CaseState, body: dict[str, Any]) -> Any:
    return provider.call("POST", f"/api/cases/{state.case_id}/invitations", body)


def bound_patient(
    provider: Actor, state: CaseState, username: str = "pat"
) -> tuple[Actor, bytes, Invitation]:
    """A patient who accepted a bound invitation and registered keys; and the secret."""
    secret = os.urandom(32)
    response = create(provider, state, binding(provider, state, secret))
    assert response.status_code == 201, response.content
    token = str(response.json()["link"]).rstrip("/").rsplit("/", 1)[1]
    browser, page = sign_up(token, username)
    assert page.status_code == 302
    patient = patient_actor(User.objects.get(username=username), browser)
    return patient, secret, Invitation.objects.get(pk=response.json()["id"])


def proof_for(patient: Actor, state: CaseState, secret: bytes, uik: bytes | None = None) -> str:
    seed, invite_pub = inv.invite_keypair(secret)
    return b64e(
        inv.sign_invite_proof(
            seed, state.case_id, invite_pub, patient.user.pk, uik or patient.identity.uik_pub
        )
    )


def post_proof(actor: Actor, invitation: Invitation, proof_sig: str) -> Any:
    return actor.call("POST", f"/api/invitations/{invitation.pk}/proof", {"proof_sig": proof_sig})


def raw(value: bytes | memoryview | None) -> bytes:
    assert value is not None
    return bytes(value)


def events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("seq"))


# --- the inviter's statement ------------------------------------------------------------


def test_bound_invitation_is_verified_stored_and_listed(pcp: Actor) -> None:
    state = pcp.open_case()
    secret = os.urandom(32)
    body = binding(pcp, state, secret)
    response = create(pcp, state, body)
    assert response.status_code == 201, response.content
    assert response.json()["invite_pub"] == body["invite_pub"]
    assert "#" not in response.json()["link"]  # the fragment is the client's to add
    invitation = Invitation.objects.get()
    assert (
        raw(invitation.invite_pub),
        raw(invitation.invite_sig),
        invitation.inviter_device_id,
        invitation.created_ms,
        invitation.proof_sig,
    ) == (
        b64d(body["invite_pub"]),
        b64d(body["invite_sig"]),
        pcp.device.device_id,
        CREATED_MS,
        None,
    )
    assert events(AuditAction.INVITATION_CREATED)[0].details["bound"] is True
    listed = pcp.call("GET", f"/api/cases/{state.case_id}/invitations").json()["invitations"]
    assert (listed[0]["invite_pub"], listed[0]["proof"]) == (body["invite_pub"], False)


def test_unbound_invitation_still_works(pcp: Actor) -> None:
    state = pcp.open_case()
    assert create(pcp, state, {}).status_code == 201
    invitation = Invitation.objects.get()
    assert invitation.invite_pub is None and invitation.inviter_device_id is None
    assert events(AuditAction.INVITATION_CREATED)[0].details["bound"] is False


def test_statement_from_another_users_device_is_refused(pcp: Actor) -> None:
    other = Actor("other").register()
    state = pcp.open_case()
    assert pcp.add(state, other).status_code == 201
    # other's device signs correctly, but pcp is the one asking.
    body = binding(other, state, os.urandom(32))
    response = create(pcp, state, body)
    assert response.status_code == 400 and response.json()["error"] == "unregistered_device"
    unknown = binding(pcp, state, os.urandom(32), inviter_device=str(uuid.uuid4()))
    assert create(pcp, state, unknown).json()["error"] == "unregistered_device"
    assert not Invitation.objects.exists()
    assert not events(AuditAction.INVITATION_CREATED)


def test_statement_from_a_revoked_device_is_refused(pcp: Actor) -> None:
    state = pcp.open_case()
    body = binding(pcp, state, os.urandom(32))
    pcp.user.devices.update(revoked_at=timezone.now())
    response = create(pcp, state, body)
    # The request itself acts as that device: refused as revoked before the statement.
    assert (response.status_code, response.json()["error"]) == (403, "device_revoked")
    assert not Invitation.objects.exists()


def test_bad_statement_signature_is_refused_and_nothing_stored(pcp: Actor) -> None:
    state = pcp.open_case()
    other_case = pcp.open_case()
    # Signed for another case, and signed over another created_ms.
    for body in (
        binding(pcp, other_case, os.urandom(32)),
        binding(pcp, state, os.urandom(32), created_ms=CREATED_MS + 1),
        binding(pcp, state, os.urandom(32), invite_sig=b64e(bytes(64))),
    ):
        response = create(pcp, state, body)
        assert response.status_code == 400
        assert response.json()["error"] in {"bad_signature", "non_canonical_signature"}
    assert not Invitation.objects.exists()
    assert not events(AuditAction.INVITATION_CREATED)


@pytest.mark.hostile_input  # sends input the description refuses, on purpose
def test_partial_or_malformed_binding_is_refused(pcp: Actor) -> None:
    state = pcp.open_case()
    full = binding(pcp, state, os.urandom(32))
    partial = {k: v for k, v in full.items() if k != "invite_sig"}
    assert create(pcp, state, partial).json()["error"] == "bad_field"
    assert create(pcp, state, {**full, "created_ms": -1}).json()["error"] == "bad_field"
    assert create(pcp, state, {**full, "created_ms": True}).json()["error"] == "bad_field"
    short = {**full, "invite_pub": b64e(bytes(31))}
    assert create(pcp, state, short).json()["error"] == "bad_length"
    assert not Invitation.objects.exists()


# --- the patient's proof ----------------------------------------------------------------


def test_patient_proof_is_verified_stored_audited_and_binds(pcp: Actor) -> None:
    state = pcp.open_case()
    patient, secret, invitation = bound_patient(pcp, state)
    mine = patient.call("GET", "/api/invitations/mine").json()["invitations"]
    assert mine == [
        {
            "id": str(invitation.pk),
            "case": str(state.case_id),
            "invite_pub": b64e(raw(invitation.invite_pub)),
            "proof": False,
            "join_status": "pending",
        }
    ]
    response = post_proof(patient, invitation, proof_for(patient, state, secret))
    assert response.status_code == 200, response.content
    invitation.refresh_from_db()
    assert raw(invitation.proof_uik) == patient.identity.uik_pub
    assert invitation.proof_at is not None
    (event,) = events(AuditAction.INVITATION_PROOF)
    assert (event.actor_id, event.case_id, event.target) == (
        patient.user.pk,
        state.case_id,
        f"invitation:{invitation.pk}",
    )
    assert patient.call("GET", "/api/invitations/mine").json()["invitations"][0]["proof"] is True
    # Posting the same proof again stores and records nothing new.
    assert post_proof(patient, invitation, proof_for(patient, state, secret)).status_code == 200
    assert len(events(AuditAction.INVITATION_PROOF)) == 1
    # What a member's client is given is enough to check the binding itself.
    (listed,) = pcp.call("GET", f"/api/cases/{state.case_id}/join-requests").json()[
        "join_requests"
    ]
    item = listed["invitation"]
    assert item["inviter_device"] == str(pcp.device.device_id)
    assert item["created_ms"] == CREATED_MS
    record = inv.InvitationRecord(
        created_by=uuid.UUID(item["created_by"]),
        inviter_device=uuid.UUID(item["inviter_device"]),
        invite_pub=b64d(item["invite_pub"], 32),
        invite_sig=b64d(item["invite_sig"], 64),
        created_ms=item["created_ms"],
        proof_sig=b64d(item["proof_sig"], 64),
    )
    chain = list(pcp.cases[state.case_id].chain.values())
    binds = inv.check_invitation(
        chain, state.case_id, record, patient.user.pk, patient.identity.uik_pub
    )
    assert binds == "bound"
    assert pcp.add(state, patient, role=Role.PATIENT).status_code == 201


def test_other_patient_cannot_post_a_proof(pcp: Actor) -> None:
    state = pcp.open_case()
    patient, secret, invitation = bound_patient(pcp, state)
    other, _, _ = bound_patient(pcp, pcp.open_case(), username="pat2")
    # Even a proof that names the other patient correctly for this link.
    response = post_proof(other, invitation, proof_for(other, state, secret))
    assert response.status_code == 403 and response.json()["error"] == "not_invitee"
    assert post_proof(pcp, invitation, proof_for(patient, state, secret)).status_code == 403
    invitation.refresh_from_db()
    assert invitation.proof_sig is None
    assert not events(AuditAction.INVITATION_PROOF)
    assert other.call("GET", "/api/invitations/mine").json()["invitations"][0]["case"] != str(
        state.case_id
    )
    assert pcp.call("GET", "/api/invitations/mine").json()["invitations"] == []


def test_bad_proof_is_refused_and_nothing_stored(pcp: Actor) -> None:
    state = pcp.open_case()
    patient, secret, invitation = bound_patient(pcp, state)
    wrong_secret = proof_for(patient, state, os.urandom(32))
    other_uik = proof_for(patient, state, secret, uik=bytes(range(32)))
    for bad in (wrong_secret, other_uik, b64e(bytes(64))):
        response = post_proof(patient, invitation, bad)
        assert response.status_code == 400 and response.json()["error"] == "bad_proof"
    assert post_proof(patient, invitation, "not base64").json()["error"] == "bad_base64"
    invitation.refresh_from_db()
    assert invitation.proof_sig is None and invitation.proof_uik is None
    assert not events(AuditAction.INVITATION_PROOF)


def test_proof_needs_a_registered_identity(pcp: Actor) -> None:
    state = pcp.open_case()
    secret = os.urandom(32)
    response = create(pcp, state, binding(pcp, state, secret))
    token = str(response.json()["link"]).rstrip("/").rsplit("/", 1)[1]
    browser, _ = sign_up(token)
    invitation = Invitation.objects.get()
    answer = browser.post(
        f"/api/invitations/{invitation.pk}/proof",
        data={"proof_sig": b64e(bytes(64))},
        content_type="application/json",
    )
    assert answer.status_code == 409 and answer.json()["error"] == "no_identity"


def test_proof_only_while_the_join_request_is_pending(pcp: Actor) -> None:
    state = pcp.open_case()
    patient, secret, invitation = bound_patient(pcp, state)
    join = JoinRequest.objects.get(user=patient.user)
    assert pcp.call("POST", f"/api/join-requests/{join.pk}/decline", {}).status_code == 200
    response = post_proof(patient, invitation, proof_for(patient, state, secret))
    assert response.status_code == 409 and response.json()["error"] == "not_pending"
    assert Invitation.objects.get(pk=invitation.pk).proof_sig is None
    assert patient.call("GET", "/api/invitations/mine").json()["invitations"][0][
        "join_status"
    ] == ("declined")


def test_proof_for_an_unbound_invitation_or_unknown_id_is_refused(pcp: Actor) -> None:
    from tests.cases.patients import invited_patient

    state = pcp.open_case()
    patient = invited_patient(pcp, state)
    invitation = Invitation.objects.get()
    response = post_proof(patient, invitation, b64e(bytes(64)))
    assert response.status_code == 409 and response.json()["error"] == "invitation_unbound"
    missing = patient.call(
        "POST", f"/api/invitations/{uuid.uuid4()}/proof", {"proof_sig": b64e(bytes(64))}
    )
    assert missing.status_code == 404 and missing.json()["error"] == "no_invitation"


@pytest.mark.django_db(transaction=True)
async def test_proof_rings_open_rooms() -> None:
    pcp = await sync_to_async(lambda: Actor("pcp").register())()
    state = await sync_to_async(pcp.open_case)()
    patient, secret, invitation = await sync_to_async(bound_patient)(pcp, state)
    headers = [
        (b"origin", b"http://127.0.0.1"),
        (b"host", b"127.0.0.1"),
        (b"cookie", session_cookie(pcp.client).encode()),
    ]
    path = room_path(state.case_id, pcp.device.device_id)
    room = WebsocketCommunicator(application, path, headers=headers)
    assert (await room.connect())[0]
    await answer_challenge(room, state.case_id, pcp.device.device_id)
    assert (await room.receive_json_from())["type"] == "hello"
    proof = await sync_to_async(proof_for)(patient, state, secret)
    response = await sync_to_async(post_proof)(patient, invitation, proof)
    assert response.status_code == 200
    frame = await room.receive_json_from(timeout=5)
    assert frame == {"type": "join_request", "user": str(patient.user.pk), "kind": "patient"}
    await room.disconnect()
