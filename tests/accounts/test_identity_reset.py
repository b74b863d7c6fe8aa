"""Identity reset: an operator's command forgets a user's identity key (after verifying the
person out of band); the user registers a new one with the first-use flow and files a
rejoin request; a case owner or admin readmits them only after accepting the new key.

The attackers: the holder of the old identity key (a stolen device) trying to keep acting
or enrol a device after the reset; anyone filing rejoin requests they have no ground for;
the server swapping a user's key in the database with no reset at all."""

from __future__ import annotations

import asyncio
import io
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.sessions.models import Session
from django.core.management import CommandError, call_command
from django.utils import timezone

from collab.accounts.models import Device, IdentityBackup, IdentityKey, IdentityPins, User
from collab.audit.fhir import event_resource
from collab.audit.models import AuditAction, AuditEvent
from collab.audit.verify import chain_verify
from collab.cases import models as m
from collab.client.case_state import CaseState
from collab.client.errors import (
    AuthError,
    ClientError,
    IdentityChangedError,
    ServerRefusedError,
    UsageError,
)
from collab.client.keys import DeviceKeys, Identity
from collab.client.sdk import CollabClient
from collab.crypto.actions import Action, RotateBody, sign_enrol
from collab.crypto.errors import CryptoError
from collab.crypto.pins import seal_pins, sign_pins
from collab.crypto.roster import Role
from collab.crypto.wire import b64e
from tests.support.actor import Actor
from tests.support.clients import IdentitySwap, new_member, signed_in
from tests.support.live import daphne_servers
from tests.support.users import PASSWORD, make_user, totp_code, verified_client

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
    # The event exports like every other (FHIR AuditEvent, a deletion).
    assert event_resource(event)["action"] == "D"


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


def test_a_late_write_under_the_old_identity_does_not_outlive_the_reset(derm: Actor) -> None:
    """A pin book or backup stored by a request of the old identity still in flight when
    the reset committed would be unverifiable for the new key (and block its backup)."""
    reset("derm", "--yes")
    IdentityPins.objects.create(
        user=derm.user, version=1, blob=b"old", sig=bytes(64), updated_at=timezone.now()
    )
    IdentityBackup.objects.create(user=derm.user, ciphertext=b"old backup")
    new_identity(derm)
    assert not IdentityPins.objects.filter(user=derm.user).exists()
    assert not IdentityBackup.objects.filter(user=derm.user).exists()
    store_backups(derm)  # the new identity's own, as its first use stores them
    assert IdentityPins.objects.get(user=derm.user).version == 1


# --- the holder of the old identity key gets nothing -------------------------------------


def test_old_identity_can_neither_register_nor_enrol_devices_after_reset(
    pcp: Actor, derm: Actor
) -> None:
    state = pcp.open_case()
    assert pcp.add(state, derm).status_code == 201
    # Whoever copied the old key made a device of their own while it was still valid.
    thief = Identity(derm.user.pk, derm.identity.uik_seed)
    stolen = DeviceKeys.generate(derm.user.pk)
    stolen_cert = thief.certify(stolen)
    body = {"cert": stolen_cert.to_wire(), "name": "x"}
    assert derm.call("POST", "/api/devices", body, device=False).status_code == 201
    honest_device = derm.device
    reset("derm", "--yes")
    new_identity(derm)
    # A device certified by the old key is not registered for the user any more.
    fresh = DeviceKeys.generate(derm.user.pk)
    body = {"cert": thief.certify(fresh).to_wire(), "name": "y"}
    response = derm.call("POST", "/api/devices", body, device=False)
    assert response.status_code == 400 and response.json()["error"] == "bad_certificate"
    # The device made before the reset was revoked with the others: it cannot enrol
    # itself with the old key, even through the user's new session.
    assert Device.objects.get(pk=stolen.device_id).revoke_reason == "identity reset"
    new_device = derm.device
    derm.device, derm.cert = stolen, stolen_cert
    head = state.head
    enrol = sign_enrol(
        thief.uik_seed, state.case_id, head.epoch + 1, head.entry_hash(), stolen_cert
    )
    as_thief = CaseState(state.case_id, stolen)
    as_thief.accept_entries([state.chain[e] for e in sorted(state.chain)])
    response = derm.submit(as_thief, enrol)
    assert response.status_code == 403 and response.json()["error"] == "device_revoked"
    assert m.LogEntry.objects.filter(case_id=state.case_id).count() == 2
    assert honest_device.device_id != new_device.device_id


