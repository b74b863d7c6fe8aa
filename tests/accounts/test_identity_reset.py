"""Identity reset: an operator's command forgets a user's identity key (after verifying the
person out of band); the user registers a new one with the first-use flow and files a
rejoin request; a case owner or admin readmits them only after accepting the new key.

The attackers: the holder of the old identity key (a stolen device) trying to keep acting
or enrol a device after the reset; anyone filing rejoin requests they have no ground for;
the server swapping a user's key in the database with no reset at all."""

from __future__ import annotations

import io
import os
import uuid
from typing import Any

import pytest
from django.contrib.sessions.models import Session
from django.core.management import CommandError, call_command

from collab.accounts.models import Device, IdentityBackup, IdentityKey, IdentityPins, User
from collab.audit.models import AuditAction, AuditEvent
from collab.audit.verify import chain_verify
from collab.cases import models as m
from collab.client.keys import DeviceKeys, Identity
from collab.crypto.actions import RotateBody, sign_enrol
from collab.crypto.pins import seal_pins, sign_pins
from collab.crypto.roster import Role
from collab.crypto.wire import b64e
from tests.support.actor import Actor
from tests.support.users import verified_client

pytestmark = pytest.mark.django_db


def reset(username: str, *extra: str) -> str:
    out = io.StringIO()
    call_command("identity_reset", username, *extra, stdout=out)
    return out.getvalue()


def store_backups(actor: Actor) -> None:
    """An identity backup, a pin book and a key-backup item, as the user's client left
    them (all sealed under the old identity key)."""
    assert (
        actor.call("PUT", "/api/identity/backup", {"ciphertext": b64e(b"x" * 80)}).status_code
        == 200
    )
    blob = seal_pins(actor.identity.uik_seed, b'{"format":"collab-pins","pins":{}}')
    sig = sign_pins(actor.identity.uik_seed, actor.user.pk, 1, blob)
    body = {"version": 1, "blob": b64e(blob), "sig": b64e(sig)}
    assert actor.call("PUT", "/api/identity/pins", body).status_code == 200


def new_identity(actor: Actor) -> Actor:
    """The reset user signs in again (a fresh session) and registers a new identity key
    and device with the first-use flow."""
    actor.client = verified_client(actor.user)
    actor.identity = Identity.generate(actor.user.pk)
    actor.device = DeviceKeys.generate(actor.user.pk)
    actor.cert = actor.identity.certify(actor.device)
    return actor.register()


def rejoin(actor: Actor, case_id: uuid.UUID) -> Any:
    return actor.call(
        "POST", f"/api/cases/{case_id}/join-requests", {"kind": "rejoin"}, device=False
    )


@pytest.fixture
def pcp() -> Actor:
    return Actor("pcp").register()


@pytest.fixture
def derm() -> Actor:
    return Actor("derm", specialty="Dermatology").register()


# --- the command --------------------------------------------------------------------


def test_reset_needs_confirmation_and_a_known_user(derm: Actor) -> None:
    with pytest.raises(CommandError, match="--yes"):
        reset("derm")
    with pytest.raises(CommandError, match="no user"):
        reset("nobody", "--yes")
    assert IdentityKey.objects.filter(user=derm.user).exists()
    assert Device.objects.get(pk=derm.device.device_id).revoked_at is None
    assert not AuditEvent.objects.filter(action=AuditAction.IDENTITY_RESET).exists()


