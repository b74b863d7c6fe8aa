"""Group commit (collab.consumers.send_pipeline): the sends of one process that arrive
while a batch is being stored go together as the next batch, and each sender still
gets its own answer.

In process (channels' communicator, the consumers' own event loop), so that the test
reads the process's pipeline counters and can hold a batch to fill the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import threading
from collections.abc import Sequence
from typing import Any

import pytest
from channels.db import database_sync_to_async as sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import OperationalError

from collab.asgi import application
from collab.audit.verify import chain_verify
from collab.cases.models import Message
from collab.cases.services import messages
from collab.cases.services.messages import SendRequest
from collab.consumers import send_pipeline
from collab.crypto.wire import b64e
from tests.support.rooms import Member, build_room
from tests.support.ws import answer_challenge, room_path

pytestmark = pytest.mark.django_db(transaction=True)


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


def send_frame(member: Member, ref: str, **change: Any) -> str:
    envelope = member.state.seal({"text": ref})
    if change:
        envelope = dataclasses.replace(envelope, **change)
    return json.dumps({"type": "send", "ref": ref, "envelope": envelope.to_wire()})


async def answer(communicator: WebsocketCommunicator, seen: list[dict[str, Any]]
                 ) -> dict[str, Any]:
    """The next ack or error; live messages on the way are kept in ``seen``."""
    while True:
        frame: dict[str, Any] = await communicator.receive_json_from(timeout=20)
        if frame["type"] == "message":
            seen.append(frame)
        else:
            return frame


async def messages_until(communicator: WebsocketCommunicator, seen: list[dict[str, Any]],
                         count: int) -> list[dict[str, Any]]:
    while len(seen) < count:
        frame = await communicator.receive_json_from(timeout=20)
        if frame["type"] == "message":
            seen.append(frame)
    return seen


def stored(member: Member) -> list[tuple[int, str]]:
    return [
        (seq, b64e(bytes(cmid)))
        for seq, cmid in Message.objects.filter(case_id=member.state.case_id)
        .order_by("seq")
        .values_list("seq", "client_msg_id")
    ]


class Gate:
    """message_send_batch whose first call waits (in its thread) until released, so
    that the test can queue the next batch; every call's requests are recorded."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.real = messages.message_send_batch
        self.batches: list[list[SendRequest]] = []
        self.entered = threading.Event()
        self.released = threading.Event()
        monkeypatch.setattr(messages, "message_send_batch", self.store)

    def store(self, requests: Sequence[SendRequest]) -> list[Any]:
        self.batches.append(list(requests))
        if len(self.batches) == 1:
            self.entered.set()
            self.released.wait(timeout=30)
        return self.real(requests)

    async def hold_first(self) -> None:
        assert await asyncio.to_thread(self.entered.wait, 10)

    async def fill(self, queued: int) -> None:
        """Wait until ``queued`` sends wait behind the held batch, then release it."""
        pipeline = send_pipeline.pipeline()
        async with asyncio.timeout(10):
            while len(pipeline.queue) < queued:
                await asyncio.sleep(0.01)
        self.released.set()


