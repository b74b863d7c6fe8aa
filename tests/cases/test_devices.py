"""Identity keys, device certificates, the identity backup and revocation."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import pytest
from django.db import connection

from collab.accounts import devices
from collab.accounts.models import Device
from collab.client.keys import DeviceKeys, Identity
from collab.crypto.devcert import DeviceCert
from collab.crypto.wire import b64e
from collab.errors import Conflict
from tests.support.actor import Actor
from tests.support.users import make_user, verified_client

pytestmark = pytest.mark.django_db


def test_identity_is_registered_once_and_never_replaced() -> None:
    pcp = Actor("pcp").register()
    same = pcp.call("POST", "/api/identity", {"uik_pub": b64e(pcp.identity.uik_pub)})
    assert same.status_code == 200
    other = Identity.generate(pcp.user.pk)
    swap = pcp.call("POST", "/api/identity", {"uik_pub": b64e(other.uik_pub)})
    assert (swap.status_code, swap.json()["error"]) == (409, "identity_exists")
    assert pcp.call("GET", "/api/identity").json()["uik_pub"] == b64e(pcp.identity.uik_pub)


def test_low_order_identity_key_is_refused() -> None:
    pcp = Actor("pcp")
    response = pcp.call("POST", "/api/identity", {"uik_pub": b64e(bytes(32))})
    assert response.status_code == 400


def test_device_needs_a_certificate_from_the_users_identity() -> None:
    pcp = Actor("pcp").register()
    stranger = Identity.generate(pcp.user.pk)
    device = DeviceKeys.generate(pcp.user.pk)
    forged = stranger.certify(device)
    response = pcp.call("POST", "/api/devices", {"cert": forged.to_wire()})
    assert (response.status_code, response.json()["error"]) == (400, "bad_certificate")
    assert not Device.objects.filter(pk=device.device_id).exists()


def test_device_certificate_for_another_user_is_refused() -> None:
    pcp = Actor("pcp").register()
    derm = Actor("derm").register()
    device = DeviceKeys.generate(derm.user.pk)
    cert = derm.identity.certify(device)
    response = pcp.call("POST", "/api/devices", {"cert": cert.to_wire()})
    assert (response.status_code, response.json()["error"]) == (403, "wrong_user")


def test_device_with_low_order_key_is_refused() -> None:
    pcp = Actor("pcp").register()
    device = DeviceKeys.generate(pcp.user.pk)
    cert = pcp.identity.certify(device)
    bad = dataclasses.replace(cert, dxk_pub=bytes(32))
    response = pcp.call("POST", "/api/devices", {"cert": bad.to_wire()})
    assert response.status_code == 400
    assert response.json()["error"] in {"low_order_key", "bad_certificate"}


def test_identity_backup_belongs_to_its_owner() -> None:
    pcp = Actor("pcp").register()
    derm = Actor("derm").register()
    assert (
        pcp.call("PUT", "/api/identity/backup", {"ciphertext": b64e(b"sealed" * 10)}).status_code
        == 200
    )
    assert pcp.call("GET", "/api/identity/backup").json()["ciphertext"] == b64e(b"sealed" * 10)
    assert derm.call("GET", "/api/identity/backup").status_code == 404
    too_big = pcp.call("PUT", "/api/identity/backup", {"ciphertext": b64e(bytes(5000))})
    assert (too_big.status_code, too_big.json()["error"]) == (400, "bad_backup")


def test_user_revokes_own_device_and_it_can_no_longer_act() -> None:
    pcp = Actor("pcp").register()
    state = pcp.open_case()
    other_session = verified_client(pcp.user)  # e.g. the user's phone, signed in apart
    response = pcp.call("POST", f"/api/devices/{pcp.device.device_id}/revoke", {})
    assert response.status_code == 200 and response.json()["revoked_at"]
    # The session the device proved itself in has ended with the revocation.
    ended = pcp.call("GET", f"/api/cases/{state.case_id}/messages")
    assert (ended.status_code, ended.json()["error"]) == (401, "unauthenticated")
    pcp.client = other_session
    history = pcp.call("GET", f"/api/cases/{state.case_id}/messages")
    assert (history.status_code, history.json()["error"]) == (403, "device_revoked")
    detail = pcp.call("GET", f"/api/cases/{state.case_id}").json()
    assert detail["revoked_devices"] == [str(pcp.device.device_id)]


def test_other_users_cannot_revoke_a_device() -> None:
    pcp = Actor("pcp").register()
    derm = Actor("derm").register()
    response = derm.call("POST", f"/api/devices/{pcp.device.device_id}/revoke", {"reason": "x"})
    assert (response.status_code, response.json()["error"]) == (403, "not_your_device")
    assert Device.objects.get(pk=pcp.device.device_id).revoked_at is None


def test_admin_revokes_with_a_reason_only() -> None:
    pcp = Actor("pcp").register()
    admin = make_user("admin", role="admin")
    client = verified_client(admin)
    path = f"/api/devices/{pcp.device.device_id}/revoke"
    no_reason = client.post(path, data="{}", content_type="application/json")
    assert (no_reason.status_code, no_reason.json()["error"]) == (400, "reason_required")
    done = client.post(path, data='{"reason": "reported lost"}', content_type="application/json")
    assert done.status_code == 200
    device = Device.objects.get(pk=pcp.device.device_id)
    assert (device.revoke_reason, device.revoked_by_id) == ("reported lost", admin.pk)


def test_a_user_registers_at_most_max_devices_per_user(settings: Any) -> None:
    settings.MAX_DEVICES_PER_USER = 3
    pcp = Actor("pcp").register()  # the first of three
    certs = [pcp.identity.certify(DeviceKeys.generate(pcp.user.pk)) for _ in range(3)]
    for cert in certs[:2]:
        assert pcp.call("POST", "/api/devices", {"cert": cert.to_wire()}).status_code == 201
    over = pcp.call("POST", "/api/devices", {"cert": certs[2].to_wire()})
    assert (over.status_code, over.json()["error"]) == (409, "too_many_devices")
    assert over.json()["max_devices"] == 3
    assert not Device.objects.filter(pk=certs[2].device_id).exists()
    # Registering a device again at the cap is the same device, not a new one.
    again = pcp.call("POST", "/api/devices", {"cert": certs[0].to_wire()})
    assert again.status_code == 201
    # Only active devices count: after a revocation the place is free again.
    devices.device_revoke(actor=pcp.user, device_id=certs[0].device_id)
    assert pcp.call("POST", "/api/devices", {"cert": certs[2].to_wire()}).status_code == 201
    assert Device.objects.filter(user=pcp.user, revoked_at__isnull=True).count() == 3


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_registrations_cannot_both_take_the_last_place(settings: Any) -> None:
    settings.MAX_DEVICES_PER_USER = 2
    pcp = Actor("pcp").register()  # one place left
    certs = [pcp.identity.certify(DeviceKeys.generate(pcp.user.pk)) for _ in range(4)]
    barrier = threading.Barrier(len(certs))
    outcomes: list[str] = []

    def register(cert: DeviceCert) -> None:
        try:
            barrier.wait()
            devices.device_register(user=pcp.user, cert=cert)
            outcomes.append("registered")
        except Conflict as refused:
            outcomes.append(refused.code)
        finally:
            connection.close()

    threads = [threading.Thread(target=register, args=(c,)) for c in certs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["registered"] + ["too_many_devices"] * 3
    assert Device.objects.filter(user=pcp.user, revoked_at__isnull=True).count() == 2
