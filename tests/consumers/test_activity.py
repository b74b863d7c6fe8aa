"""Automatic logoff counts only a person's actions: not read receipts on the socket, not
API reads (polls) over HTTP; and a session ends SESSION_ABSOLUTE_SECONDS after sign-in
whatever the activity."""

from __future__ import annotations

import time

import pytest
from channels.db import database_sync_to_async as sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.sessions.backends.db import SessionStore
from django.test import Client

from collab.accounts.policy import LAST_ACTIVITY_KEY, SIGNED_IN_KEY
from collab.asgi import application
from collab.audit.models import AuditAction, AuditEvent
from collab.cases.services.messages import message_send
from collab.consumers import base
from tests.support.rooms import build_room
from tests.support.users import make_user, verified_client
from tests.support.ws import answer_challenge, room_path

pytestmark = pytest.mark.django_db(transaction=True)

EARLIER = 100.0  # seconds ago: well inside the idle timeout


def last_activity(session_key: str) -> float:
    return float(SessionStore(session_key)[LAST_ACTIVITY_KEY])


def set_last_activity(session_key: str, when: float) -> None:
    session = SessionStore(session_key)
    session[LAST_ACTIVITY_KEY] = when
    session.save()


async def test_read_receipts_and_typing_stopped_are_not_activity_but_typing_is(monkeypatch) -> None:
    monkeypatch.setattr(base, "ACTIVITY_WRITE_SECONDS", 0.0)  # write on every counted frame
    (member,) = await sync_to_async(build_room)(1)
    case_id, device_id = member.state.case_id, member.device.device_id
    await sync_to_async(message_send)(
        user=member.user, device_id=device_id, case_id=case_id,
        envelope=member.state.seal({"text": "hello"}),
    )
    headers = [(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1"),
               (b"cookie", f"sessionid={member.session}".encode())]
    communicator = WebsocketCommunicator(application, room_path(case_id, device_id),
                                         headers=headers)
    assert (await communicator.connect())[0]
    await answer_challenge(communicator, case_id, device_id)
    assert (await communicator.receive_json_from(timeout=5))["type"] == "hello"
    earlier = time.time() - EARLIER
    await sync_to_async(set_last_activity)(member.session, earlier)

    async def frame_then_ping(frame: dict[str, object]) -> None:
        await communicator.send_json_to(frame)
        await communicator.send_json_to({"type": "ping"})
        while (await communicator.receive_json_from(timeout=5))["type"] != "pong":
            pass  # frames are handled in order: the pong comes after the first one's work

    await frame_then_ping({"type": "read", "up_to": 1})
    await frame_then_ping({"type": "resume", "after": 0})
    await frame_then_ping({"type": "typing", "active": False})  # a draft cleared, a blur
    assert await sync_to_async(last_activity)(member.session) == earlier
    await frame_then_ping({"type": "typing", "active": True})
    assert await sync_to_async(last_activity)(member.session) > earlier
    await communicator.disconnect()


def stale_client() -> tuple[Client, float]:
    client = verified_client(make_user(f"pcp{time.monotonic_ns()}"))
    earlier = time.time() - EARLIER
    set_last_activity(client.cookies["sessionid"].value, earlier)
    return client, earlier


def test_api_reads_and_background_requests_do_not_postpone_logoff() -> None:
    client, earlier = stale_client()
    key = client.cookies["sessionid"].value
    assert client.get("/api/notifications").status_code == 200
    assert client.get("/api/cases").status_code == 200
    assert client.post("/api/notifications/999999/read",
                       HTTP_X_COLLAB_BACKGROUND="1").status_code == 404
    assert last_activity(key) == earlier


def test_a_persons_requests_postpone_logoff() -> None:
    client, earlier = stale_client()
    key = client.cookies["sessionid"].value
    client.post("/api/notifications/999999/read")  # a change asked for (even if refused)
    assert last_activity(key) > earlier
    set_last_activity(key, earlier)
    client.get("/")  # a page a person opens
    assert last_activity(key) > earlier


def test_sign_in_starts_the_absolute_lifetime_and_it_ends_the_session(settings) -> None:
    before = time.time()
    client, _ = stale_client()
    key = client.cookies["sessionid"].value
    session = SessionStore(key)
    assert session[SIGNED_IN_KEY] >= before - 1  # stamped by the sign-in
    session[SIGNED_IN_KEY] = time.time() - settings.SESSION_ABSOLUTE_SECONDS - 1
    session[LAST_ACTIVITY_KEY] = time.time()  # busy right up to the end
    session.save()
    response = client.get("/api/notifications")
    assert response.status_code == 401
    assert response.json()["error"] == "session_expired"
    assert not SessionStore().exists(key)
    assert AuditEvent.objects.filter(action=AuditAction.SIGN_OUT, reason="lifetime").exists()
    # Signed out: the next page goes to the sign-in page.
    assert client.get("/").status_code == 302


def test_lifetime_expiry_on_a_page_redirects_with_reason(settings) -> None:
    client, _ = stale_client()
    session = SessionStore(client.cookies["sessionid"].value)
    session[SIGNED_IN_KEY] = time.time() - settings.SESSION_ABSOLUTE_SECONDS - 1
    session.save()
    response = client.get("/")
    assert response.status_code == 302 and "reason=expired" in response["Location"]