async def test_concurrent_sends_are_batched_gapless_and_each_sender_is_answered(
    settings, monkeypatch
) -> None:
    settings.SESSION_CHECK_SECONDS = 3600
    gate = Gate(monkeypatch)
    senders, each = 8, 5
    members = await sync_to_async(build_room)(senders)
    sockets = [await open_room(member) for member in members]
    listener = await open_room(members[0])  # a second socket of one device: receives only
    frames = [[send_frame(m, f"{i}-{k}") for k in range(each)] for i, m in enumerate(members)]
    before = send_pipeline.pipeline()
    batches, items = before.batches, before.items
    seen: list[list[dict[str, Any]]] = [[] for _ in sockets]
    # The first sender's first send is held in the database; every other sender's first
    # send arrives meanwhile, so they must go together as the next batch.
    await sockets[0].send_to(text_data=frames[0][0])
    await gate.hold_first()
    for i in range(1, senders):
        await sockets[i].send_to(text_data=frames[i][0])
    await gate.fill(senders - 1)

    async def sender(i: int) -> list[dict[str, Any]]:
        acks = [await answer(sockets[i], seen[i])]  # its first send, already on its way
        for frame in frames[i][1:]:  # closed loop: the next send once this one is acked
            await sockets[i].send_to(text_data=frame)
            acks.append(await answer(sockets[i], seen[i]))
        return acks

    acks = await asyncio.gather(*(sender(i) for i in range(senders)))
    total = senders * each
    listened = await messages_until(listener, [], total)
    for i, socket in enumerate(sockets):
        await messages_until(socket, seen[i], total)
    # Every sender its own ack, in the order it sent, for the row holding its message.
    rows = dict(await sync_to_async(stored)(members[0]))
    for i, sent in enumerate(acks):
        assert [a["type"] for a in sent] == ["ack"] * each, sent
        assert [a["ref"] for a in sent] == [f"{i}-{k}" for k in range(each)]
        assert [a["duplicate"] for a in sent] == [False] * each
        for ack, frame in zip(sent, frames[i], strict=True):
            assert rows[ack["seq"]] == ack["client_msg_id"]
            assert json.loads(frame)["envelope"]["client_msg_id"] == ack["client_msg_id"]
    # Gapless, one row per client_msg_id.
    assert sorted(rows) == list(range(1, total + 1))
    assert len(set(rows.values())) == total
    # Every socket got every message once, in seq order, as stored.
    for got in [*seen, listened]:
        assert [f["seq"] for f in got] == list(range(1, total + 1))
        assert [f["envelope"]["client_msg_id"] for f in got] == [rows[s] for s in sorted(rows)]
    assert (await sync_to_async(chain_verify)()).ok
    # Batching happened: the sends queued behind the held batch went as ONE batch, so
    # there were fewer transactions than messages.
    sizes = [len(b) for b in gate.batches]
    assert sizes[:2] == [1, senders - 1], sizes
    assert {r.envelope.header.sender_device_id for r in gate.batches[1]} == {
        m.device.device_id for m in members[1:]
    }
    after = send_pipeline.pipeline()
    assert after.items - items == total == sum(sizes)
    assert after.batches - batches == len(sizes) < total
    for communicator in [*sockets, listener]:
        await communicator.disconnect()


async def test_a_refused_send_in_a_batch_does_not_refuse_the_others(
    settings, monkeypatch
) -> None:
    settings.SESSION_CHECK_SECONDS = 3600
    gate = Gate(monkeypatch)
    members = await sync_to_async(build_room)(4)
    sockets = [await open_room(member) for member in members]
    seen: list[dict[str, Any]] = []
    await sockets[0].send_to(text_data=send_frame(members[0], "plug"))
    await gate.hold_first()
    bad = send_frame(members[1], "bad", sig=bytes(64))
    forged = send_frame(members[2], "forged", sig=bytes([1]) * 64)
    await sockets[1].send_to(text_data=bad)
    await sockets[2].send_to(text_data=forged)
    await sockets[3].send_to(text_data=send_frame(members[3], "good"))
    await gate.fill(3)
    answers = [await answer(s, seen) for s in sockets]
    assert [len(b) for b in gate.batches] == [1, 3]  # the refused ones were in the batch
    assert [(a["type"], a.get("ref")) for a in answers] == [
        ("ack", "plug"), ("error", "bad"), ("error", "forged"), ("ack", "good")
    ]
    assert answers[1]["code"] in ("bad_signature", "non_canonical_signature")
    assert answers[2]["code"] == "bad_signature"
    assert [a["seq"] for a in (answers[0], answers[3])] == [1, 2]
    rows = await sync_to_async(stored)(members[0])
    assert rows == [(1, answers[0]["client_msg_id"]), (2, answers[3]["client_msg_id"])]
    assert (await sync_to_async(chain_verify)()).ok
    for communicator in sockets:
        await communicator.disconnect()


async def cancel(communicator: WebsocketCommunicator) -> None:
    """What daphne does to an application whose client went away and that did not
    finish within its close timeout (here: still waiting for its ack)."""
    communicator.future.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await communicator.future


