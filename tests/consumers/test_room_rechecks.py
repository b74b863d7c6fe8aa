"""A revoked or removed device's socket closes even when the doorbell that says so
(``device.revoked``, ``case.log``) was lost, e.g. during a channel-layer outage: the
watchdog, the resync after the outage and ``resume`` all check device and roster again.
And a database error while relaying a live message does not close the socket.

In process (channels' communicator): the lost doorbell is the change made in the
database without ringing it, exactly what a Redis outage leaves behind.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from channels.db import database_sync_to_async as sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.db import OperationalError
from django.utils import timezone

from collab.accounts.models import Device
from collab.cases import access, selectors
from collab.cases.models import MemberDevice
from collab.consumers import case_room
from collab.crypto.wire import b64e
from collab.realtime import LAYER, case_group
from tests.support.communicators import open_room
from tests.support.rooms import Member, build_room

pytestmark = pytest.mark.django_db(transaction=True)


def revoke_silently(member: Member) -> None:
    """Revoked in the database; the device.revoked doorbell never rang."""
    Device.objects.filter(pk=member.device.device_id).update(revoked_at=timezone.now())


def remove_silently(member: Member) -> None:
    """Out of the head roster; the case.log doorbell never rang."""
    MemberDevice.objects.filter(device_id=member.device.device_id).delete()


async def closed_with(communicator: WebsocketCommunicator) -> tuple[list[dict[str, Any]], int]:
    """The frames up to the close, and its code."""
    frames: list[dict[str, Any]] = []
    while True:
        output = await communicator.receive_output(timeout=5)
        if output["type"] == "websocket.close":
            return frames, output["code"]
        frames.append(json.loads(output["text"]))


@pytest.mark.parametrize(
    ("change", "code"), [(revoke_silently, "device_revoked"), (remove_silently, "removed")]
)
async def test_watchdog_closes_a_socket_whose_doorbell_was_lost(settings, change, code) -> None:
    settings.SESSION_CHECK_SECONDS = 0.1
    _, member = await sync_to_async(build_room)(2)
    communicator = await open_room(member)
    await sync_to_async(change)(member)
    frames, close = await closed_with(communicator)
    assert close == 4403
    assert [f["code"] for f in frames if f["type"] == "error"] == [code]
    await communicator.disconnect()


async def test_the_watchdog_leaves_an_admitted_device_open(settings, monkeypatch) -> None:
    settings.SESSION_CHECK_SECONDS = 0.01
    checks: list[object] = []
    real = case_room.CaseRoomConsumer.sweep_refusals

    def counted(sockets: list[Any]) -> object:
        verdicts = real(sockets)
        checks.append((len(sockets), verdicts))
        return verdicts

    monkeypatch.setattr(case_room.CaseRoomConsumer, "sweep_refusals", counted)
    owner, member = await sync_to_async(build_room)(2)
    communicator = await open_room(member)
    await sync_to_async(remove_silently)(owner)  # someone else's change
    async with asyncio.timeout(10):
        while len(checks) < 3:  # three ticks of the sweep, each one checking the roster
            await asyncio.sleep(0.01)
    assert checks[:3] == [(1, {}), (1, {}), (1, {})]  # the socket, checked, no refusal
    await communicator.send_json_to({"type": "ping"})
    assert await communicator.receive_json_from(timeout=5) == {"type": "pong"}
    await communicator.disconnect()


@pytest.mark.parametrize(
    ("change", "code"), [(revoke_silently, "device_revoked"), (remove_silently, "removed")]
)
async def test_resync_after_an_outage_rechecks_admission(settings, change, code) -> None:
    settings.SESSION_CHECK_SECONDS = 3600  # the watchdog is not what closes it here
    owner, member = await sync_to_async(build_room)(2)
    kept, lost = await open_room(owner), await open_room(member)
    await sync_to_async(change)(member)
    await LAYER._resync()  # what the probe does once the layer works again
    frames, close = await closed_with(lost)
    assert close == 4403
    assert [f["type"] for f in frames] == ["error"] and frames[0]["code"] == code
    hello = await kept.receive_json_from(timeout=5)
    assert hello["type"] == "hello" and hello["resync"] is True
    for communicator in (kept, lost):
        await communicator.disconnect()


@pytest.mark.parametrize(
    ("change", "code"), [(revoke_silently, "device_revoked"), (remove_silently, "removed")]
)
async def test_resume_refuses_history_to_a_device_no_longer_admitted(
    settings, change, code
) -> None:
    settings.SESSION_CHECK_SECONDS = 3600
    _, member = await sync_to_async(build_room)(2)
    communicator = await open_room(member)
    await sync_to_async(change)(member)
    await communicator.send_json_to({"type": "resume", "after": 0})
    frames, close = await closed_with(communicator)
    assert close == 4403
    assert [f["type"] for f in frames] == ["error"] and frames[0]["code"] == code
    await communicator.disconnect()


class FlakyEpochs:
    """selectors.readable_epochs raising OperationalError ``failures`` times (-1: always),
    then answering with ``extra`` epochs too (keys that arrived meanwhile)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, failures: int, extra: int) -> None:
        self.failures = failures
        real = selectors.readable_epochs

        def flaky(**kwargs: Any) -> list[int]:
            if self.failures:
                self.failures -= 1
                raise OperationalError("could not connect to server: Connection refused")
            return [*real(**kwargs), extra]

        monkeypatch.setattr(selectors, "readable_epochs", flaky)


