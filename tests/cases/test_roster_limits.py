"""A member cannot make a case unusable by growing its roster: the roster cap, the
add_device rule and the checks' order (before the costly verification)."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import pytest

from collab.cases.models import LogEntry, MemberDevice
from collab.client.keys import DeviceKeys
from collab.crypto.actions import (
    AddDeviceBody,
    AddUserBody,
    CreateBody,
    RemoveDeviceBody,
    RotateBody,
)
from collab.crypto.devcert import DeviceCert
from collab.crypto.log import build_entry
from collab.crypto.roster import Role
from collab.crypto.wire import b64d, b64e
from tests.support.actor import Actor

pytestmark = pytest.mark.django_db


@pytest.fixture
def pcp() -> Actor:
    return Actor("pcp", specialty="Family medicine").register()


@pytest.fixture
def derm() -> Actor:
    return Actor("derm", specialty="Dermatology").register()


def another_device(actor: Actor) -> DeviceCert:
    """A second registered device of the actor's user."""
    cert = actor.identity.certify(DeviceKeys.generate(actor.user.pk))
    response = actor.call("POST", "/api/devices", {"cert": cert.to_wire(), "name": "spare"})
    assert response.status_code == 201, response.content
    return cert


def entries(case_id: uuid.UUID) -> int:
    return LogEntry.objects.filter(case_id=case_id).count()


def test_a_member_adds_their_own_device(pcp: Actor, derm: Actor) -> None:
    state = pcp.open_case()
    pcp.add(state, derm, Role.MEMBER)
    joined = derm.join(state.case_id)
    spare = another_device(derm)
    assert derm.submit(joined, AddDeviceBody(spare)).status_code == 201
    assert MemberDevice.objects.filter(case_id=state.case_id, device_id=spare.device_id).exists()


def test_a_member_cannot_add_another_users_device(pcp: Actor, derm: Actor) -> None:
    state = pcp.open_case()
    pcp.add(state, derm, Role.MEMBER)
    joined = derm.join(state.case_id)
    spare = another_device(pcp)  # pcp's own new device, added by derm
    response = derm.submit(joined, AddDeviceBody(spare), forged=True)
    assert (response.status_code, response.json()["error"]) == (403, "not_allowed")
    assert entries(state.case_id) == 2
    assert not MemberDevice.objects.filter(device_id=spare.device_id).exists()


def test_an_owner_adding_another_users_device_is_still_refused_by_cr1(
    pcp: Actor, derm: Actor
) -> None:
    """The server lets owners and admins past its own rule; CR1 §6.3 (add_device: the
    device's own user only) then refuses, so nobody adds another user's device."""
    state = pcp.open_case()
    pcp.add(state, derm, Role.MEMBER)
    spare = another_device(derm)
    response = pcp.submit(state, AddDeviceBody(spare), forged=True)
    assert (response.status_code, response.json()["error"]) == (403, "unauthorized_author")
    assert entries(state.case_id) == 2


def test_an_entry_growing_the_roster_past_the_cap_is_refused(
    pcp: Actor, derm: Actor, settings: Any
) -> None:
    settings.MAX_ROSTER_DEVICES = 3
    state = pcp.open_case()
    another_device(derm)
    assert pcp.add(state, derm).status_code == 201  # 1 + 2 devices: at the cap
    onc = Actor("onc", specialty="Oncology").register()
    response = pcp.add(state, onc)
    assert (response.status_code, response.json()["error"]) == (400, "roster_too_large")
    assert response.json()["max_devices"] == 3
    joined = derm.join(state.case_id)
    third = another_device(derm)
    response = derm.submit(joined, AddDeviceBody(third))
    assert (response.status_code, response.json()["error"]) == (400, "roster_too_large")
    assert entries(state.case_id) == 2
    assert MemberDevice.objects.filter(case_id=state.case_id).count() == 3


def test_the_cap_is_checked_before_the_entry_is_verified(
    pcp: Actor, derm: Actor, settings: Any
) -> None:
    """An oversized roster costs the server nothing: refused before one signature."""
    settings.MAX_ROSTER_DEVICES = 2
    state = pcp.open_case()
    another_device(derm)
    keys = pcp.call("GET", f"/api/users/{derm.user.pk}/keys").json()
    devices = tuple(DeviceCert.from_wire(d) for d in keys["devices"])
    entry = pcp.forge(state, AddUserBody(derm.user.pk, Role.MEMBER, b64d(keys["uik_pub"]), devices))
    unsigned = dataclasses.replace(entry, signature=bytes(64))
    response = pcp.call(
        "POST", f"/api/cases/{state.case_id}/log", {"entry": b64e(unsigned.encode())}
    )
    assert (response.status_code, response.json()["error"]) == (400, "roster_too_large")


def test_a_genesis_over_the_cap_is_refused(pcp: Actor, settings: Any) -> None:
    settings.MAX_ROSTER_DEVICES = 1
    spare = another_device(pcp)
    genesis, _ = build_entry(
        None, CreateBody(pcp.identity.uik_pub, tuple(sorted(
            (pcp.cert, spare), key=lambda c: c.user_id.bytes + c.device_id.bytes))),
        author_seed=pcp.device.dsk_seed, author_user_id=pcp.user.pk,
        author_device_id=pcp.device.device_id, created_ms=1,
        case_id=uuid.uuid4(),
    )
    response = pcp.call("POST", "/api/cases", {"genesis": b64e(genesis.encode())})
    assert (response.status_code, response.json()["error"]) == (400, "roster_too_large")


def test_a_case_over_a_lowered_cap_still_rotates_and_shrinks(
    pcp: Actor, derm: Actor, settings: Any
) -> None:
    state = pcp.open_case()
    spare = another_device(derm)
    pcp.add(state, derm)
    settings.MAX_ROSTER_DEVICES = 2  # lowered below the case's 3 devices
    assert pcp.submit(state, RotateBody()).status_code == 201
    joined = derm.join(state.case_id)
    assert derm.submit(joined, RemoveDeviceBody(derm.user.pk, spare.device_id)).status_code == 201
    # Back at the cap: growing again is refused.
    response = derm.submit(joined, AddDeviceBody(spare))
    assert (response.status_code, response.json()["error"]) == (400, "roster_too_large")
