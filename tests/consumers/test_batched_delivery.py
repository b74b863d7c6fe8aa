"""A stored batch rings each case once (``case.messages``, frames already serialised):
every socket relays its frames in order, exactly once, skipping epochs its device cannot
read exactly as for a single ``case.message``, and keeping held frames ahead of new ones.

In process (channels' communicator); the events are rung as the service rings them.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from channels.db import database_sync_to_async as sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.db import transaction

from collab.asgi import application
from collab.cases import selectors
from collab.consumers import case_room
from collab.realtime import case_group, publish_many_after_commit
from tests.consumers.test_room_rechecks import FlakyEpochs
from tests.support.rooms import Member, build_room
from tests.support.ws import answer_challenge, room_path

pytestmark = pytest.mark.django_db(transaction=True)

UNREADABLE = 9_999  # an epoch no device of the room holds a key for


async def open_room(member: Member) -> WebsocketCommunicator:
    case_id, device_id = member.state.case_id, member.device.device_id
    headers = [(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1"),
               (b"cookie", f"sessionid={member.session}".encode())]
    communicator = WebsocketCommunicator(application, room_path(case_id, device_id),
                                         headers=headers)
    assert (await communicator.connect(timeout=10))[0]
    await answer_challenge(communicator, case_id, device_id)
    assert (await communicator.receive_json_from(timeout=10))["type"] == "hello"
    return communicator


def text(seq: int, epoch: int) -> str:
    # Spaced and ordered unlike json.dumps's output: the relay must not re-encode it.
    return (f'{{"type": "message",  "seq": {seq}, "stored_at": "2026-01-01T00:00:00Z", '
            f'"envelope": {{"epoch": {epoch}}}, "urgent": false}}')


async def ring(member: Member, frames: list[tuple[int, int]]) -> None:
    await get_channel_layer().group_send(
        case_group(member.state.case_id),
        {"type": "case.messages", "frames": [[epoch, text(seq, epoch)] for seq, epoch in frames]},
    )


async def ring_one(member: Member, seq: int, epoch: int) -> None:
    message = {"seq": seq, "stored_at": "2026-01-01T00:00:00Z", "envelope": {"epoch": epoch},
               "urgent": False}
    await get_channel_layer().group_send(
        case_group(member.state.case_id), {"type": "case.message", "message": message}
    )


async def texts(communicator: WebsocketCommunicator, count: int) -> list[str]:
    out = []
    for _ in range(count):
        output = await communicator.receive_output(timeout=5)
        assert output["type"] == "websocket.send", output
        out.append(output["text"])
    return out


async def nothing_more(communicator: WebsocketCommunicator) -> None:
    await communicator.send_json_to({"type": "ping"})
    assert await communicator.receive_json_from(timeout=5) == {"type": "pong"}


async def head_epoch(member: Member) -> int:
    epochs: list[int] = await sync_to_async(lambda: list(selectors.readable_epochs(
        case_id=member.state.case_id, device_id=member.device.device_id
    )))()
    return max(epochs)


async def test_a_batch_event_is_relayed_in_order_exactly_once_as_serialised(settings) -> None:
    settings.SESSION_CHECK_SECONDS = 3600
    owner, member = await sync_to_async(build_room)(2)
    sockets = [await open_room(owner), await open_room(member)]
    epoch = await head_epoch(member)
    await ring(member, [(1, epoch), (2, epoch), (3, epoch)])
    await ring(member, [(4, epoch)])
    for communicator in sockets:
        got = await texts(communicator, 4)
        assert got == [text(seq, epoch) for seq in (1, 2, 3, 4)]  # byte for byte
        await nothing_more(communicator)
        await communicator.disconnect()


async def test_an_unreadable_epoch_is_skipped_in_a_batch_as_in_a_single_event(
    settings, monkeypatch
) -> None:
    settings.SESSION_CHECK_SECONDS = 3600
    _, member = await sync_to_async(build_room)(2)
    communicator = await open_room(member)
    epoch = await head_epoch(member)
    asked: list[object] = []
    real = selectors.readable_epochs

    def counted(**kwargs: Any) -> list[int]:
        asked.append(kwargs)
        return list(real(**kwargs))

    monkeypatch.setattr(selectors, "readable_epochs", counted)
    await ring(member, [(1, epoch), (2, UNREADABLE), (3, epoch)])
    assert await texts(communicator, 2) == [text(1, epoch), text(3, epoch)]
    assert len(asked) == 1  # only the epoch it did not know was asked about
    await ring_one(member, 4, UNREADABLE)  # the single event skips it the same way
    await ring_one(member, 5, epoch)
    assert json.loads((await texts(communicator, 1))[0])["seq"] == 5
    assert len(asked) == 2
    await nothing_more(communicator)
    await communicator.disconnect()


async def test_frames_held_for_the_database_keep_their_order_before_new_ones(
    settings, monkeypatch
) -> None:
    settings.SESSION_CHECK_SECONDS = 3600
    monkeypatch.setattr(case_room, "EPOCH_RETRY_SECONDS", 0.01)
    _, member = await sync_to_async(build_room)(2)
    communicator = await open_room(member)
    epoch, new_epoch = await head_epoch(member), 77
    flaky = FlakyEpochs(monkeypatch, failures=3, extra=new_epoch)
    # The first frame is readable at once; the second needs the database, which is away:
    # it and everything after it waits, in order, also a later single event.
    await ring(member, [(1, epoch), (2, new_epoch), (3, epoch)])
    await ring_one(member, 4, epoch)
    await ring(member, [(5, new_epoch), (6, UNREADABLE), (7, epoch)])
    got = [json.loads(t)["seq"] for t in await texts(communicator, 6)]
    assert got == [1, 2, 3, 4, 5, 7]
    assert flaky.failures == 0
    await nothing_more(communicator)
    await communicator.disconnect()


async def test_doorbells_of_one_transaction_ring_together_once_committed(settings) -> None:
    settings.SESSION_CHECK_SECONDS = 3600
    owner, member = await sync_to_async(build_room)(2)
    sockets = [await open_room(owner), await open_room(member)]
    epoch = await head_epoch(member)

    def events(*seqs: int) -> list[tuple[str, dict[str, Any]]]:
        return [
            (case_group(member.state.case_id),
             {"type": "case.messages", "frames": [[epoch, text(seq, epoch)]]})
            for seq in seqs
        ]

    def commit(seqs: tuple[int, ...], rollback: bool) -> None:
        with transaction.atomic():
            publish_many_after_commit(events(*seqs))
            transaction.set_rollback(rollback)

    await sync_to_async(commit)((8, 9), True)  # rolled back: never rung
    await sync_to_async(commit)((1, 2, 3), False)
    for communicator in sockets:
        assert await texts(communicator, 3) == [text(seq, epoch) for seq in (1, 2, 3)]
        await nothing_more(communicator)
        await communicator.disconnect()
