"""In-process case-room and inbox sockets (channels' communicator) for the consumer tests."""

from __future__ import annotations

from typing import Any

from channels.testing import WebsocketCommunicator

from collab.asgi import application
from tests.support.rooms import Member
from tests.support.ws import answer_challenge, room_path


async def open_room(member: Member) -> WebsocketCommunicator:
    """The member's device in its case room: connected, proven, greeted."""
    case_id, device_id = member.state.case_id, member.device.device_id
    headers = [(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1"),
               (b"cookie", f"sessionid={member.session}".encode())]
    communicator = WebsocketCommunicator(application, room_path(case_id, device_id),
                                         headers=headers)
    assert (await communicator.connect())[0]
    await answer_challenge(communicator, case_id, device_id)
    assert (await communicator.receive_json_from(timeout=5))["type"] == "hello"
    return communicator


async def open_inbox(session: str) -> tuple[WebsocketCommunicator, dict[str, Any]]:
    """The session's inbox socket, greeted: (socket, its hello)."""
    headers = [(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1"),
               (b"cookie", f"sessionid={session}".encode())]
    communicator = WebsocketCommunicator(application, "/ws/inbox/", headers=headers)
    assert (await communicator.connect())[0]
    hello = await communicator.receive_json_from(timeout=5)
    assert hello["type"] == "hello", hello
    return communicator, hello