# --- rejoin requests -----------------------------------------------------------------


def test_the_reset_files_rejoin_requests_and_managers_are_told(pcp: Actor, derm: Actor) -> None:
    state = pcp.open_case()
    assert pcp.add(state, derm).status_code == 201
    other = pcp.open_case()  # a case derm is not in gets nothing
    out = reset("derm", "--yes")
    assert f"case {state.case_id}" in out and str(other.case_id) not in out
    (join,) = m.JoinRequest.objects.filter(user=derm.user)
    assert (join.case_id, join.kind, join.status) == (
        state.case_id,
        m.JoinKind.REJOIN,
        m.JoinStatus.PENDING,
    )
    (event,) = AuditEvent.objects.filter(action=AuditAction.JOIN_REQUESTED, case_id=state.case_id)
    assert event.details == {"kind": "rejoin", "by": "operator"}
    assert m.Notification.objects.filter(
        user=pcp.user, kind=m.NotificationKind.JOIN_REQUEST, case_id=state.case_id
    ).exists()
    listing = pcp.call("GET", f"/api/cases/{state.case_id}/join-requests", device=False).json()
    (row,) = listing["join_requests"]
    assert row["user"] == str(derm.user.pk) and row["kind"] == "rejoin"
    # Until derm registers a new key, the key directory has none to show for them.
    keys = pcp.call("GET", f"/api/users/{derm.user.pk}/keys", device=False).json()
    assert keys["uik_pub"] is None and keys["devices"] == []

    # A manager may decline it like any join request; derm may then ask again, once
    # the new key is registered.
    declined = pcp.call("POST", f"/api/join-requests/{row['id']}/decline", {}, device=False)
    assert declined.status_code == 200 and declined.json()["status"] == "declined"
    derm.client = verified_client(derm.user)
    response = rejoin(derm, state.case_id)
    assert response.status_code == 409 and response.json()["error"] == "no_identity"
    new_identity(derm)
    response = rejoin(derm, state.case_id)
    assert response.status_code == 201, response.content
    assert response.json()["kind"] == "rejoin"
    again = rejoin(derm, state.case_id)
    assert again.status_code == 409 and again.json()["error"] == "already_requested"


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
    assert not m.JoinRequest.objects.filter(case_id=state.case_id, user=pcp.user).exists()


def test_readmission_replaces_the_roster_entry_and_commits_the_request(
    pcp: Actor, derm: Actor
) -> None:
    state = pcp.open_case()
    assert pcp.add(state, derm).status_code == 201
    reset("derm", "--yes")
    new_identity(derm)
    assert rejoin(derm, state.case_id).json()["error"] == "already_requested"  # the reset's
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


# --- end to end with the SDK on a live server -----------------------------------------


@pytest.fixture(scope="module")
def server(django_db_setup: None, django_db_blocker: Any) -> Iterator[str]:
    with django_db_blocker.unblock(), daphne_servers(1) as urls:
        yield urls[0]


def sdk_send(client: CollabClient, case_id: uuid.UUID, *texts: str) -> list[int]:
    async def go() -> list[int]:
        return [(await client.send_text(case_id, t)).seq for t in texts]

    return asyncio.run(go())


