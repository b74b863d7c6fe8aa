"""Hostile handshakes and frames against a real daphne: Origin by scheme, host and port;
a malformed case id; an unknown path; JSON nested too deep."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
import websockets
from channels.db import database_sync_to_async as sync_to_async
from websockets.exceptions import ConnectionClosed, InvalidStatus

from collab.accounts.ws_auth import origin_allowed
from tests.support.live import daphne_servers
from tests.support.users import make_user, session_cookie, verified_client

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock(), daphne_servers(1) as urls:
        yield urls[0]


async def signed_in_headers(base: str, origin: str | None = None) -> dict[str, str]:
    user = await sync_to_async(make_user)(f"u{uuid.uuid4().hex[:8]}")
    client = await sync_to_async(verified_client)(user)
    return {"Origin": origin or base, "Cookie": session_cookie(client)}


def ws(base: str, path: str) -> str:
    return base.replace("http://", "ws://") + path


async def handshake_status(base: str, origin: str) -> int:
    """101 if the socket opened, else the HTTP status of the refusal."""
    headers = await signed_in_headers(base, origin)
    try:
        async with websockets.connect(ws(base, "/ws/ping/"), additional_headers=headers):
            return 101
    except InvalidStatus as refused:
        return refused.response.status_code


async def test_origin_on_another_port_of_the_same_host_is_refused(server: str) -> None:
    port = int(server.rsplit(":", 1)[1])
    assert await handshake_status(server, f"http://127.0.0.1:{port + 1}") == 403
    assert await handshake_status(server, "http://127.0.0.1") == 403  # port 80


async def test_origin_with_another_scheme_on_the_same_host_and_port_is_refused(
    server: str,
) -> None:
    assert await handshake_status(server, server.replace("http://", "https://")) == 403


async def test_exact_same_origin_is_accepted(server: str) -> None:
    assert await handshake_status(server, server) == 101


def test_origin_rules_without_a_server(settings) -> None:
    settings.ALLOWED_HOSTS = ["chat.example"]
    settings.CSRF_TRUSTED_ORIGINS = ["https://app.example"]

    def scope(origin: str | None, host: str = "chat.example", **headers: str) -> dict[str, Any]:
        raw = [(b"host", host.encode())]
        if origin is not None:
            raw.append((b"origin", origin.encode()))
        raw += [(k.encode(), v.encode()) for k, v in headers.items()]
        return {"type": "websocket", "headers": raw}

    assert origin_allowed(scope("http://chat.example"))
    assert origin_allowed(scope("http://chat.example:80"))
    assert origin_allowed(scope("https://app.example"))  # trusted, whatever the Host
    assert not origin_allowed(scope("https://chat.example"))  # not behind TLS here
    assert not origin_allowed(scope("http://chat.example:8080"))
    assert not origin_allowed(scope("http://chat.example", host="chat.example:8080"))
    assert not origin_allowed(scope("http://evil.example", host="evil.example"))  # Host
    assert not origin_allowed(scope("https://app.example:8443"))
    assert not origin_allowed(scope("http://app.example"))
    assert not origin_allowed(scope(None))
    assert not origin_allowed(scope("null"))
    assert not origin_allowed(scope("http://chat.example/path"))
    # Behind the documented TLS proxy the browser's scheme is the forwarded one.
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    assert origin_allowed(scope("https://chat.example", **{"x-forwarded-proto": "https"}))
    assert not origin_allowed(scope("http://chat.example", **{"x-forwarded-proto": "https"}))


async def test_non_uuid_case_id_closes_4400_not_http_500(server: str) -> None:
    headers = await signed_in_headers(server)
    path = f"/ws/cases/not-a-uuid/?device={uuid.uuid4()}"
    async with websockets.connect(ws(server, path), additional_headers=headers) as sock:
        frames = []
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                frames.append(json.loads(await asyncio.wait_for(sock.recv(), timeout=10)))
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4400
    assert frames[-1]["code"] == "bad_request"


@pytest.mark.parametrize("path", ["/ws/nothing/", "/ws/cases/", "/ws/ping", "/"])
async def test_unknown_socket_path_closes_4404_not_http_500(server: str, path: str) -> None:
    headers = await signed_in_headers(server)
    async with websockets.connect(ws(server, path), additional_headers=headers) as sock:
        frames = []
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                frames.append(json.loads(await asyncio.wait_for(sock.recv(), timeout=10)))
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4404
    assert frames == [{"type": "error", "code": "no_such_socket",
                       "message": "No socket at this path."}]


@pytest.mark.hostile_input  # JSON nested too deep to parse, on purpose
async def test_deeply_nested_json_is_malformed_and_the_socket_stays_usable(server: str) -> None:
    headers = await signed_in_headers(server)
    async with websockets.connect(ws(server, "/ws/ping/"), additional_headers=headers) as sock:
        assert json.loads(await sock.recv())["type"] == "hello"
        for deep in ('{"type":"ping","x":' + "[" * 30000 + "]" * 30000 + "}",
                     "[" * 60000):
            await sock.send(deep)
            error = json.loads(await asyncio.wait_for(sock.recv(), timeout=10))
            assert error["code"] == "malformed_json"
        await sock.send(json.dumps({"type": "ping"}))
        assert json.loads(await asyncio.wait_for(sock.recv(), timeout=10)) == {"type": "pong"}