def live(seq: int, epoch: int) -> dict[str, Any]:
    """A live message as the server relays it (the relay reads only seq and epoch; the
    rest has the described shape, so the frame checks as a real one would)."""
    envelope = {
        "v": 1, "case_id": str(uuid.UUID(int=1)), "epoch": epoch, "log_head": b64e(bytes(64)),
        "sender_user_id": str(uuid.UUID(int=2)), "sender_device_id": str(uuid.UUID(int=3)),
        "client_msg_id": b64e(seq.to_bytes(16, "big")), "sender_seq": seq, "sent_ms": 0,
        "content_type": "text", "nonce": b64e(bytes(24)), "ct_len": 0,
        "ct_hash": b64e(bytes(64)), "attachments": [], "ct": "", "sig": b64e(bytes(64)),
    }
    return {"seq": seq, "stored_at": "2026-01-01T00:00:00+00:00", "envelope": envelope,
            "urgent": False}


async def ring(member: Member, message: dict[str, Any]) -> None:
    await get_channel_layer().group_send(
        case_group(member.state.case_id), {"type": "case.message", "message": message}
    )


async def test_database_error_relaying_a_live_message_holds_it_and_keeps_the_socket(
    settings, monkeypatch
) -> None:
    settings.SESSION_CHECK_SECONDS = 3600
    monkeypatch.setattr(case_room, "EPOCH_RETRY_SECONDS", 0.01)
    _, member = await sync_to_async(build_room)(2)
    communicator = await open_room(member)
    new_epoch = 77  # an epoch the socket has not seen: the relay asks the database
    flaky = FlakyEpochs(monkeypatch, failures=3, extra=new_epoch)
    first, second = live(5, new_epoch), live(6, new_epoch)
    await ring(member, first)
    await ring(member, second)
    # Not closed 1011: the messages come, in order, once the database answers again...
    assert await communicator.receive_json_from(timeout=5) == {"type": "message", **first}
    assert await communicator.receive_json_from(timeout=5) == {"type": "message", **second}
    assert flaky.failures == 0
    # ...and the socket goes on, live messages delivered at once again.
    third = live(7, new_epoch)
    await ring(member, third)
    assert await communicator.receive_json_from(timeout=5) == {"type": "message", **third}
    await communicator.send_json_to({"type": "ping"})
    assert await communicator.receive_json_from(timeout=5) == {"type": "pong"}
    await communicator.disconnect()


async def test_too_many_held_live_messages_close_4503(settings, monkeypatch) -> None:
    settings.SESSION_CHECK_SECONDS = 3600
    monkeypatch.setattr(case_room, "EPOCH_RETRY_SECONDS", 3600)
    monkeypatch.setattr(case_room, "HELD_MAX", 2)
    _, member = await sync_to_async(build_room)(2)
    communicator = await open_room(member)
    FlakyEpochs(monkeypatch, failures=-1, extra=77)
    for seq in (5, 6, 7):
        await ring(member, live(seq, 77))
    frames, close = await closed_with(communicator)
    assert close == 4503
    assert [(f["type"], f.get("code")) for f in frames] == [("error", "unavailable")]
    await communicator.disconnect()


async def test_resume_without_a_database_answers_unavailable_and_stays_open(
    settings, monkeypatch
) -> None:
    settings.SESSION_CHECK_SECONDS = 3600
    _, member = await sync_to_async(build_room)(2)
    communicator = await open_room(member)
    real = access.access_roster_device
    failures = {"left": 1}

    def flaky(*args: Any, **kwargs: Any) -> Any:
        if failures["left"]:
            failures["left"] -= 1
            raise OperationalError("could not connect to server: Connection refused")
        return real(*args, **kwargs)

    monkeypatch.setattr(access, "access_roster_device", flaky)
    await communicator.send_json_to({"type": "resume", "after": 0, "ref": "r1"})
    error = await communicator.receive_json_from(timeout=5)
    assert (error["type"], error["code"], error["ref"]) == ("error", "unavailable", "r1")
    await communicator.send_json_to({"type": "resume", "after": 0, "ref": "r2"})
    page = await communicator.receive_json_from(timeout=5)
    assert (page["type"], page["ref"]) == ("messages", "r2")
    await communicator.disconnect()
