"""The authenticated handshake (connect -> challenge -> prove -> hello) costs a small,
constant number of queries: the same for the first socket of a session as for the
hundredth, whatever the number of sockets open and the size of the room."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from channels.db import database_sync_to_async as sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connection

from collab.asgi import application
from tests.support.rooms import Member, build_room
from tests.support.ws import answer_challenge, room_path

pytestmark = pytest.mark.django_db(transaction=True)


class Counter:
    """Counts the statements the sync thread runs (where every socket query runs)."""

    def __init__(self) -> None:
        self.sql: list[str] = []

    def __call__(self, execute: Callable[..., Any], sql: str, params: Any, many: bool,
                 context: Any) -> Any:
        self.sql.append(sql)
        return execute(sql, params, many, context)


async def counted() -> Counter:
    counter = Counter()

    def install() -> None:
        connection.execute_wrappers.append(counter)

    await sync_to_async(install)()
    return counter


async def open_room(member: Member) -> WebsocketCommunicator:
    case_id, device_id = member.state.case_id, member.device.device_id
    headers = [(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1"),
               (b"cookie", f"sessionid={member.session}".encode())]
    communicator = WebsocketCommunicator(application, room_path(case_id, device_id),
                                         headers=headers)
    assert (await communicator.connect())[0]
    await answer_challenge(communicator, case_id, device_id)
    hello = await communicator.receive_json_from(timeout=5)
    assert hello["type"] == "hello", hello
    return communicator


async def handshake_queries(member: Member, counter: Counter) -> list[str]:
    start = len(counter.sql)
    communicator = await open_room(member)
    done = counter.sql[start:]
    await communicator.disconnect()
    return done


# Session, user and second factor (ws_auth); device, case, roster and the session's
# device record; readable epochs; the hello's head. With access.room_admission in the
# consumer: 6 (before: 11).
MAX_HANDSHAKE_QUERIES = 6


def writes(sql: list[str]) -> list[str]:
    return [q for q in sql if not q.lstrip().upper().startswith("SELECT")]


async def test_handshake_queries_are_few_and_constant() -> None:
    small = await sync_to_async(build_room)(2, "q")
    large = await sync_to_async(build_room)(12, "Q")
    counter = await counted()
    first = await handshake_queries(small[1], counter)
    # The first socket of a session records it as the device's; a reconnect writes nothing.
    assert any("devicesession" in q.lower() for q in writes(first)), first
    again = await handshake_queries(small[1], counter)
    assert writes(again) == [], again
    assert len(again) <= MAX_HANDSHAKE_QUERIES, again
    # The same with other sockets open, and in a room six times the size.
    others = [await open_room(m) for m in large[:4]]
    await handshake_queries(large[5], counter)
    in_large = await handshake_queries(large[5], counter)
    busy = await handshake_queries(small[1], counter)
    for communicator in others:
        await communicator.disconnect()
    assert len(in_large) == len(again), (in_large, again)
    assert len(busy) == len(again), (busy, again)