def test_reset_forgets_the_identity_and_ends_every_session(pcp: Actor, derm: Actor) -> None:
    state = pcp.open_case()
    assert pcp.add(state, derm).status_code == 201
    store_backups(derm)
    m.KeyBackupItem.objects.create(
        user=derm.user, case_id=state.case_id, epoch=1, item=os.urandom(112)
    )
    m.KeyBackupItem.objects.create(
        user=pcp.user, case_id=state.case_id, epoch=1, item=os.urandom(112)
    )
    second = DeviceKeys.generate(derm.user.pk)
    cert = derm.identity.certify(second)
    assert (
        derm.call("POST", "/api/devices", {"cert": cert.to_wire(), "name": "phone"}).status_code
        == 201
    )
    other_browser = verified_client(derm.user)  # a session no device ever proved itself in
    sessions = {derm.session_id, other_browser.cookies["sessionid"].value}
    admin = User.objects.create_user(username="ops", password="x", display_name="Ops", role="admin")

    out = reset("derm", "--yes", "--by", "ops")

    devices = Device.objects.filter(user=derm.user)
    assert devices.count() == 2
    assert all(d.revoked_at is not None and d.revoke_reason == "identity reset" for d in devices)
    assert all(d.revoked_by == admin for d in devices)
    assert not IdentityKey.objects.filter(user=derm.user).exists()
    assert not IdentityBackup.objects.filter(user=derm.user).exists()
    assert not IdentityPins.objects.filter(user=derm.user).exists()
    assert not m.KeyBackupItem.objects.filter(user=derm.user).exists()
    assert m.KeyBackupItem.objects.filter(user=pcp.user).count() == 1  # nobody else's
    assert not Session.objects.filter(session_key__in=sessions).exists()
    assert Session.objects.filter(session_key=pcp.session_id).exists()
    # The old sessions are signed out everywhere.
    assert derm.call("GET", "/api/identity", device=False).status_code == 401
    assert other_browser.get("/api/devices").status_code == 401

    (event,) = AuditEvent.objects.filter(action=AuditAction.IDENTITY_RESET)
    assert event.actor == admin and event.target == f"user:{derm.user.pk}"
    assert event.details["by"] == "ops" and event.details["devices_revoked"] == 2
    assert event.details["sessions_ended"] == 2
    revoked = AuditEvent.objects.filter(action=AuditAction.DEVICE_REVOKED, reason="identity reset")
    assert revoked.count() == 2
    assert chain_verify().ok
    assert str(derm.device.device_id) in out and str(second.device_id) in out
    assert "sessions ended: 2" in out and "key backup items deleted: 1" in out
    # The membership stays as the log says: only a signed entry changes it.
    assert m.Member.objects.filter(case_id=state.case_id, user=derm.user).exists()


def test_an_operator_without_an_account_is_named_in_the_audit(derm: Actor) -> None:
    reset("derm", "--yes")
    (event,) = AuditEvent.objects.filter(action=AuditAction.IDENTITY_RESET)
    assert event.actor is None and event.details["by"] == "operator"


def test_the_next_sign_in_registers_a_new_identity_with_the_first_use_flow(derm: Actor) -> None:
    old_uik = derm.identity.uik_pub
    reset("derm", "--yes")
    new_identity(derm)
    assert bytes(IdentityKey.objects.get(user=derm.user).uik_pub) != old_uik
    assert Device.objects.filter(user=derm.user, revoked_at__isnull=True).count() == 1
    # Registered once again: a third key is refused as before.
    other = Identity.generate(derm.user.pk)
    response = derm.call("POST", "/api/identity", {"uik_pub": b64e(other.uik_pub)}, device=False)
    assert response.status_code == 409 and response.json()["error"] == "identity_exists"


# --- the holder of the old identity key gets nothing -------------------------------------


def test_old_identity_can_neither_register_nor_enrol_devices_after_reset(
    pcp: Actor, derm: Actor
) -> None:
    state = pcp.open_case()
    assert pcp.add(state, derm).status_code == 201
    thief = Identity(derm.user.pk, derm.identity.uik_seed)  # a copy of the old key
    reset("derm", "--yes")
    new_identity(derm)
    # A device certified by the old key is not registered for the user any more.
    stolen = DeviceKeys.generate(derm.user.pk)
    cert = thief.certify(stolen)
    response = derm.call(
        "POST", "/api/devices", {"cert": cert.to_wire(), "name": "x"}, device=False
    )
    assert response.status_code == 400 and response.json()["error"] == "bad_certificate"
    # Nor can the old key enrol a device in a case whose roster still lists it: the
    # server refuses a roster holding a key the user no longer has registered.
    Device.objects.create(
        id=stolen.device_id,
        user=derm.user,
        dsk_pub=cert.dsk_pub,
        dxk_pub=cert.dxk_pub,
        not_before_ms=cert.not_before_ms,
        cert_sig=cert.cert_sig,
    )
    derm.device, derm.cert = stolen, cert
    derm.join(state.case_id)
    body = sign_enrol(
        thief.uik_seed, state.case_id, state.head.epoch + 1, state.head.entry_hash(), cert
    )
    response = derm.submit(derm.cases[state.case_id], body)
    assert response.status_code in (400, 409), response.content
    assert response.json()["error"] in ("unregistered_identity", "revoked_device_in_roster")
    assert m.LogEntry.objects.filter(case_id=state.case_id).count() == 2


