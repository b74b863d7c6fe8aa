"""Patient invitations: single use, expiring, hashed at rest, revocable, audited."""

from __future__ import annotations

import base64
import hashlib
import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from collab.accounts.models import User
from collab.audit.models import AuditAction, AuditEvent
from collab.cases.models import Invitation, JoinRequest, Member, Notification
from collab.crypto.roster import Role
from tests.cases.patients import invite, invited_patient, sign_up
from tests.support.actor import Actor
from tests.support.users import PASSWORD

pytestmark = pytest.mark.django_db


@pytest.fixture
def pcp() -> Actor:
    return Actor("pcp", specialty="Family medicine").register()


def events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("seq"))


def test_provider_member_creates_link_and_qr_and_only_the_hash_is_stored(pcp: Actor) -> None:
    state = pcp.open_case()
    response = pcp.call("POST", f"/api/cases/{state.case_id}/invitations")
    assert response.status_code == 201
    body = response.json()
    assert "/invite/" in body["link"] and "<svg" in body["qr_svg"]
    assert body["state"] == "active"
    token = body["link"].rstrip("/").rsplit("/", 1)[1]
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    assert len(raw) == 32
    invitation = Invitation.objects.get()
    assert invitation.token_hash == hashlib.sha256(raw).hexdigest()
    created = events(AuditAction.INVITATION_CREATED)
    assert [(e.actor_id, e.case_id) for e in created] == [(pcp.user.pk, state.case_id)]
    assert token not in str(created[0].details) and token not in invitation.token_hash


def test_invitation_expires_after_72_hours_by_default_and_is_configurable(
    pcp: Actor, settings
) -> None:
    state = pcp.open_case()
    invite(pcp, state)
    first = Invitation.objects.get()
    assert abs((first.expires_at - first.created_at) - timedelta(hours=72)) < timedelta(minutes=1)
    settings.INVITE_HOURS = 5
    invite(pcp, state)
    second = Invitation.objects.exclude(pk=first.pk).get()
    assert abs((second.expires_at - second.created_at) - timedelta(hours=5)) < timedelta(minutes=1)


def test_non_member_provider_cannot_invite(pcp: Actor) -> None:
    other = Actor("other").register()
    state = pcp.open_case()
    response = other.call("POST", f"/api/cases/{state.case_id}/invitations")
    assert response.status_code == 403
    assert response.json()["error"] == "not_member"
    assert not Invitation.objects.exists()


def test_members_list_invitations_without_tokens_and_outsiders_cannot(pcp: Actor) -> None:
    state = pcp.open_case()
    token = invite(pcp, state)
    listed = pcp.call("GET", f"/api/cases/{state.case_id}/invitations")
    assert listed.status_code == 200
    (item,) = listed.json()["invitations"]
    assert item["state"] == "active" and "link" not in item and token not in listed.content.decode()
    other = Actor("other").register()
    assert other.call("GET", f"/api/cases/{state.case_id}/invitations").status_code == 403


def test_opening_a_valid_link_shows_the_sign_up_form_and_is_audited(pcp: Actor) -> None:
    token = invite(pcp, pcp.open_case())
    response = Client().get(f"/invite/{token}/")
    assert response.status_code == 200
    assert b"Create my account" in response.content
    assert response["Referrer-Policy"] == "same-origin"
    assert response["Cache-Control"] == "no-store"
    assert len(events(AuditAction.INVITATION_OPENED)) == 1


def test_unknown_or_malformed_token_gets_a_clear_page(pcp: Actor) -> None:
    invite(pcp, pcp.open_case())
    for bad in ["A" * 43, "not-a-token"]:
        response = Client().get(f"/invite/{bad}/")
        assert response.status_code == 404
        assert b"not valid" in response.content
    assert not events(AuditAction.INVITATION_OPENED)


