"""Revocation that cuts off: a revoked device gets nothing, whatever session it uses or
device it names; its sessions end; no entry but a removal keeps it in a roster."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.contrib.sessions.models import Session

from collab.accounts.models import DeviceSession
from collab.asgi import application
from collab.audit.models import AuditAction, AuditEvent
from collab.cases.models import LogEntry
from collab.client.keys import DeviceKeys
from collab.crypto.actions import AddDeviceBody, RemoveDeviceBody, RotateBody
from collab.crypto.wire import b64e
from tests.support.actor import Actor
from tests.support.users import session_cookie, verified_client
from tests.support.ws import answer_challenge, remember_device, room_path

pytestmark = pytest.mark.django_db


def second_device(actor: Actor, state: Any) -> Actor:
    """The same user on another device ("the laptop"), added to the case; the original
    actor stays the phone. Returns an Actor whose calls act as the laptop."""
    laptop = copy.copy(actor)
    laptop.client = verified_client(actor.user)
    laptop.device = DeviceKeys.generate(actor.user.pk)
    laptop._signer = None
    laptop.cert = actor.identity.certify(laptop.device)
    remember_device(laptop.device.device_id, laptop.device.dsk_seed)
    response = laptop.call("POST", "/api/devices", {"cert": laptop.cert.to_wire(), "name": "l"})
    assert response.status_code == 201, response.content
    assert actor.submit(state, AddDeviceBody(laptop.cert)).status_code == 201
    return laptop


def revoke(by: Actor, device_id: Any) -> None:
    response = by.call("POST", f"/api/devices/{device_id}/revoke", {})
    assert response.status_code == 200, response.content


def test_revoked_device_gets_no_wraps_history_blobs_or_backup(pcp_case: Any) -> None:
    phone, laptop, state = pcp_case
    revoke(phone, laptop.device.device_id)
    laptop.client = verified_client(laptop.user)  # even in a fresh session of the user
    case = state.case_id
    for method, path, body in [
        ("GET", f"/api/cases/{case}/wraps", None),
        ("GET", f"/api/cases/{case}/messages", None),
        ("POST", f"/api/cases/{case}/blobs", {"size": 100}),
        ("GET", f"/api/key-backup?case={case}", None),
        ("POST", f"/api/cases/{case}/log", {"entry": b64e(b"x")}),
    ]:
        response = laptop.call(method, path, body)
        assert (response.status_code, response.json()["error"]) == (403, "device_revoked"), path


def test_revoked_devices_session_naming_another_device_is_refused(pcp_case: Any) -> None:
    """The laptop is revoked; whoever holds it names the user's phone. Its own session
    ended with the revocation, and in any other session the proof needs the phone's key."""
    phone, laptop, state = pcp_case
    stolen_session = laptop.client
    assert laptop.call("GET", f"/api/cases/{state.case_id}/wraps").status_code == 200
    revoke(phone, laptop.device.device_id)
    paths = [f"/api/cases/{state.case_id}/wraps", f"/api/cases/{state.case_id}/messages"]
    for path in paths:
        ended = laptop.call("GET", path, as_device=phone.device.device_id)
        assert (ended.status_code, ended.json()["error"]) == (401, "unauthenticated")
    laptop.client = verified_client(laptop.user)
    for path in paths:
        named = laptop.call("GET", path, as_device=phone.device.device_id)
        assert (named.status_code, named.json()["error"]) == (401, "bad_device_proof")
        bare = laptop.call("GET", path, as_device=phone.device.device_id, proof="1.a.b.c")
        assert (bare.status_code, bare.json()["error"]) == (401, "bad_device_proof")
    assert stolen_session.get("/api/cases").status_code == 401


def test_revocation_ends_the_sessions_the_device_proved_itself_in(pcp_case: Any) -> None:
    phone, laptop, state = pcp_case
    assert laptop.call("GET", f"/api/cases/{state.case_id}/wraps").status_code == 200
    key = laptop.session_id
    assert DeviceSession.objects.filter(session_key=key, device_id=laptop.device.device_id)
    revoke(phone, laptop.device.device_id)
    assert not Session.objects.filter(session_key=key).exists()
    assert Session.objects.filter(session_key=phone.session_id).exists()  # the phone stays
    event = AuditEvent.objects.get(action=AuditAction.DEVICE_SESSIONS_ENDED)
    assert event.details == {"sessions": 1}


def test_entry_keeping_a_revoked_device_is_refused(pcp_case: Any) -> None:
    phone, laptop, state = pcp_case
    revoke(phone, laptop.device.device_id)
    before = LogEntry.objects.count()
    rotate = phone.submit(state, RotateBody())
    assert rotate.status_code == 409
    assert rotate.json()["error"] == "revoked_device_in_roster"
    assert rotate.json()["devices"] == [str(laptop.device.device_id)]
    assert LogEntry.objects.count() == before
    # A removal shrinks the set and is accepted; then other entries go on.
    removal = RemoveDeviceBody(phone.user.pk, laptop.device.device_id)
    assert phone.submit(state, removal).status_code == 201
    assert phone.submit(state, RotateBody()).status_code == 201


@pytest.fixture
def pcp_case() -> tuple[Actor, Actor, Any]:
    return _pcp_case()


@pytest.mark.django_db(transaction=True)
async def test_revoked_device_gets_no_socket_and_its_open_socket_closes() -> None:
    from asgiref.sync import sync_to_async

    phone, laptop, state = await sync_to_async(_pcp_case)()

    async def open_socket(actor: Actor) -> WebsocketCommunicator:
        headers = [(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1"),
                   (b"cookie", session_cookie(actor.client).encode())]
        sock = WebsocketCommunicator(
            application, room_path(state.case_id, actor.device.device_id), headers=headers
        )
        assert (await sock.connect())[0]
        await answer_challenge(sock, state.case_id, actor.device.device_id)
        return sock

    live = await open_socket(laptop)
    assert (await live.receive_json_from(timeout=5))["type"] == "hello"
    await sync_to_async(revoke)(phone, laptop.device.device_id)
    codes = set()
    while True:
        out = await live.receive_output(timeout=5)
        if out["type"] == "websocket.close":
            codes.add(out["code"])
            break
    assert codes <= {4403, 4401}
    await live.disconnect()
    laptop.client = await sync_to_async(verified_client)(laptop.user)
    again = await open_socket(laptop)
    frame = await again.receive_json_from(timeout=5)
    assert (frame["type"], frame["code"]) == ("error", "device_revoked")
    assert (await again.receive_output(timeout=5))["code"] == 4403
    await again.disconnect()


def _pcp_case() -> tuple[Actor, Actor, Any]:
    phone = Actor("pcp").register()
    state = phone.open_case()
    return phone, second_device(phone, state), state