# --- rejoin requests -----------------------------------------------------------------


def test_a_reset_member_files_a_rejoin_request_and_managers_are_told(
    pcp: Actor, derm: Actor
) -> None:
    state = pcp.open_case()
    assert pcp.add(state, derm).status_code == 201
    reset("derm", "--yes")
    derm.client = verified_client(derm.user)
    # Before the new key is registered there is nothing to readmit.
    response = rejoin(derm, state.case_id)
    assert response.status_code == 409 and response.json()["error"] == "no_identity"
    new_identity(derm)
    response = rejoin(derm, state.case_id)
    assert response.status_code == 201, response.content
    assert response.json()["kind"] == "rejoin"
    listing = pcp.call("GET", f"/api/cases/{state.case_id}/join-requests", device=False).json()
    (row,) = listing["join_requests"]
    assert row["user"] == str(derm.user.pk) and row["kind"] == "rejoin"
    assert m.Notification.objects.filter(
        user=pcp.user, kind=m.NotificationKind.JOIN_REQUEST, case_id=state.case_id
    ).exists()
    again = rejoin(derm, state.case_id)
    assert again.status_code == 409 and again.json()["error"] == "already_requested"
    # A manager may decline it like any join request.
    declined = pcp.call("POST", f"/api/join-requests/{row['id']}/decline", {}, device=False)
    assert declined.status_code == 200 and declined.json()["status"] == "declined"


def test_rejoin_is_refused_without_a_reset_or_membership(pcp: Actor, derm: Actor) -> None:
    state = pcp.open_case()
    outsider = Actor("neuro", specialty="Neurology").register()
    response = rejoin(outsider, state.case_id)
    assert response.status_code == 403 and response.json()["error"] == "not_member"
    assert pcp.add(state, derm).status_code == 201
    # A member whose roster key is the registered one has nothing to rejoin.
    response = rejoin(derm, state.case_id)
    assert response.status_code == 409 and response.json()["error"] == "already_member"
    # Nobody files a rejoin for someone else: the request is always for the caller.
    reset("derm", "--yes")
    new_identity(derm)
    response = pcp.call(
        "POST",
        f"/api/cases/{state.case_id}/join-requests",
        {"kind": "rejoin", "user": str(derm.user.pk)},
        device=False,
    )
    assert response.status_code == 409 and response.json()["error"] == "already_member"
    assert not m.JoinRequest.objects.filter(case_id=state.case_id).exists()


def test_readmission_replaces_the_roster_entry_and_commits_the_request(
    pcp: Actor, derm: Actor
) -> None:
    state = pcp.open_case()
    assert pcp.add(state, derm).status_code == 201
    reset("derm", "--yes")
    new_identity(derm)
    assert rejoin(derm, state.case_id).status_code == 201
    # Nothing but the removal of the old entry is accepted while the roster holds it.
    refused = pcp.submit(state, RotateBody())
    assert refused.status_code in (400, 409)
    assert refused.json()["error"] in ("unregistered_identity", "revoked_device_in_roster")
    assert pcp.remove(state, derm).status_code == 201
    assert m.JoinRequest.objects.get(case_id=state.case_id).status == m.JoinStatus.PENDING
    assert pcp.add(state, derm).status_code == 201
    assert m.JoinRequest.objects.get(case_id=state.case_id).status == m.JoinStatus.COMMITTED
    member = state.head.roster.user(derm.user.pk)
    assert member is not None and member.uik_pub == derm.identity.uik_pub
    assert member.role == Role.MEMBER
