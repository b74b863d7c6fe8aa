"""Sign-out closes sockets at once through the channel layer (same process, any layer)."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async as sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import RequestFactory

from collab.accounts import services
from collab.asgi import application
from tests.support.users import make_user, session_cookie, verified_client

pytestmark = pytest.mark.django_db(transaction=True)


async def test_sign_out_closes_socket_immediately() -> None:
    user = await sync_to_async(make_user)("pcp")
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

    def sign_out() -> None:
        request = RequestFactory().post("/accounts/logout/")
        request.session = client.session
        request.user = user
        services.sign_out(request=request, reason="user")

    await sync_to_async(sign_out)()
    frame = await communicator.receive_json_from(timeout=5)
    assert frame["code"] == "session_ended"
    closed = await communicator.receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": 4401}
    await communicator.disconnect()