def test_expired_link_is_refused_and_expiry_audited_once(pcp: Actor) -> None:
    token = invite(pcp, pcp.open_case())
    Invitation.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    for _ in range(2):
        response = Client().get(f"/invite/{token}/")
        assert response.status_code == 410
        assert b"expired" in response.content
    _, response = sign_up(token)
    assert response.status_code == 410
    assert not User.objects.filter(username="pat").exists()
    assert len(events(AuditAction.INVITATION_EXPIRED)) == 1


def test_revoked_link_is_refused_and_revocation_audited(pcp: Actor) -> None:
    state = pcp.open_case()
    token = invite(pcp, state)
    invitation = Invitation.objects.get()
    response = pcp.call("POST", f"/api/invitations/{invitation.pk}/revoke")
    assert response.status_code == 200 and response.json()["state"] == "revoked"
    assert len(events(AuditAction.INVITATION_REVOKED)) == 1
    page = Client().get(f"/invite/{token}/")
    assert page.status_code == 410 and b"withdrawn" in page.content
    _, response = sign_up(token)
    assert response.status_code == 410
    assert not User.objects.filter(username="pat").exists()
    failed = events(AuditAction.INVITATION_OPENED)
    assert [e.reason for e in failed] == ["revoked", "revoked"]


def test_outsider_cannot_revoke(pcp: Actor) -> None:
    invite(pcp, pcp.open_case())
    other = Actor("other").register()
    invitation = Invitation.objects.get()
    assert other.call("POST", f"/api/invitations/{invitation.pk}/revoke").status_code == 403
    invitation.refresh_from_db()
    assert invitation.revoked_at is None


def test_accepting_creates_a_signed_in_patient_and_a_patient_join_request(pcp: Actor) -> None:
    state = pcp.open_case()
    token = invite(pcp, state)
    browser, response = sign_up(token)
    assert response.status_code == 302 and response["Location"] == "/invite/welcome/"
    patient = User.objects.get(username="pat")
    assert patient.role == "patient" and patient.check_password(PASSWORD)
    invitation = Invitation.objects.get()
    assert (invitation.used_by_id, invitation.used_at is not None) == (patient.pk, True)
    join = JoinRequest.objects.get(user=patient)
    assert (join.kind, join.status, join.invitation_id, join.case_id) == (
        "patient",
        "pending",
        invitation.pk,
        state.case_id,
    )
    assert len(events(AuditAction.INVITATION_ACCEPTED)) == 1
    assert Notification.objects.filter(user=pcp.user, kind="invitation_accepted").exists()
    welcome = browser.get("/invite/welcome/")
    assert welcome.status_code == 200 and b"/accounts/enrol/" in welcome.content
    assert browser.get("/api/cases").status_code == 200  # signed in, no second factor needed
    pending = pcp.call("GET", f"/api/cases/{state.case_id}/join-requests").json()
    (listed,) = pending["join_requests"]
    assert (listed["id"], listed["user"], listed["kind"], listed["role"]) == (
        join.pk,
        str(patient.pk),
        "patient",
        "patient",
    )
    assert listed["invitation"]["id"] == str(invitation.pk)


def test_link_works_only_once(pcp: Actor) -> None:
    token = invite(pcp, pcp.open_case())
    assert sign_up(token, "pat")[1].status_code == 302
    _, again = sign_up(token, "mallory")
    assert again.status_code == 410 and b"already been used" in again.content
    assert Client().get(f"/invite/{token}/").status_code == 410
    assert not User.objects.filter(username="mallory").exists()
    assert JoinRequest.objects.filter(kind="patient").count() == 1


def test_weak_password_is_refused_and_the_link_stays_usable(pcp: Actor) -> None:
    token = invite(pcp, pcp.open_case())
    _, response = sign_up(token, "pat", password="password")
    assert response.status_code == 400
    assert not User.objects.filter(username="pat").exists()
    assert Invitation.objects.get().used_at is None
    assert sign_up(token, "pat")[1].status_code == 302


