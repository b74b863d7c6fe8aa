"""Emission tests for identity keys, devices, the pin book, the identity backup, the key
backup and the operator's identity reset: the endpoints driven with real PyNaCl-signed
certificates and device proofs (tests.support.actor), the reset with call_command."""

from __future__ import annotations

import io
import json
import os
from typing import Any

import pytest
from django.core.management import call_command

from collab.accounts.models import Device, User
from collab.audit.models import AuditAction, AuditEvent
from collab.client.keys import DeviceKeys
from collab.crypto.keybackup import backup_key, seal_backup_item
from collab.crypto.pins import seal_pins, sign_pins
from collab.crypto.wire import b64e
from tests.audit.emissions import emits
from tests.audit.emissions.accounts_support import (
    assert_no_secret,
    head,
    only_event,
    written,
)
from tests.support.actor import Actor
from tests.support.users import PASSWORD, make_user, verified_client

pytestmark = pytest.mark.django_db


def key_secrets(actor: Actor) -> tuple[bytes, ...]:
    """What must never reach the trail of an actor's keys: the secrets, and the public
    halves too (the event names the device, not its keys)."""
    return (
        actor.identity.uik_seed,
        actor.device.dsk_seed,
        actor.device.dxk_secret,
        actor.identity.uik_pub,
        actor.device.dsk_pub,
        actor.device.dxk_pub,
    )


def assert_place(event: AuditEvent, *, actor: Any, device: Any = None, case: Any = None) -> None:
    assert event.actor_id == (actor.pk if actor is not None else None)
    assert event.device_id == device
    assert event.case_id == case


@emits(AuditAction.IDENTITY_REGISTERED)
def test_identity_registration_is_recorded_once() -> None:
    pcp = Actor("pcp")
    body = {"uik_pub": b64e(pcp.identity.uik_pub)}
    before = head()
    assert pcp.call("POST", "/api/identity", body).status_code == 200
    event = only_event(before, AuditAction.IDENTITY_REGISTERED)
    assert_place(event, actor=pcp.user)
    assert (event.outcome, event.reason, event.target, event.details) == ("success", "", "", {})
    assert_no_secret(event, *key_secrets(pcp), pcp.session_id)
    # The same key again changes nothing and records nothing.
    again = head()
    assert pcp.call("POST", "/api/identity", body).status_code == 200
    assert written(again) == []


@emits(AuditAction.DEVICE_REGISTERED)
def test_device_registration_names_the_device() -> None:
    pcp = Actor("pcp")
    assert (
        pcp.call("POST", "/api/identity", {"uik_pub": b64e(pcp.identity.uik_pub)}).status_code
        == 200
    )
    before = head()
    body = {"cert": pcp.cert.to_wire(), "name": "laptop"}
    assert pcp.call("POST", "/api/devices", body).status_code == 201
    event = only_event(before, AuditAction.DEVICE_REGISTERED)
    device_id = pcp.device.device_id
    assert_place(event, actor=pcp.user, device=device_id)
    assert (event.outcome, event.reason, event.details) == ("success", "", {})
    assert event.target == f"device:{device_id}"
    assert_no_secret(event, *key_secrets(pcp), pcp.cert.cert_sig, pcp.session_id)


@emits(AuditAction.DEVICE_REVOKED)
def test_an_admins_revocation_records_the_admin_and_the_reason() -> None:
    pcp = Actor("pcp").register()
    admin = make_user("ops", role="admin")
    device_id = pcp.device.device_id
    before = head()
    response = verified_client(admin).post(
        f"/api/devices/{device_id}/revoke",
        json.dumps({"reason": "  laptop reported stolen "}),
        content_type="application/json",
    )
    assert response.status_code == 200
    # The device never proved itself in a session: no sessions to end.
    event = only_event(before, AuditAction.DEVICE_REVOKED)
    assert_place(event, actor=admin, device=device_id)
    assert (event.outcome, event.reason) == ("success", "laptop reported stolen")
    assert (event.target, event.details) == (f"device:{device_id}", {})
    assert_no_secret(event, *key_secrets(pcp))


