"""A reset retires the old identity key, and which devices belong to the current identity
is recorded at registration rather than read off clocks.

The attacker: whoever holds the old identity key's secret (a stolen device) and can sign
in as the user. Before the fix they registered the old key again before the real user set
up, their devices chained to it, and every roster still naming it let them back in."""

from __future__ import annotations

import importlib
import io
import threading
from datetime import timedelta
from typing import Any

import pytest
from django.apps import apps
from django.core.management import call_command
from django.db import connection, transaction
from django.utils import timezone

from collab.accounts import devices, services
from collab.accounts.models import Device, IdentityKey, RetiredIdentityKey
from collab.cases import models as m
from collab.cases import selectors
from collab.client.case_state import CaseState
from collab.client.keys import DeviceKeys, Identity
from collab.crypto.actions import sign_enrol
from collab.crypto.wire import b64e
from collab.errors import ServiceError
from tests.support.actor import Actor
from tests.support.users import verified_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def pcp() -> Actor:
    return Actor("pcp").register()


@pytest.fixture
def derm() -> Actor:
    return Actor("derm", specialty="Dermatology").register()


def reset(username: str) -> None:
    call_command("identity_reset", username, "--yes", stdout=io.StringIO())


def register_identity(actor: Actor, identity: Identity) -> Any:
    body = {"uik_pub": b64e(identity.uik_pub)}
    return actor.call("POST", "/api/identity", body, device=False)


def register_device(actor: Actor, identity: Identity) -> tuple[DeviceKeys, Any]:
    device = DeviceKeys.generate(actor.user.pk)
    body = {"cert": identity.certify(device).to_wire(), "name": "x"}
    return device, actor.call("POST", "/api/devices", body, device=False)


def test_the_old_key_cannot_be_registered_again_after_a_reset(derm: Actor) -> None:
    thief = Identity(derm.user.pk, derm.identity.uik_seed)
    reset("derm")
    (retired,) = RetiredIdentityKey.objects.filter(user=derm.user)
    assert bytes(retired.uik_pub) == thief.uik_pub
    derm.client = verified_client(derm.user)  # the thief signs in as the user
    response = register_identity(derm, thief)
    assert response.status_code == 409 and response.json()["error"] == "identity_retired"
    assert not IdentityKey.objects.filter(user=derm.user).exists()
    # With no identity registered, no device certified by the old key gets in.
    _device, response = register_device(derm, thief)
    assert response.status_code == 400 and response.json()["error"] == "no_identity"
    # The real user then sets up with the first-use flow; the old key stays refused.
    fresh = Identity.generate(derm.user.pk)
    assert register_identity(derm, fresh).status_code == 200
    _device, response = register_device(derm, fresh)
    assert response.status_code == 201
    response = register_identity(derm, thief)
    assert response.status_code == 409 and response.json()["error"] == "identity_retired"


def test_nobody_else_may_register_a_retired_key(derm: Actor) -> None:
    old = derm.identity
    reset("derm")
    other = Actor("other", specialty="Dermatology")
    response = register_identity(other, Identity(other.user.pk, old.uik_seed))
    assert response.status_code == 409 and response.json()["error"] == "identity_retired"


def test_a_retired_key_put_back_in_the_database_certifies_no_device(
    pcp: Actor, derm: Actor
) -> None:
    """Even if the old key reappears as the registered one (restored row, operator
    mistake), no device it certifies is registered, so none enters a roster."""
    state = pcp.open_case()
    assert pcp.add(state, derm).status_code == 201
    thief = Identity(derm.user.pk, derm.identity.uik_seed)
    reset("derm")
    IdentityKey.objects.create(user=derm.user, uik_pub=thief.uik_pub)
    derm.client = verified_client(derm.user)
    stolen, response = register_device(derm, thief)
    assert response.status_code == 409 and response.json()["error"] == "identity_retired"
    assert not Device.objects.filter(pk=stolen.device_id).exists()
    # Its enrolment entry names an unregistered device and is refused.
    stolen_cert = thief.certify(stolen)
    derm.device, derm.cert, derm._signer = stolen, stolen_cert, None
    head = state.head
    enrol = sign_enrol(
        thief.uik_seed, state.case_id, head.epoch + 1, head.entry_hash(), stolen_cert
    )
    as_thief = CaseState(state.case_id, stolen)
    as_thief.accept_entries([state.chain[e] for e in sorted(state.chain)])
    before = m.LogEntry.objects.filter(case_id=state.case_id).count()
    response = derm.submit(as_thief, enrol)
    assert response.status_code == 403 and response.json()["error"] == "unknown_device"
    assert m.LogEntry.objects.filter(case_id=state.case_id).count() == before


