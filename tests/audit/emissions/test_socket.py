"""Emission tests for the case-room socket: messages stored by ``send`` (one event per
message, also when several sends are stored as one batch) and history read by
``resume``.

In process, through the real consumer with channels' communicator (as
tests/consumers/test_send_pipeline.py does), so the test can hold one batch in the
database while the next one fills.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
from collections.abc import Sequence
from typing import Any

import pytest
from channels.db import database_sync_to_async as sync_to_async
from channels.testing import WebsocketCommunicator
from django.db.models import Max

from collab.asgi import application
from collab.audit.models import AuditAction, AuditEvent
from collab.cases.services import messages
from collab.cases.services.messages import SendRequest, message_send
from collab.consumers import send_pipeline
from collab.crypto.envelope import Envelope
from collab.crypto.wire import b64e
from tests.audit.emissions import emits
from tests.support.rooms import Member, build_room
from tests.support.ws import answer_challenge, room_path

pytestmark = pytest.mark.django_db(transaction=True)

UA = "emission-socket/1.0"


def head_seq() -> int:
    return int(AuditEvent.objects.aggregate(top=Max("seq"))["top"] or 0)


def written(before: int) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(seq__gt=before).order_by("seq"))


def fields(event: AuditEvent) -> dict[str, Any]:
    """The fields an emission test pins down (checked first to be metadata only)."""
    assert_metadata_only(event)
    return {
        "action": event.action,
        "outcome": event.outcome,
        "reason": event.reason,
        "actor_id": event.actor_id,
        "device_id": event.device_id,
        "case_id": event.case_id,
        "target": event.target,
        "details": event.details,
    }


def assert_no_content(event: AuditEvent, envelope: Envelope, *texts: str) -> None:
    serialised = " ".join(
        [json.dumps(event.details, sort_keys=True), event.target, event.reason, event.user_agent]
    )
    for secret in (b64e(envelope.ct), envelope.ct.hex(), b64e(envelope.sig), *texts):
        assert secret not in serialised, f"{event.action} carries {secret[:16]}..."
    assert_metadata_only(event)


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in (str(k), *_texts(v))]
    if isinstance(value, list):
        return [t for item in value for t in _texts(item)]
    return []


def assert_metadata_only(event: AuditEvent) -> None:
    """Details are small metadata: no text long enough to carry a key, a signature, a
    token or a ciphertext (a UUID, a timestamp or a code fits)."""
    for text in [*_texts(event.details), event.target]:
        assert len(text) <= 48, f"{event.action} carries a long value: {text[:16]}..."


async def open_room(member: Member) -> WebsocketCommunicator:
    case_id, device_id = member.state.case_id, member.device.device_id
    headers = [
        (b"origin", b"http://127.0.0.1"),
        (b"host", b"127.0.0.1"),
        (b"user-agent", UA.encode()),
        (b"cookie", f"sessionid={member.session}".encode()),
    ]
    communicator = WebsocketCommunicator(
        application, room_path(case_id, device_id), headers=headers
    )
    assert (await communicator.connect(timeout=10))[0]
    await answer_challenge(communicator, case_id, device_id)
    assert (await communicator.receive_json_from(timeout=10))["type"] == "hello"
    return communicator


async def next_of(communicator: WebsocketCommunicator, *types: str) -> dict[str, Any]:
    while True:
        frame: dict[str, Any] = await communicator.receive_json_from(timeout=20)
        if frame["type"] in types:
            return frame


async def settled(communicator: WebsocketCommunicator) -> None:
    """A ping answered: every frame sent before it has been handled to the end (the
    consumer handles one socket's frames in order), its audit write included."""
    await communicator.send_json_to({"type": "ping"})
    await next_of(communicator, "pong")


def send_text(envelope: Envelope, ref: str) -> str:
    return json.dumps({"type": "send", "ref": ref, "envelope": envelope.to_wire()})


def stored_event(member: Member, envelope: Envelope, seq: int) -> dict[str, Any]:
    return {
        "action": AuditAction.MESSAGE_STORED,
        "outcome": "success",
        "reason": "",
        "actor_id": member.user.pk,
        "device_id": member.device.device_id,
        "case_id": member.state.case_id,
        "target": f"message:{seq}",
        "details": {"seq": seq, "size": len(envelope.ct), "epoch": envelope.header.epoch},
    }


@emits(AuditAction.MESSAGE_STORED)
async def test_message_stored_by_a_socket_send(settings) -> None:
    settings.SESSION_CHECK_SECONDS = 3600
    (member,) = await sync_to_async(build_room)(1)
    socket = await open_room(member)
    text = "the biopsy result, private"
    envelope = member.state.seal({"text": text})
    before = await sync_to_async(head_seq)()
    await socket.send_to(text_data=send_text(envelope, "a"))
    ack = await next_of(socket, "ack", "error")
    assert (ack["type"], ack["seq"], ack["duplicate"]) == ("ack", 1, False), ack
    await settled(socket)
    (event,) = await sync_to_async(written)(before)
    assert fields(event) == stored_event(member, envelope, 1)
    assert event.user_agent == UA
    assert_no_content(event, envelope, text)
    # A retry of the same envelope is answered as a duplicate and stored (and recorded)
    # once; a refused send (a bad signature) records nothing.
    before = await sync_to_async(head_seq)()
    await socket.send_to(text_data=send_text(envelope, "b"))
    again = await next_of(socket, "ack", "error")
    assert (again["type"], again["duplicate"]) == ("ack", True), again
    forged = dataclasses.replace(member.state.seal({"text": "x"}), sig=bytes(64))
    await socket.send_to(text_data=send_text(forged, "c"))
    assert (await next_of(socket, "ack", "error"))["type"] == "error"
    await settled(socket)
    assert await sync_to_async(written)(before) == []
    await socket.disconnect()


class Gate:
    """message_send_batch whose first call waits (in its thread) until released, so the
    sends arriving meanwhile are stored together as the next batch."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.real = messages.message_send_batch
        self.batches: list[int] = []
        self.entered = threading.Event()
        self.released = threading.Event()
        monkeypatch.setattr(messages, "message_send_batch", self.store)

    def store(self, requests: Sequence[SendRequest]) -> list[Any]:
        self.batches.append(len(requests))
        if len(self.batches) == 1:
            self.entered.set()
            self.released.wait(timeout=30)
        return self.real(requests)


@emits(AuditAction.MESSAGE_STORED)
async def test_a_batch_of_socket_sends_records_one_event_per_message(settings, monkeypatch) -> None:
    settings.SESSION_CHECK_SECONDS = 3600
    gate = Gate(monkeypatch)
    # One member per case: nobody else hears the messages live, so the sends are the
    # only thing these sockets make the server record.
    members = [(await sync_to_async(build_room)(1, f"b{i}-"))[0] for i in range(4)]
    sockets = [await open_room(member) for member in members]
    envelopes = [member.state.seal({"text": f"note {i}"}) for i, member in enumerate(members)]
    before = await sync_to_async(head_seq)()
    await sockets[0].send_to(text_data=send_text(envelopes[0], "0"))
    assert await asyncio.to_thread(gate.entered.wait, 10)
    for i in range(1, len(members)):
        await sockets[i].send_to(text_data=send_text(envelopes[i], str(i)))
    pipeline = send_pipeline.pipeline()
    async with asyncio.timeout(10):
        while len(pipeline.queue) < len(members) - 1:
            await asyncio.sleep(0.01)
    gate.released.set()
    for socket in sockets:
        ack = await next_of(socket, "ack", "error")
        assert (ack["type"], ack["seq"]) == ("ack", 1), ack
        await settled(socket)
    assert gate.batches == [1, len(members) - 1]
    events = await sync_to_async(written)(before)
    by_case = {event.case_id: event for event in events}
    assert len(events) == len(by_case) == len(members)
    for member, envelope in zip(members, envelopes, strict=True):
        event = by_case[member.state.case_id]
        assert fields(event) == stored_event(member, envelope, 1)
        assert_no_content(event, envelope, "note")
    # The second batch went in one append: its events share one recorded_at.
    batched = [by_case[m.state.case_id] for m in members[1:]]
    assert len({event.recorded_at for event in batched}) == 1
    for socket in sockets:
        await socket.disconnect()


@emits(AuditAction.HISTORY_READ)
async def test_history_read_by_a_socket_resume(settings) -> None:
    settings.SESSION_CHECK_SECONDS = 3600
    (member,) = await sync_to_async(build_room)(1)
    texts = [f"private history {i}" for i in range(3)]
    envelopes = [member.state.seal({"text": text}) for text in texts]
    for envelope in envelopes:
        await sync_to_async(message_send)(
            user=member.user,
            device_id=member.device.device_id,
            case_id=member.state.case_id,
            envelope=envelope,
        )
    socket = await open_room(member)
    before = await sync_to_async(head_seq)()
    await socket.send_json_to({"type": "resume", "ref": "r", "after": 0, "limit": 2})
    page = await next_of(socket, "messages")
    assert [item["seq"] for item in page["items"]] == [1, 2] and page["more"] is True
    await settled(socket)
    (event,) = await sync_to_async(written)(before)
    assert fields(event) == {
        "action": AuditAction.HISTORY_READ,
        "outcome": "success",
        "reason": "",
        "actor_id": member.user.pk,
        "device_id": member.device.device_id,
        "case_id": member.state.case_id,
        "target": "",
        "details": {"from_seq": 1, "to_seq": 2, "count": 2},
    }
    assert event.user_agent == UA
    for envelope in envelopes:
        assert_no_content(event, envelope, "private history")
    # An empty page (nothing after the last message) reads nothing and records nothing.
    before = await sync_to_async(head_seq)()
    await socket.send_json_to({"type": "resume", "ref": "s", "after": 3})
    empty = await next_of(socket, "messages")
    assert empty["items"] == [] and empty["more"] is False
    await settled(socket)
    assert await sync_to_async(written)(before) == []
    await socket.disconnect()