def actions(case_id: uuid.UUID) -> list[str]:
    rows = m.LogEntry.objects.filter(case_id=case_id).order_by("epoch")
    return [Action(r.action).name.lower() for r in rows]


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_reset_user_is_readmitted_only_after_a_person_accepts_the_new_key(
    server: str, tmp_path: Path
) -> None:
    pcp = new_member(server, "pcp", tmp_path)
    derm = new_member(server, "derm", tmp_path, specialty="Dermatology")
    neuro = new_member(server, "neuro", tmp_path, specialty="Neurology")
    case_id = pcp.open_case()
    pcp.add_member(case_id, derm.user_id)
    pcp.add_member(case_id, neuro.user_id)
    old_uik = derm.identity.uik_pub
    (before,) = sdk_send(derm, case_id, "before the reset")
    assert [r.text for r in neuro.history(case_id)] == ["before the reset"]

    async def reset_while_connected() -> ClientError:
        room = await derm.connect(case_id)
        await asyncio.to_thread(reset, "derm", "--yes", "--by", "ops")
        try:
            while True:  # until the server closes the socket (bounded by the timeout)
                await room.next_event(timeout=60)
        except (AuthError, ServerRefusedError) as error:
            return error
        finally:
            await room.close()

    closed = asyncio.run(reset_while_connected())
    assert closed.code in ("session_ended", "device_revoked"), closed
    with pytest.raises(AuthError):
        derm.list_cases()  # the session ended

    # The same keystore signs in again and starts a new identity (explicitly: the old
    # one and its revoked device are dropped), then asks to rejoin its cases.
    with pytest.raises(UsageError) as refused:
        derm.init()
    assert refused.value.code == "device_exists"
    derm.login("derm", PASSWORD, totp_code(User.objects.get(pk=derm.user_id), offset_steps=1))
    derm.init(device_name="derm-new-laptop", after_reset=True)
    new_uik = derm.identity.uik_pub
    assert new_uik != old_uik
    # The reset filed the rejoin request already; asking again changes nothing.
    assert derm.rejoin_cases() == {case_id: "already_requested"}

    # The admitting owner sees the changed key; nothing is committed without acceptance.
    (request,) = pcp.join_requests(case_id)
    assert (request.user, request.kind, request.pin) == (derm.user_id, "rejoin", "changed")
    assert request.uik == new_uik
    with pytest.raises(IdentityChangedError) as changed:
        pcp.admit(case_id, derm.user_id)
    (change,) = changed.value.changes
    assert (change.old_uik, change.new_uik) == (old_uik, new_uik)
    with pytest.raises(IdentityChangedError):
        pcp.admit(case_id, derm.user_id, accept_changed=Identity.generate(derm.user_id).uik_pub)
    assert actions(case_id) == ["create", "add_user", "add_user"]

    # Accepted: the old roster entry is replaced (remove_user, add_user with the new key,
    # the same role), and the request is committed.
    pcp.admit(case_id, derm.user_id, accept_changed=new_uik)
    assert actions(case_id) == ["create", "add_user", "add_user", "remove_user", "add_user"]
    member = pcp.sync(case_id).head.roster.user(derm.user_id)
    assert member is not None and member.uik_pub == new_uik and member.role == Role.MEMBER
    assert pcp.identity_changes() == []  # the owner's decision left nothing pending
    assert m.JoinRequest.objects.get(case_id=case_id).status == m.JoinStatus.COMMITTED

    # Every other member sees the identity change and sends nothing until they accept it.
    assert neuro.blocking(case_id) == [derm.user_id]
    with pytest.raises(IdentityChangedError):
        sdk_send(neuro, case_id, "refused")
    neuro.accept_identity(derm.user_id, new_uik)
    (after,) = sdk_send(neuro, case_id, "after the readmission")
    sdk_send(derm, case_id, "back again")

    # The readmitted user reads from the readmission on. The epochs before it were
    # wrapped only to the old identity's devices (no share_history), so the server
    # serves the new devices none of their messages.
    seen = {r.seq: r for r in derm.history(case_id)}
    assert before not in seen and min(seen) > before
    assert seen[after].text == "after the readmission"
    assert m.Message.objects.filter(case_id=case_id, seq=before).exists()
    # Unless a manager hands them the earlier keys (share_history, owner or admin): then
    # the earlier messages are served and read; the keys were checked against each
    # epoch's key_commit by derm's client. A plain member may not.
    with pytest.raises(CryptoError) as not_allowed:
        neuro.share_history(case_id, derm.user_id)
    assert not_allowed.value.code == "unauthorized_author"
    (shared,) = pcp.share_history(case_id, derm.user_id)
    assert shared.action == Action.SHARE_HISTORY
    texts = {r.seq: r.text for r in derm.history(case_id)}
    assert texts[before] == "before the reset" and texts[after] == "after the readmission"
    assert [r.text for r in pcp.history(case_id)][-2:] == ["after the readmission", "back again"]
    assert chain_verify().ok


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_key_swapped_by_the_server_without_reset_is_refused_as_before(
    server: str, tmp_path: Path
) -> None:
    pcp = new_member(server, "pcp", tmp_path)
    derm = new_member(server, "derm", tmp_path, specialty="Dermatology")
    neuro = new_member(server, "neuro", tmp_path, specialty="Neurology")
    case_id = pcp.open_case()
    pcp.add_member(case_id, derm.user_id)
    pcp.add_member(case_id, neuro.user_id)

    # The operator swaps derm's key in the database and injects a rejoin request.
    swap = IdentitySwap(derm.user_id).apply()
    m.JoinRequest.objects.create(
        case_id=case_id,
        user_id=derm.user_id,
        requested_by_id=derm.user_id,
        kind=m.JoinKind.REJOIN,
    )
    (request,) = pcp.join_requests(case_id)
    assert (request.kind, request.pin, request.uik) == ("rejoin", "changed", swap.identity.uik_pub)
    for client in (pcp, neuro):
        with pytest.raises(IdentityChangedError):
            client.admit(case_id, derm.user_id)
        with pytest.raises(IdentityChangedError):
            client.user_keys(derm.user_id)
    assert actions(case_id) == ["create", "add_user", "add_user"]
    # A rejoin injected for a member whose key did not change replaces nothing.
    m.JoinRequest.objects.create(
        case_id=case_id,
        user_id=neuro.user_id,
        requested_by_id=neuro.user_id,
        kind=m.JoinKind.REJOIN,
    )
    with pytest.raises(UsageError) as refused:
        pcp.admit(case_id, neuro.user_id)
    assert refused.value.code == "already_member"
    assert actions(case_id) == ["create", "add_user", "add_user"]
    # The roster is untouched, so members carry on with the key they verified.
    assert neuro.blocking(case_id) == []
    sdk_send(neuro, case_id, "still fine")
    member = neuro.sync(case_id).head.roster.user(derm.user_id)
    assert member is not None and member.uik_pub == derm.identity.uik_pub


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_members_keep_sending_after_a_reset_of_a_member_with_two_devices(
    server: str, tmp_path: Path
) -> None:
    pcp = new_member(server, "pcp", tmp_path)
    derm_user = make_user("derm", specialty="Dermatology")
    derm = signed_in(server, derm_user, tmp_path)
    recovery = derm.init(device_name="derm-laptop")
    case_id = pcp.open_case()
    pcp.add_member(case_id, derm.user_id)
    phone = signed_in(server, derm_user, tmp_path / "phone", offset_steps=1)
    assert phone.recover(recovery) == {case_id: "enrolled"}
    assert len(pcp.sync(case_id).head.roster.devices_of(derm.user_id)) == 2

    reset("derm", "--yes")
    # The owner's client removes revoked devices it may remove before sending; the
    # reset user's roster entry (old key) must not make that, or the send, fail.
    sdk_send(pcp, case_id, "still here")
    assert [r.text for r in pcp.history(case_id)][-1] == "still here"