@emits(AuditAction.DEVICE_REVOKED, AuditAction.DEVICE_SESSIONS_ENDED)
def test_revoking_a_device_that_proved_itself_ends_its_session() -> None:
    pcp = Actor("pcp").register()
    state = pcp.open_case()
    assert pcp.call("GET", f"/api/cases/{state.case_id}/wraps").status_code == 200
    cookie = pcp.session_id
    device_id = pcp.device.device_id
    before = head()
    assert pcp.call("POST", f"/api/devices/{device_id}/revoke", {}).status_code == 200
    revoked, ended = written(before)
    assert (revoked.action, ended.action) == (
        AuditAction.DEVICE_REVOKED,
        AuditAction.DEVICE_SESSIONS_ENDED,
    )
    for event in (revoked, ended):
        assert_place(event, actor=pcp.user, device=device_id)
        assert (event.outcome, event.target) == ("success", f"device:{device_id}")
        assert_no_secret(event, *key_secrets(pcp), cookie)
    assert (revoked.reason, revoked.details) == ("", {})  # one's own device needs no reason
    assert (ended.reason, ended.details) == ("", {"sessions": 1})


def pins_body(actor: Actor, version: int) -> tuple[dict[str, Any], bytes, bytes]:
    blob = seal_pins(actor.identity.uik_seed, b'{"format":"collab-pins","pins":{}}')
    sig = sign_pins(actor.identity.uik_seed, actor.user.pk, version, blob)
    return {"version": version, "blob": b64e(blob), "sig": b64e(sig)}, blob, sig


@emits(AuditAction.IDENTITY_PINS_STORED)
def test_storing_the_pin_book_records_its_version_and_size_only() -> None:
    pcp = Actor("pcp").register()
    for version in (1, 2):
        body, blob, sig = pins_body(pcp, version)
        before = head()
        assert pcp.call("PUT", "/api/identity/pins", body).status_code == 200
        event = only_event(before, AuditAction.IDENTITY_PINS_STORED)
        assert_place(event, actor=pcp.user)
        assert (event.outcome, event.reason) == ("success", "")
        assert event.target == f"user:{pcp.user.pk}"
        assert event.details == {"version": version, "size": len(blob)}
        assert_no_secret(event, blob, sig, *key_secrets(pcp), pcp.session_id)
    # A stale version is refused and records nothing.
    body, _, _ = pins_body(pcp, 2)
    before = head()
    assert pcp.call("PUT", "/api/identity/pins", body).status_code == 409
    assert written(before) == []


@emits(AuditAction.IDENTITY_BACKUP_REPLACED)
def test_replacing_the_identity_backup_records_its_size() -> None:
    pcp = Actor("pcp").register()
    first, second = os.urandom(90), os.urandom(120)
    before = head()
    assert pcp.call("PUT", "/api/identity/backup", {"ciphertext": b64e(first)}).status_code == 200
    assert written(before) == []  # the first backup is no replacement
    before = head()
    body = {"ciphertext": b64e(second), "password": PASSWORD}
    assert pcp.call("PUT", "/api/identity/backup", body).status_code == 200
    event = only_event(before, AuditAction.IDENTITY_BACKUP_REPLACED)
    assert_place(event, actor=pcp.user)
    assert (event.outcome, event.reason, event.target) == ("success", "", "")
    assert event.details == {"size": 120}
    assert_no_secret(event, first, second, PASSWORD, pcp.session_id)


@emits(AuditAction.IDENTITY_BACKUP_REPLACED)
def test_a_refused_replacement_is_recorded_as_a_failure() -> None:
    pcp = Actor("pcp").register()
    assert (
        pcp.call("PUT", "/api/identity/backup", {"ciphertext": b64e(b"a" * 80)}).status_code == 200
    )
    before = head()
    body = {"ciphertext": b64e(b"b" * 80), "password": "not-the-password-7"}
    response = pcp.call("PUT", "/api/identity/backup", body)
    assert (response.status_code, response.json()["error"]) == (403, "reauth_failed")
    event = only_event(before, AuditAction.IDENTITY_BACKUP_REPLACED)
    assert_place(event, actor=pcp.user)
    assert (event.outcome, event.reason, event.target) == ("failure", "reauth_failed", "")
    assert event.details == {}
    assert_no_secret(event, "not-the-password-7", PASSWORD, b"b" * 80, pcp.session_id)


@emits(AuditAction.IDENTITY_BACKUP_REPLACED)
def test_a_replacement_while_locked_out_is_recorded_as_locked_out(settings: Any) -> None:
    pcp = Actor("pcp").register()
    assert (
        pcp.call("PUT", "/api/identity/backup", {"ciphertext": b64e(b"a" * 80)}).status_code == 200
    )
    wrong = {"ciphertext": b64e(b"b" * 80), "password": "not-the-password-7"}
    for _ in range(settings.AXES_FAILURE_LIMIT):
        pcp.call("PUT", "/api/identity/backup", wrong)
    # Locked out, the right password is refused too, and recorded as such.
    before = head()
    body = {"ciphertext": b64e(b"b" * 80), "password": PASSWORD}
    response = pcp.call("PUT", "/api/identity/backup", body)
    assert (response.status_code, response.json()["error"]) == (429, "locked_out")
    event = only_event(before, AuditAction.IDENTITY_BACKUP_REPLACED)
    assert_place(event, actor=pcp.user)
    assert (event.outcome, event.reason, event.target) == ("failure", "locked_out", "")
    assert event.details == {}
    assert_no_secret(event, PASSWORD, b"b" * 80, pcp.session_id)


