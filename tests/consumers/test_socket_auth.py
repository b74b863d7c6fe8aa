"""The socket handshake rules, against a real daphne process."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import websockets
from channels.db import database_sync_to_async as sync_to_async
from django.test import Client
from websockets.exceptions import ConnectionClosed, InvalidStatus

from collab.accounts.policy import LAST_ACTIVITY_KEY
from tests.support.live import daphne_servers
from tests.support.users import make_user, session_cookie, verified_client

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock(), daphne_servers(1, COLLAB_SESSION_CHECK_SECONDS="0.3") as urls:
        yield urls[0]


def ws_url(base: str, path: str = "/ws/ping/") -> str:
    return base.replace("http://", "ws://") + path


async def close_code(base: str, headers: dict[str, str]) -> int | None:
    async with websockets.connect(ws_url(base), additional_headers=headers, open_timeout=10) as ws:
        try:
            while True:
                await asyncio.wait_for(ws.recv(), timeout=10)
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None
    return None


def origin(base: str) -> dict[str, str]:
    return {"Origin": base}


async def test_socket_without_session_is_closed_4401(server: str) -> None:
    assert await close_code(server, origin(server)) == 4401


async def test_socket_with_password_only_session_is_closed_4403(server: str) -> None:
    user = await sync_to_async(make_user)("pcp")

    def half_signed_in() -> Client:
        client = Client()
        client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
        session = client.session
        session[LAST_ACTIVITY_KEY] = time.time()
        session.save()
        return client

    client = await sync_to_async(half_signed_in)()
    headers = {**origin(server), "Cookie": session_cookie(client)}
    assert await close_code(server, headers) == 4403


async def test_socket_from_foreign_origin_is_refused(server: str) -> None:
    user = await sync_to_async(make_user)("pcp")
    client = await sync_to_async(verified_client)(user)
    headers = {"Origin": "https://evil.example", "Cookie": session_cookie(client)}
    with pytest.raises(InvalidStatus) as refused:
        async with websockets.connect(ws_url(server), additional_headers=headers):
            pass
    assert refused.value.response.status_code == 403


@pytest.mark.hostile_input  # sends bad JSON and an unknown type on purpose
async def test_verified_session_opens_socket_and_answers_frames(server: str) -> None:
    user = await sync_to_async(make_user)("pcp")
    client = await sync_to_async(verified_client)(user)
    headers = {**origin(server), "Cookie": session_cookie(client)}
    async with websockets.connect(ws_url(server), additional_headers=headers) as ws:
        hello = json.loads(await ws.recv())
        assert hello == {"type": "hello", "user": str(user.pk)}
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await ws.recv()) == {"type": "pong"}
        await ws.send("{not json")
        error = json.loads(await ws.recv())
        assert error["code"] == "malformed_json"
        await ws.send(json.dumps({"type": "nope", "ref": "r1"}))
        error = json.loads(await ws.recv())
        assert (error["code"], error["ref"]) == ("unknown_type", "r1")
        # Recoverable errors leave the socket open.
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await ws.recv()) == {"type": "pong"}


@pytest.mark.hostile_input  # an oversize frame on purpose
async def test_oversize_frame_is_refused_and_closes(server: str) -> None:
    user = await sync_to_async(make_user)("pcp")
    client = await sync_to_async(verified_client)(user)
    headers = {**origin(server), "Cookie": session_cookie(client)}
    async with websockets.connect(ws_url(server), additional_headers=headers, max_size=None) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "ping", "pad": "x" * (65 * 1024)}))
        error = json.loads(await ws.recv())
        assert error["code"] == "frame_too_large"
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4413


async def test_signed_out_session_closes_open_socket(server: str) -> None:
    user = await sync_to_async(make_user)("pcp")
    client = await sync_to_async(verified_client)(user)
    headers = {**origin(server), "Cookie": session_cookie(client)}
    async with websockets.connect(ws_url(server), additional_headers=headers) as ws:
        await ws.recv()
        await sync_to_async(client.post)("/accounts/logout/")
        code = None
        try:
            while True:
                frame = json.loads(await asyncio.wait_for(ws.recv(), timeout=10))
                assert frame["code"] == "session_ended"
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else None
        assert code == 4401


async def test_idle_session_closes_open_socket(server: str, settings) -> None:
    user = await sync_to_async(make_user)("pcp")
    client = await sync_to_async(verified_client)(user)
    headers = {**origin(server), "Cookie": session_cookie(client)}

    def go_idle() -> None:
        session = client.session
        session[LAST_ACTIVITY_KEY] = time.time() - settings.IDLE_TIMEOUT_SECONDS - 5
        session.save()

    async with websockets.connect(ws_url(server), additional_headers=headers) as ws:
        await ws.recv()
        await sync_to_async(go_idle)()
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    # And a new socket with that session is refused at the handshake.
    assert await close_code(server, headers) == 4401


def test_frame_flood_is_rate_limited_and_closed() -> None:
    user = make_user("pcp")
    client = verified_client(user)
    # One token per thousand seconds: none comes back while the test runs, however slow
    # the machine, so exactly the burst is answered.
    with daphne_servers(1, COLLAB_WS_RATE_BURST="5", COLLAB_WS_RATE_PER_SECOND="0.001") as (base,):
        headers = {**origin(base), "Cookie": session_cookie(client)}

        async def flood() -> tuple[list[str], int | None]:
            async with websockets.connect(ws_url(base), additional_headers=headers) as ws:
                await ws.recv()
                for _ in range(20):
                    await ws.send(json.dumps({"type": "ping"}))
                kinds: list[str] = []
                try:
                    while True:
                        frame = json.loads(await asyncio.wait_for(ws.recv(), timeout=10))
                        kinds.append(frame.get("code") or frame["type"])
                except ConnectionClosed as closed:
                    return kinds, closed.rcvd.code if closed.rcvd else None
            return [], None

        kinds, code = asyncio.run(flood())
    assert kinds[:5] == ["pong"] * 5
    assert kinds[5] == "rate_limited"
    assert code == 4429
