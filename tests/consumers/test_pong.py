"""`ping` answers `pong` on both sockets, echoing the frame's `ref` as every answer does
(protocol.md §4), and nothing it should not."""

from __future__ import annotations

from typing import Any

import pytest
from channels.db import database_sync_to_async as sync_to_async
from channels.testing import WebsocketCommunicator

from collab.asgi import application
from tests.consumers.test_batched_delivery import open_room
from tests.support.rooms import build_room
from tests.support.users import make_user, session_cookie, verified_client

pytestmark = pytest.mark.django_db(transaction=True)


async def pongs(communicator: WebsocketCommunicator, frames: list[dict[str, Any]]) -> list[Any]:
    answers = []
    for frame in frames:
        await communicator.send_json_to(frame)
        answers.append(await communicator.receive_json_from(timeout=5))
    return answers


FRAMES: list[dict[str, Any]] = [
    {"type": "ping", "ref": "p-1"},
    {"type": "ping"},
    {"type": "ping", "ref": "x" * 65},  # longer than a ref may be: not echoed
    {"type": "ping", "ref": 7},  # not a string: not echoed
]
EXPECTED = [{"type": "pong", "ref": "p-1"}, {"type": "pong"}, {"type": "pong"}, {"type": "pong"}]


@pytest.mark.hostile_input  # refs too long and not strings, on purpose
async def test_case_room_pong_echoes_ref(settings) -> None:
    settings.SESSION_CHECK_SECONDS = 3600
    _, member = await sync_to_async(build_room)(2)
    communicator = await open_room(member)
    assert await pongs(communicator, FRAMES) == EXPECTED
    await communicator.disconnect()


@pytest.mark.hostile_input  # refs too long and not strings, on purpose
async def test_ping_socket_pong_echoes_ref() -> None:
    def signed_in() -> str:
        return session_cookie(verified_client(make_user("pinger")))

    cookie = await sync_to_async(signed_in)()
    headers = [(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1"),
               (b"cookie", cookie.encode())]
    communicator = WebsocketCommunicator(application, "/ws/ping/", headers=headers)
    assert (await communicator.connect(timeout=10))[0]
    assert (await communicator.receive_json_from(timeout=10))["type"] == "hello"
    assert await pongs(communicator, FRAMES) == EXPECTED
    await communicator.disconnect()


@pytest.mark.hostile_input  # a ref that is not a string, on purpose
async def test_every_answer_echoes_ref_by_the_same_rule(settings) -> None:
    """``messages`` (like ``ack`` and ``urgent_ack``) echoes ``ref`` only when it is a
    string of at most 64 characters, as ``pong`` and ``error`` do; else ``ref`` is null."""
    settings.SESSION_CHECK_SECONDS = 3600
    _, member = await sync_to_async(build_room)(2)
    communicator = await open_room(member)
    refs = []
    for ref in ("r-1", 7, {"x": 1}, "y" * 65):
        await communicator.send_json_to({"type": "resume", "after": 0, "ref": ref})
        page = await communicator.receive_json_from(timeout=5)
        assert page["type"] == "messages"
        refs.append(page["ref"])
    assert refs == ["r-1", None, None, None]
    await communicator.disconnect()