def backup_item(actor: Actor, case_id: Any, epoch: int) -> tuple[dict[str, Any], bytes]:
    sealed = seal_backup_item(backup_key(actor.identity.uik_seed), case_id, epoch, os.urandom(32))
    return {"case": str(case_id), "epoch": epoch, "item": b64e(sealed)}, sealed


@emits(AuditAction.KEY_BACKUP_STORED)
def test_key_backup_upload_records_counts_not_items() -> None:
    pcp = Actor("pcp").register()
    state = pcp.open_case()
    (one, sealed_one), (two, sealed_two) = (backup_item(pcp, state.case_id, e) for e in (0, 1))
    assert pcp.call("PUT", "/api/key-backup", {"items": [one]}).status_code == 200
    before = head()
    response = pcp.call("PUT", "/api/key-backup", {"items": [one, two]})
    assert response.json() == {"stored": 1, "kept": 1}
    event = only_event(before, AuditAction.KEY_BACKUP_STORED)
    assert_place(event, actor=pcp.user, device=pcp.device.device_id)
    assert (event.outcome, event.reason) == ("success", "")
    assert event.target == f"user:{pcp.user.pk}"
    assert event.details == {"count": 2, "stored": 1}
    assert_no_secret(event, sealed_one, sealed_two, *key_secrets(pcp), pcp.session_id)


@emits(AuditAction.KEY_BACKUP_READ)
def test_key_backup_read_records_the_case_the_epoch_and_the_count() -> None:
    pcp = Actor("pcp").register()
    state = pcp.open_case()
    items = [backup_item(pcp, state.case_id, e) for e in (0, 1, 2)]
    body = {"items": [wire for wire, _ in items]}
    assert pcp.call("PUT", "/api/key-backup", body).status_code == 200
    before = head()
    response = pcp.call("GET", f"/api/key-backup?case={state.case_id}&after=0")
    assert [i["epoch"] for i in response.json()["items"]] == [1, 2]
    event = only_event(before, AuditAction.KEY_BACKUP_READ)
    assert_place(event, actor=pcp.user, device=pcp.device.device_id, case=state.case_id)
    assert (event.outcome, event.reason) == ("success", "")
    assert event.target == f"case:{state.case_id}"
    assert event.details == {"count": 2, "after": 0}
    assert_no_secret(event, *(sealed for _, sealed in items), *key_secrets(pcp), pcp.session_id)


@emits(AuditAction.IDENTITY_RESET, AuditAction.DEVICE_REVOKED)
def test_identity_reset_records_the_operator_and_each_device() -> None:
    derm = Actor("derm", specialty="Dermatology").register()
    second = DeviceKeys.generate(derm.user.pk)
    body = {"cert": derm.identity.certify(second).to_wire(), "name": "phone"}
    assert derm.call("POST", "/api/devices", body).status_code == 201
    ops = User.objects.create_user(username="ops", password="x-ops-1", role="admin")
    before = head()
    call_command("identity_reset", "derm", "--yes", "--by", "ops", stdout=io.StringIO())
    *revoked, reset = written(before)
    devices = set(Device.objects.filter(user=derm.user).values_list("pk", flat=True))
    assert {e.device_id for e in revoked} == devices and len(revoked) == 2
    for event in revoked:
        assert event.action == AuditAction.DEVICE_REVOKED
        assert_place(event, actor=ops, device=event.device_id)
        assert (event.outcome, event.reason) == ("success", "identity reset")
        assert (event.target, event.details) == (f"device:{event.device_id}", {"by": "ops"})
    assert reset.action == AuditAction.IDENTITY_RESET
    assert_place(reset, actor=ops)
    assert (reset.outcome, reset.reason) == ("success", "identity reset")
    assert reset.target == f"user:{derm.user.pk}"
    # One session: the one the derm actor signed in with (its devices never proved
    # themselves in another).
    assert reset.details == {
        "by": "ops",
        "devices_revoked": 2,
        "sessions_ended": 1,
        "identity_deleted": True,
    }
    for event in (*revoked, reset):
        assert_no_secret(event, *key_secrets(derm), derm.session_id)
