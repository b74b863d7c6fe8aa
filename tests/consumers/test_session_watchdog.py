"""The session watchdog under database faults, a crashed handler, deactivation and the
absolute session lifetime (in process: the faults are injected where the session is
read, exactly where a PostgreSQL outage raises)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from channels.db import database_sync_to_async as sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.contrib.sessions.backends.db import SessionStore
from django.db import OperationalError

from collab.accounts import live_sessions
from collab.accounts.models import User
from collab.accounts.policy import SIGNED_IN_KEY
from collab.asgi import application
from collab.consumers import sweep
from collab.consumers.ping import PingConsumer
from collab.realtime import user_group
from tests.support.users import make_user, session_cookie, verified_client

pytestmark = pytest.mark.django_db(transaction=True)


class FlakyDatabase:
    """Once armed, the sweep's read of the sessions raises OperationalError
    ``failures`` times (-1: always)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.failures = 0
        self.raised = 0
        real = live_sessions._session_data

        def session_data(keys: set[str]) -> dict[str, dict[str, Any]]:
            if self.failures != 0:
                self.failures -= 1
                self.raised += 1
                raise OperationalError("could not connect to server: Connection refused")
            return real(keys)

        monkeypatch.setattr(live_sessions, "_session_data", session_data)


async def open_ping(user: User | None = None) -> tuple[WebsocketCommunicator, Any, User]:
    user = user or await sync_to_async(make_user)(f"pcp{time.monotonic_ns()}")
    client = await sync_to_async(verified_client)(user)
    headers = [
        (b"origin", b"http://127.0.0.1"),
        (b"host", b"127.0.0.1"),
        (b"cookie", session_cookie(client).encode()),
    ]
    communicator = WebsocketCommunicator(application, "/ws/ping/", headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    assert (await communicator.receive_json_from())["type"] == "hello"
    return communicator, client, user


async def until(predicate: Any, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def watchdogs() -> list[asyncio.Task[Any]]:
    """The running session sweep: one task for all sockets, none once none is open."""
    return [t for t in asyncio.all_tasks() if t.get_name() == sweep.TASK_NAME]


def collect_loop_errors() -> list[dict[str, Any]]:
    """Errors the event loop reports (e.g. "Task exception was never retrieved")."""
    seen: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: seen.append(ctx))
    return seen


async def test_watchdog_survives_a_database_error_and_still_ends_the_session(
    settings, monkeypatch
) -> None:
    settings.SESSION_CHECK_SECONDS = 0.2
    errors = collect_loop_errors()
    flaky = FlakyDatabase(monkeypatch)
    communicator, client, _ = await open_ping()
    flaky.failures = 1
    await until(lambda: flaky.raised == 1)
    # The check failed once (less than twice the interval unchecked): still open.
    await communicator.send_json_to({"type": "ping"})
    assert await communicator.receive_json_from(timeout=5) == {"type": "pong"}
    # The session is deleted behind the socket's back: the next good check closes it.
    await sync_to_async(lambda: SessionStore(client.cookies["sessionid"].value).delete())()
    frame = await communicator.receive_json_from(timeout=5)
    assert frame["code"] == "session_ended"
    assert await communicator.receive_output(timeout=5) == {"type": "websocket.close",
                                                              "code": 4401}
    await communicator.disconnect()
    assert not [e for e in errors if "never retrieved" in e.get("message", "")]


async def test_session_unchecked_past_twice_the_interval_closes_4503(
    settings, monkeypatch
) -> None:
    settings.SESSION_CHECK_SECONDS = 0.1
    errors = collect_loop_errors()
    flaky = FlakyDatabase(monkeypatch)
    communicator, _, _ = await open_ping()
    flaky.failures = -1
    frame = await communicator.receive_json_from(timeout=5)
    assert frame["code"] == "unavailable"
    assert flaky.raised >= 2
    assert await communicator.receive_output(timeout=5) == {"type": "websocket.close",
                                                              "code": 4503}
    await communicator.disconnect()
    await until(lambda: not watchdogs())
    assert not [e for e in errors if "never retrieved" in e.get("message", "")]


async def test_disconnect_after_watchdog_errors_still_leaves_the_groups(
    settings, monkeypatch
) -> None:
    settings.SESSION_CHECK_SECONDS = 0.05
    # The in-memory layer, whose group table this test reads (also in the Redis pass).
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    flaky = FlakyDatabase(monkeypatch)
    communicator, _, user = await open_ping()
    flaky.failures = -1
    layer = get_channel_layer()
    assert user_group(user.pk) in layer.groups
    await until(lambda: flaky.raised >= 1)
    await communicator.disconnect()
    assert user_group(user.pk) not in layer.groups
    await until(lambda: not watchdogs())


async def test_a_crashed_handler_leaves_no_watchdog_polling(settings, monkeypatch) -> None:
    settings.SESSION_CHECK_SECONDS = 0.05

    async def crash(self: PingConsumer, frame: dict[str, Any]) -> None:
        raise RuntimeError("handler bug")

    monkeypatch.setattr(PingConsumer, "handle_ping", crash)
    communicator, _, _ = await open_ping()
    assert len(watchdogs()) == 1
    await communicator.send_json_to({"type": "ping"})
    with pytest.raises(RuntimeError, match="handler bug"):
        await communicator.receive_output(timeout=5)
    await until(lambda: not watchdogs())


async def test_deactivating_a_user_closes_their_sockets_at_once(settings) -> None:
    settings.SESSION_CHECK_SECONDS = 3600  # only the signal can do it
    communicator, _, user = await open_ping()

    def deactivate() -> None:
        user.is_active = False
        user.save()

    await sync_to_async(deactivate)()
    frame = await communicator.receive_json_from(timeout=5)
    assert frame["code"] == "session_ended"
    assert await communicator.receive_output(timeout=5) == {"type": "websocket.close",
                                                              "code": 4401}
    await communicator.disconnect()


async def test_the_watchdog_sees_a_deactivation_made_without_signals(settings) -> None:
    settings.SESSION_CHECK_SECONDS = 0.1
    communicator, _, user = await open_ping()
    await sync_to_async(User.objects.filter(pk=user.pk).update)(is_active=False)
    frame = await communicator.receive_json_from(timeout=5)
    assert frame["code"] == "session_ended"
    assert (await communicator.receive_output(timeout=5))["code"] == 4401
    await communicator.disconnect()


async def test_absolute_session_lifetime_ends_an_open_socket(settings) -> None:
    settings.SESSION_CHECK_SECONDS = 0.1
    communicator, client, _ = await open_ping()

    def signed_in_long_ago() -> None:
        session = client.session
        assert SIGNED_IN_KEY in session  # stamped at sign-in
        session[SIGNED_IN_KEY] = time.time() - settings.SESSION_ABSOLUTE_SECONDS - 1
        session.save()

    await sync_to_async(signed_in_long_ago)()
    frame = await communicator.receive_json_from(timeout=5)
    assert frame["code"] == "session_ended"
    assert (await communicator.receive_output(timeout=5))["code"] == 4401
    await communicator.disconnect()
    # And a new socket with that session is refused at the handshake.
    headers = [(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1"),
               (b"cookie", session_cookie(client).encode())]
    again = WebsocketCommunicator(application, "/ws/ping/", headers=headers)
    await again.connect()
    assert (await again.receive_output(timeout=5))["code"] == 4401
    await again.disconnect()


async def test_database_down_at_the_handshake_closes_4503_not_http_500(monkeypatch) -> None:
    user = await sync_to_async(make_user)(f"pcp{time.monotonic_ns()}")
    client = await sync_to_async(verified_client)(user)

    def load(store: SessionStore) -> dict[str, Any]:
        raise OperationalError("could not connect to server: Connection refused")

    monkeypatch.setattr(SessionStore, "load", load)
    headers = [(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1"),
               (b"cookie", session_cookie(client).encode())]
    communicator = WebsocketCommunicator(application, "/ws/ping/", headers=headers)
    connected, code = await communicator.connect()
    if connected:
        code = (await communicator.receive_output(timeout=5))["code"]
    assert code == 4503
    await communicator.disconnect()


async def test_a_send_while_the_database_is_down_is_refused_and_the_socket_stays(
    monkeypatch,
) -> None:
    from collab.cases.services import messages
    from tests.support.rooms import build_room
    from tests.support.ws import answer_challenge, room_path

    (member,) = await sync_to_async(build_room)(1)
    case_id, device_id = member.state.case_id, member.device.device_id
    headers = [(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1"),
               (b"cookie", f"sessionid={member.session}".encode())]
    communicator = WebsocketCommunicator(application, room_path(case_id, device_id),
                                         headers=headers)
    assert (await communicator.connect())[0]
    await answer_challenge(communicator, case_id, device_id)
    assert (await communicator.receive_json_from(timeout=5))["type"] == "hello"

    def down(requests: Any) -> None:
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(messages, "message_send_batch", down)
    envelope = member.state.seal({"text": "while the database is down"})
    await communicator.send_json_to({"type": "send", "ref": "s1", "envelope": envelope.to_wire()})
    error = await communicator.receive_json_from(timeout=5)
    assert (error["type"], error["code"], error["ref"]) == ("error", "unavailable", "s1")
    await communicator.send_json_to({"type": "ping"})
    assert await communicator.receive_json_from(timeout=5) == {"type": "pong"}
    await communicator.disconnect()