def test_a_device_records_the_identity_key_that_certified_it(derm: Actor) -> None:
    device = Device.objects.get(pk=derm.device.device_id)
    assert device.uik_pub is not None and bytes(device.uik_pub) == derm.identity.uik_pub


def test_readable_epochs_do_not_depend_on_the_clocks(pcp: Actor) -> None:
    """A host whose clock ran ahead when the identity was registered (or behind when the
    device was) used to deny the user's first device its own case's history."""
    state = pcp.open_case()
    ahead = timezone.now() + timedelta(hours=1)
    IdentityKey.objects.filter(user=pcp.user).update(created_at=ahead)
    epochs = set(selectors.readable_epochs(case_id=state.case_id, device_id=pcp.device.device_id))
    assert epochs == {0}


def test_after_a_reset_the_old_devices_epochs_are_not_served_whatever_the_clocks(
    pcp: Actor, derm: Actor
) -> None:
    state = pcp.open_case()
    assert pcp.add(state, derm).status_code == 201  # derm's old device has a wrap at 1
    reset("derm")
    derm.client = verified_client(derm.user)
    fresh = Identity.generate(derm.user.pk)
    assert register_identity(derm, fresh).status_code == 200
    device, response = register_device(derm, fresh)
    assert response.status_code == 201
    # Even with the new identity's timestamp before the old device's.
    IdentityKey.objects.filter(user=derm.user).update(created_at=timezone.now() - timedelta(days=1))
    assert not set(selectors.readable_epochs(case_id=state.case_id, device_id=device.device_id))


def test_the_migration_records_the_key_of_devices_that_chain_to_it(derm: Actor) -> None:
    """Existing devices: the registered key when their certificate verifies under it,
    None for a device of an identity reset earlier."""
    migration = importlib.import_module(
        "collab.accounts.migrations.0005_device_uik_retired_identity"
    )
    orphan = Actor("orphan", specialty="Dermatology").register()
    orphan_device = orphan.device.device_id
    Device.objects.filter(pk=orphan_device).update(revoked_at=timezone.now())
    IdentityKey.objects.filter(user=orphan.user).update(
        uik_pub=Identity.generate(orphan.user.pk).uik_pub
    )
    Device.objects.update(uik_pub=None)
    migration.record_certifying_keys(apps, None)
    recorded = Device.objects.get(pk=derm.device.device_id).uik_pub
    assert recorded is not None and bytes(recorded) == derm.identity.uik_pub
    assert Device.objects.get(pk=orphan_device).uik_pub is None


def _blocked_by(pid: int) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))", [pid]
        )
        (count,) = cursor.fetchone()
    return int(count)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_registration_racing_the_reset_lands_no_device_under_the_retired_key() -> None:
    """The thief registers a device certified by the old key while the reset is under
    way: it must wait for the reset and then find no identity, not slip in after it."""
    derm = Actor("derm", specialty="Dermatology").register()
    thief = Identity(derm.user.pk, derm.identity.uik_seed)
    stolen = thief.certify(DeviceKeys.generate(derm.user.pk))
    reset_done, release = threading.Event(), threading.Event()
    outcome: list[str] = []
    resetter_pid: list[int] = []

    def reset_slowly() -> None:
        try:
            with transaction.atomic():
                services.identity_reset(user=derm.user, by="test")
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_backend_pid()")
                    resetter_pid.append(cursor.fetchone()[0])
                reset_done.set()
                assert release.wait(30)
        finally:
            connection.close()

    def register() -> None:
        try:
            devices.device_register(user=derm.user, cert=stolen)
            outcome.append("registered")
        except ServiceError as refused:
            outcome.append(refused.code)
        finally:
            connection.close()

    resetter = threading.Thread(target=reset_slowly)
    resetter.start()
    assert reset_done.wait(30)
    registrar = threading.Thread(target=register)
    registrar.start()
    while _blocked_by(resetter_pid[0]) < 1 and registrar.is_alive():
        pass  # the registration is queued behind the reset's row lock
    release.set()
    resetter.join()
    registrar.join()
    assert outcome == ["no_identity"]
    assert not Device.objects.filter(pk=stolen.device_id).exists()
