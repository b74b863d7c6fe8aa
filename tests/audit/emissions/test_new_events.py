"""Emission tests for leave requests, urgent acknowledgements, wrap, log and identity
backup reads, live deliveries over the case-room socket, and sign-in failures reached
from the admin site. Each drives the real path (the Django test client with device
proofs, or the real consumer) and asserts every field of what was written."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async as sync_to_async
from django.test import Client

from collab.accounts.models import User
from collab.audit.models import AuditAction, AuditEvent
from collab.cases.models import KeyWrap, LeaveRequest
from collab.client.case_state import CaseState
from collab.crypto.actions import sign_leave
from collab.crypto.wire import b64e
from tests.audit.emissions import emits
from tests.audit.emissions.test_cases import assert_no_content, expected, fields, head_seq, only
from tests.audit.emissions.test_cases import written as written_since
from tests.cases.test_consults import _next, _socket
from tests.support.actor import Actor
from tests.support.users import PASSWORD, make_user, totp_code

UA = "emission-test/1.0"


def consult(pcp: Actor, derm: Actor) -> CaseState:
    state = pcp.open_case(specialty="Dermatology")
    assert pcp.add(state, derm).status_code == 201
    derm.join(state.case_id)
    return state


# --- leave requests ------------------------------------------------------------------


@pytest.mark.django_db
@emits(AuditAction.LEAVE_REQUESTED)
def test_leave_request_is_recorded_and_a_refused_one_is_not() -> None:
    pcp, derm = Actor("pcp").register(), Actor("derm", specialty="Dermatology").register()
    state = consult(pcp, derm)
    path = f"/api/cases/{state.case_id}/leave"
    epoch = derm.cases[state.case_id].head.epoch
    leave = sign_leave(
        derm.device.dsk_seed, state.case_id, derm.user.pk, derm.device.device_id, epoch
    )
    body = {"device": str(leave.device_id), "epoch": epoch}
    # Refused (a signature that does not verify): nothing stored, nothing recorded.
    before = head_seq()
    assert derm.call("POST", path, {**body, "signature": b64e(bytes(64))}).status_code == 400
    assert written_since(before) == []
    before = head_seq()
    response = derm.call("POST", path, {**body, "signature": b64e(leave.signature)})
    assert response.status_code == 201, response.content
    stored = LeaveRequest.objects.get()
    event = only(before, AuditAction.LEAVE_REQUESTED)
    assert fields(event) == expected(
        AuditAction.LEAVE_REQUESTED,
        actor=derm.user,
        device=derm.device.device_id,
        case=state.case_id,
        target=f"leave:{stored.pk}",
        details={"epoch": epoch},
    )
    assert_no_content(event, leave.signature, derm.device.dsk_seed)
    # A second request while one is pending is refused (409) and records nothing.
    before = head_seq()
    assert derm.call("POST", path, {**body, "signature": b64e(leave.signature)}).status_code == 409
    assert written_since(before) == []


# --- the membership log and the key wraps --------------------------------------------


@pytest.mark.django_db
@emits(AuditAction.LOG_READ)
def test_log_read_records_the_epochs_served() -> None:
    pcp, derm = Actor("pcp").register(), Actor("derm", specialty="Dermatology").register()
    state = consult(pcp, derm)
    path = f"/api/cases/{state.case_id}/log"
    before = head_seq()
    response = derm.send("GET", path, b"", extra={"HTTP_USER_AGENT": UA})
    assert response.status_code == 200
    raw = [e["entry"] for e in response.json()["entries"]]
    event = only(before, AuditAction.LOG_READ)
    assert fields(event) == expected(
        AuditAction.LOG_READ,
        actor=derm.user,
        case=state.case_id,
        target=f"case:{state.case_id}",
        details={"after": -1, "from_epoch": 0, "to_epoch": 1, "count": 2},
    )
    assert event.user_agent == UA
    assert_no_content(event, *raw)
    # A page with nothing in it served nothing: not recorded.
    before = head_seq()
    assert derm.call("GET", f"{path}?after=1").json()["entries"] == []
    assert written_since(before) == []
    # A non-member is refused and reads nothing.
    outsider = Actor("outsider").register()
    before = head_seq()
    assert outsider.call("GET", path).status_code == 403
    assert AuditAction.LOG_READ not in [e.action for e in written_since(before)]


@pytest.mark.django_db
@emits(AuditAction.WRAPS_READ)
def test_wraps_read_records_epochs_and_count_never_the_wraps() -> None:
    pcp, derm = Actor("pcp").register(), Actor("derm", specialty="Dermatology").register()
    state = consult(pcp, derm)
    path = f"/api/cases/{state.case_id}/wraps"
    before = head_seq()
    response = derm.call("GET", path)
    assert response.status_code == 200
    served = response.json()["wraps"]
    assert [w["epoch"] for w in served] == [1]
    event = only(before, AuditAction.WRAPS_READ)
    device = derm.device.device_id
    assert fields(event) == expected(
        AuditAction.WRAPS_READ,
        actor=derm.user,
        device=device,
        case=state.case_id,
        target=f"device:{device}",
        details={"from_epoch": 1, "to_epoch": 1, "count": 1},
    )
    wrap = KeyWrap.objects.get(case_id=state.case_id, device_id=device)
    assert_no_content(event, bytes(wrap.ciphertext), served[0]["ciphertext"])
    # Another user's device named in the header: refused, nothing read.
    before = head_seq()
    assert pcp.call("GET", path, as_device=device).status_code in (403, 404)
    assert AuditAction.WRAPS_READ not in [e.action for e in written_since(before)]


# --- the identity backup -------------------------------------------------------------


@pytest.mark.django_db
@emits(AuditAction.IDENTITY_BACKUP_READ)
def test_identity_backup_read_records_its_size_only() -> None:
    pcp = Actor("pcp").register()
    path = "/api/identity/backup"
    # No backup yet: 404, and nothing was served, so nothing is recorded.
    before = head_seq()
    assert pcp.call("GET", path).status_code == 404
    assert written_since(before) == []
    sealed = bytes(range(200))
    # Storing it (and the echo of what was stored) is not a read.
    before = head_seq()
    assert pcp.call("PUT", path, {"ciphertext": b64e(sealed)}).status_code == 200
    assert AuditAction.IDENTITY_BACKUP_READ not in [e.action for e in written_since(before)]
    before = head_seq()
    response = pcp.call("GET", path)
    assert response.status_code == 200 and response.json()["ciphertext"] == b64e(sealed)
    event = only(before, AuditAction.IDENTITY_BACKUP_READ)
    assert fields(event) == expected(
        AuditAction.IDENTITY_BACKUP_READ,
        actor=pcp.user,
        target=f"user:{pcp.user.pk}",
        details={"size": 200},
    )
    assert_no_content(event, sealed)


# --- the case-room socket --------------------------------------------------------------


async def _events(action: str, user: User, want: int) -> list[AuditEvent]:
    """The events of ``action`` by ``user``, waiting (briefly) for ``want`` of them:
    deliveries are recorded off the relay, just after the frame went out."""

    def read() -> list[AuditEvent]:
        return list(AuditEvent.objects.filter(action=action, actor=user).order_by("seq"))

    found: list[AuditEvent] = []
    for _ in range(100):
        found = await sync_to_async(read)()
        if len(found) >= want:
            return found
        await asyncio.sleep(0.05)
    return found


@pytest.mark.django_db(transaction=True)
@emits(AuditAction.MESSAGES_DELIVERED)
async def test_first_live_delivery_per_socket_is_recorded_not_own_echoes() -> None:
    pcp = await sync_to_async(lambda: Actor("pcp").register())()
    derm = await sync_to_async(lambda: Actor("derm", specialty="Dermatology").register())()
    state = await sync_to_async(consult)(pcp, derm)
    pcp_ws = await _socket(pcp, state)
    derm_ws = await _socket(derm, state)
    seal = sync_to_async(lambda text: pcp.cases[state.case_id].seal({"text": text}))
    first = await seal("first")
    await pcp_ws.send_json_to({"type": "send", "envelope": first.to_wire()})
    ack = await _next(pcp_ws, "ack")
    assert (await _next(derm_ws, "message"))["seq"] == ack["seq"]
    assert (await _next(pcp_ws, "message"))["seq"] == ack["seq"]  # its own, echoed
    second = await seal("second")
    await pcp_ws.send_json_to({"type": "send", "envelope": second.to_wire()})
    await _next(derm_ws, "message")
    await _next(pcp_ws, "message")
    (event,) = await _events(AuditAction.MESSAGES_DELIVERED, derm.user, 1)
    assert fields(event) == expected(
        AuditAction.MESSAGES_DELIVERED,
        actor=derm.user,
        device=derm.device.device_id,
        case=state.case_id,
        target=f"message:{ack['seq']}",
        details={"first_seq": ack["seq"]},
    )
    assert_no_content(event, first.ct, second.ct, first.sig)
    # pcp saw only its own messages echoed: nothing delivered to it yet.
    assert await _events(AuditAction.MESSAGES_DELIVERED, pcp.user, 1) == []
    reply = await sync_to_async(lambda: derm.cases[state.case_id].seal({"text": "ok"}))()
    await derm_ws.send_json_to({"type": "send", "envelope": reply.to_wire()})
    reply_ack = await _next(derm_ws, "ack")
    await _next(pcp_ws, "message")
    (to_pcp,) = await _events(AuditAction.MESSAGES_DELIVERED, pcp.user, 1)
    assert (to_pcp.device_id, to_pcp.details) == (
        pcp.device.device_id,
        {"first_seq": reply_ack["seq"]},
    )
    await pcp_ws.disconnect()
    # A second socket of derm's device is a delivery of its own, recorded for its own
    # first message; derm's first socket hears that message too and records nothing more.
    derm_again = await _socket(derm, state)
    pcp_ws = await _socket(pcp, state)
    third = await seal("third")
    await pcp_ws.send_json_to({"type": "send", "envelope": third.to_wire()})
    third_ack = await _next(pcp_ws, "ack")
    await _next(derm_again, "message")
    await _next(derm_ws, "message")
    await _events(AuditAction.MESSAGES_DELIVERED, derm.user, 2)
    await asyncio.sleep(0.3)
    deliveries = await _events(AuditAction.MESSAGES_DELIVERED, derm.user, 3)
    assert [e.details["first_seq"] for e in deliveries] == [ack["seq"], third_ack["seq"]]
    for ws in (pcp_ws, derm_ws, derm_again):
        await ws.disconnect()


@pytest.mark.django_db(transaction=True)
@emits(AuditAction.URGENT_ACKNOWLEDGED)
async def test_first_urgent_acknowledgement_is_recorded_a_repeat_is_not() -> None:
    pcp = await sync_to_async(lambda: Actor("pcp").register())()
    derm = await sync_to_async(lambda: Actor("derm", specialty="Dermatology").register())()
    state = await sync_to_async(consult)(pcp, derm)
    pcp_ws = await _socket(pcp, state)
    derm_ws = await _socket(derm, state)
    urgent = await sync_to_async(lambda: pcp.cases[state.case_id].seal({"text": "now"}))()
    await pcp_ws.send_json_to({"type": "send", "envelope": urgent.to_wire(), "urgent": True})
    seq = (await _next(pcp_ws, "ack"))["seq"]
    await _next(derm_ws, "message")
    await derm_ws.send_json_to({"type": "ack_urgent", "seq": seq})
    assert (await _next(derm_ws, "urgent_ack"))["duplicate"] is False
    (event,) = await _events(AuditAction.URGENT_ACKNOWLEDGED, derm.user, 1)
    assert fields(event) == expected(
        AuditAction.URGENT_ACKNOWLEDGED,
        actor=derm.user,
        device=derm.device.device_id,
        case=state.case_id,
        target=f"message:{seq}",
        details={"seq": seq},
    )
    assert_no_content(event, urgent.ct)
    # A repeat answers the first acknowledgement and records nothing more.
    await derm_ws.send_json_to({"type": "ack_urgent", "seq": seq})
    assert (await _next(derm_ws, "urgent_ack"))["duplicate"] is True
    # A plain message cannot be acknowledged: refused, nothing recorded.
    plain = await sync_to_async(lambda: pcp.cases[state.case_id].seal({"text": "fyi"}))()
    await pcp_ws.send_json_to({"type": "send", "envelope": plain.to_wire()})
    plain_seq = (await _next(pcp_ws, "ack"))["seq"]
    await derm_ws.send_json_to({"type": "ack_urgent", "seq": plain_seq})
    assert (await _next(derm_ws, "error"))["code"] == "not_urgent"
    assert len(await _events(AuditAction.URGENT_ACKNOWLEDGED, derm.user, 2)) == 1
    for ws in (pcp_ws, derm_ws):
        await ws.disconnect()


# --- the admin site signs in through the audited sign-in ------------------------------


@pytest.mark.django_db
@emits(AuditAction.SIGN_IN_FAILED)
def test_admin_sign_in_goes_through_the_audited_sign_in() -> None:
    staff = make_user("staff")
    User.objects.filter(pk=staff.pk).update(is_staff=True, is_superuser=True)
    client = Client()
    # The admin's own form is never shown: /admin/ sends to /admin/login/, which sends
    # to the project's sign-in with the admin as next.
    response = client.get("/admin/", follow=True)
    assert response.redirect_chain[-1][0] == "/accounts/login/?next=%2Fadmin%2F"
    # Its form posted anyway is only redirected: nothing is signed in by it.
    posted = client.post("/admin/login/", {"username": "staff", "password": PASSWORD})
    assert posted.status_code == 302 and "_auth_user_id" not in client.session
    # A wrong password on that path is a recorded SIGN_IN_FAILED.
    before = head_seq()
    login = "/accounts/login/?next=%2Fadmin%2F"
    assert client.post(login, {"username": "staff", "password": "wrong-pass-1"}).status_code == 401
    event = only(before, AuditAction.SIGN_IN_FAILED)
    assert fields(event) == expected(
        AuditAction.SIGN_IN_FAILED,
        actor=staff,
        outcome="failure",
        reason="bad_credentials",
        details={"known_user": True},
    )
    assert_no_content(event, "wrong-pass-1", PASSWORD)
    # The right password and the second factor reach the admin.
    step = client.post(login, {"username": "staff", "password": PASSWORD})
    assert step.status_code == 302 and step["Location"] == "/accounts/otp/?next=%2Fadmin%2F"
    assert client.get("/admin/").status_code == 302  # the second factor first
    done = client.post(step["Location"], {"code": totp_code(staff)})
    assert (done.status_code, done["Location"]) == (302, "/admin/")
    page = client.get("/admin/")
    assert page.status_code == 200 and b"Site administration" in page.content


@pytest.mark.django_db
def test_admin_login_does_not_pass_on_a_foreign_next() -> None:
    make_user("staff")
    client = Client()
    response = client.get("/admin/login/?next=https://evil.example/", follow=True)
    login = response.redirect_chain[-1][0]
    step = client.post(login, {"username": "staff", "password": PASSWORD})
    # The sign-in checks next (accounts.views._next_url): a foreign one is dropped.
    assert (step.status_code, step["Location"]) == (302, "/accounts/otp/?next=%2F")