def test_signed_in_visitor_does_not_consume_the_link(pcp: Actor) -> None:
    token = invite(pcp, pcp.open_case())
    response = pcp.client.post(
        f"/invite/{token}/",
        {"username": "x1", "display_name": "X", "password1": PASSWORD, "password2": PASSWORD},
    )
    assert response.status_code == 409
    assert Invitation.objects.get().used_at is None


def test_signed_in_patient_joins_with_the_existing_account(pcp: Actor) -> None:
    first = pcp.open_case()
    patient = invited_patient(pcp, first)  # has an account from the first invitation
    second = pcp.open_case()
    token = invite(pcp, second)
    page = patient.client.get(f"/invite/{token}/")
    assert page.status_code == 200 and b"Join the case room" in page.content
    assert Invitation.objects.get(case_id=second.case_id).used_at is None
    response = patient.client.post(f"/invite/{token}/")
    assert response.status_code == 302
    join = JoinRequest.objects.get(case_id=second.case_id)
    assert (join.user_id, join.kind) == (patient.user.pk, "patient")
    assert User.objects.filter(role="patient").count() == 1
    assert Invitation.objects.get(case_id=second.case_id).used_by_id == patient.user.pk
    assert pcp.add(second, patient, Role.PATIENT).status_code == 201


def test_existing_patient_cannot_use_a_second_link_to_the_same_case(pcp: Actor) -> None:
    state = pcp.open_case()
    patient = invited_patient(pcp, state)
    token = invite(pcp, state)
    response = patient.client.post(f"/invite/{token}/")
    assert response.status_code == 409
    assert b"already in" in response.content
    assert Invitation.objects.filter(case_id=state.case_id, used_at__isnull=True).count() == 1


def test_patient_is_added_only_with_an_accepted_invitation(pcp: Actor) -> None:
    state = pcp.open_case()
    patient = invited_patient(pcp, state)
    assert pcp.add(state, patient, Role.PATIENT).status_code == 201
    assert Member.objects.get(case_id=state.case_id, user=patient.user).role == int(Role.PATIENT)
    assert JoinRequest.objects.get(user=patient.user).status == "committed"
    joined = patient.join(state.case_id)
    assert 0 not in joined.keys  # history only through share_history


def test_patient_without_invitation_cannot_be_added(pcp: Actor) -> None:
    state = pcp.open_case()
    stranger = Actor("pat", role="patient").register()
    response = pcp.add(state, stranger, Role.PATIENT)
    assert response.status_code == 403
    assert response.json()["error"] == "no_invitation"
    assert not Member.objects.filter(user=stranger.user).exists()


def test_invitation_to_one_case_does_not_admit_to_another(pcp: Actor) -> None:
    first = pcp.open_case()
    other = pcp.open_case()
    patient = invited_patient(pcp, first)
    response = pcp.add(other, patient, Role.PATIENT)
    assert response.status_code == 403
    assert response.json()["error"] == "no_invitation"


def test_used_invitation_cannot_be_revoked(pcp: Actor) -> None:
    state = pcp.open_case()
    invited_patient(pcp, state)
    invitation = Invitation.objects.get()
    response = pcp.call("POST", f"/api/invitations/{invitation.pk}/revoke")
    assert response.status_code == 409 and response.json()["error"] == "invitation_used"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_accepts_one_wins(pcp: Actor) -> None:
    token = invite(pcp, pcp.open_case())
    barrier = threading.Barrier(2)
    results: dict[str, int] = {}

    def accept(name: str) -> None:
        try:
            barrier.wait()
            results[name] = sign_up(token, name)[1].status_code
        finally:
            connection.close()

    threads = [threading.Thread(target=accept, args=(n,)) for n in ("pat1", "pat2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results.values()) == [302, 410]
    assert User.objects.filter(role="patient").count() == 1
    assert JoinRequest.objects.filter(kind="patient").count() == 1


def test_sign_up_page_rejects_taken_usernames(pcp: Actor) -> None:
    token = invite(pcp, pcp.open_case())
    _, response = sign_up(token, "pcp")
    assert response.status_code == 400 and b"taken" in response.content