async def test_a_socket_closed_while_its_send_waits_in_the_queue_does_not_disturb_the_batch(
    settings, monkeypatch
) -> None:
    settings.SESSION_CHECK_SECONDS = 3600
    gate = Gate(monkeypatch)
    members = await sync_to_async(build_room)(4)
    sockets = [await open_room(member) for member in members]
    await sockets[0].send_to(text_data=send_frame(members[0], "plug"))
    await gate.hold_first()
    for i in (1, 2, 3):
        await sockets[i].send_to(text_data=send_frame(members[i], f"m{i}"))
    pipeline = send_pipeline.pipeline()
    async with asyncio.timeout(10):
        while len(pipeline.queue) < 3:
            await asyncio.sleep(0.01)
    await cancel(sockets[2])  # gone while queued
    gate.released.set()
    seen: list[dict[str, Any]] = []
    answers = [await answer(sockets[i], seen) for i in (0, 1, 3)]
    assert [(a["type"], a["ref"], a["seq"]) for a in answers] == [
        ("ack", "plug", 1), ("ack", "m1", 2), ("ack", "m3", 3)
    ]
    # Its send was dropped unanswered and unstored (the client retries it by id).
    assert [len(b) for b in gate.batches] == [1, 2]
    assert [seq for seq, _ in await sync_to_async(stored)(members[0])] == [1, 2, 3]
    # The pipeline goes on.
    await sockets[1].send_to(text_data=send_frame(members[1], "after"))
    assert (await answer(sockets[1], seen))["seq"] == 4
    for i in (0, 1, 3):
        await sockets[i].disconnect()


async def test_a_socket_closed_while_its_send_is_being_stored_does_not_disturb_the_batch(
    settings, monkeypatch
) -> None:
    settings.SESSION_CHECK_SECONDS = 3600
    gate = Gate(monkeypatch)
    members = await sync_to_async(build_room)(3)
    sockets = [await open_room(member) for member in members]
    frame = send_frame(members[0], "gone")
    await sockets[0].send_to(text_data=frame)
    await gate.hold_first()
    await sockets[1].send_to(text_data=send_frame(members[1], "queued"))
    async with asyncio.timeout(10):
        while len(send_pipeline.pipeline().queue) < 1:
            await asyncio.sleep(0.01)
    await cancel(sockets[0])  # gone while its batch is in the database
    gate.released.set()
    seen: list[dict[str, Any]] = []
    assert (await answer(sockets[1], seen))["seq"] == 2
    # Stored (committed before anyone could be told): its retry is answered as a duplicate.
    retry = await open_room(members[0])
    await retry.send_to(text_data=frame)
    again = await answer(retry, seen)
    assert (again["type"], again["seq"], again["duplicate"]) == ("ack", 1, True)
    for communicator in (sockets[1], sockets[2], retry):
        await communicator.disconnect()


async def test_a_failed_batch_answers_each_of_its_sends_and_the_next_batch_works(
    settings, monkeypatch
) -> None:
    settings.SESSION_CHECK_SECONDS = 3600
    gate = Gate(monkeypatch)
    real = gate.real
    calls = {"n": 0}

    def failing_once(requests: Sequence[SendRequest]) -> list[Any]:
        calls["n"] += 1
        if calls["n"] == 2:  # the batch after the plug
            raise OperationalError("could not connect to server: Connection refused")
        return real(requests)

    gate.real = failing_once
    members = await sync_to_async(build_room)(3)
    sockets = [await open_room(member) for member in members]
    await sockets[0].send_to(text_data=send_frame(members[0], "plug"))
    await gate.hold_first()
    await sockets[1].send_to(text_data=send_frame(members[1], "a"))
    await sockets[2].send_to(text_data=send_frame(members[2], "b"))
    await gate.fill(2)
    seen: list[dict[str, Any]] = []
    answers = [await answer(s, seen) for s in sockets]
    assert [(a["type"], a.get("code"), a["ref"]) for a in answers] == [
        ("ack", None, "plug"), ("error", "unavailable", "a"), ("error", "unavailable", "b")
    ]
    assert [len(b) for b in gate.batches] == [1, 2]
    # Nothing of the failed batch was stored; the senders' retries go in the next one.
    await sockets[1].send_to(text_data=send_frame(members[1], "a2"))
    assert (await answer(sockets[1], seen))["seq"] == 2
    for communicator in sockets:
        await communicator.disconnect()


async def test_the_worker_survives_a_store_that_breaks_its_contract() -> None:
    """A store answering the wrong number of outcomes fails its batch, not the process."""
    answers: list[list[Any]] = [[], []]

    async def store(requests: Sequence[SendRequest]) -> list[Any]:
        return answers.pop(0)

    pipeline = send_pipeline.SendPipeline(store=store)
    request: Any = object()
    with pytest.raises(RuntimeError, match="0 outcomes for a batch of 1"):
        await pipeline.submit(request)
    with pytest.raises(RuntimeError, match="0 outcomes for a batch of 1"):
        await pipeline.submit(request)
    assert (pipeline.batches, pipeline.items, pipeline.queue) == (2, 2, [])
