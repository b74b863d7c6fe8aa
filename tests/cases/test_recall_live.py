"""A recalled message disappears from live views (the ``recalled`` frame), from resume
and history (a tombstone), and from the database: neither a dump (pg_dump on
PostgreSQL, the SQL dump on SQLite) nor the SQLite files' bytes hold its ciphertext."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async as sync_to_async
from django.db import connection

from collab.cases.models import Message
from collab.client.case_state import CaseState
from collab.crypto.primitives import ed25519_public
from collab.crypto.recall import Recall, verify_recall
from collab.crypto.wire import b64d, b64e
from tests.cases.test_consults import _next, _socket
from tests.cases.test_recall import recall, send, signed
from tests.support.actor import Actor
from tests.support.database_files import full_dump, sqlite_files

SECRET = "Lesion on the left scapula grew 4 mm since March"


def _room() -> tuple[Actor, Actor, CaseState]:
    pcp = Actor("pcp").register()
    derm = Actor("derm", specialty="Dermatology").register()
    state = pcp.open_case()
    assert pcp.add(state, derm).status_code == 201
    derm.join(state.case_id)
    return pcp, derm, state


@pytest.mark.django_db(transaction=True)
async def test_recalled_frame_reaches_the_room_and_resume_serves_a_tombstone() -> None:
    pcp, derm, state = await sync_to_async(_room)()
    derm_ws = await _socket(derm, state)
    seq = await sync_to_async(lambda: send(pcp, state, SECRET))()
    live = await _next(derm_ws, "message")
    assert live["seq"] == seq
    body = await sync_to_async(lambda: signed(pcp, state.case_id, seq))()
    response = await sync_to_async(lambda: recall(pcp, state.case_id, seq, body))()
    assert response.status_code == 200, response.content
    frame = await _next(derm_ws, "recalled")
    assert (frame["seq"], frame["by"], frame["device"]) == (
        seq, str(pcp.user.pk), str(pcp.device.device_id))
    assert set(frame) == {"type", "seq", "by", "at", "device", "sig", "recall"}
    statement = Recall.from_wire(frame["recall"])
    verify_recall(ed25519_public(pcp.device.dsk_seed), statement, b64d(frame["sig"], 64))
    assert statement.recalled_ms == body["recalled_ms"]
    await derm_ws.send_json_to({"type": "resume", "after": 0})
    page = await _next(derm_ws, "messages")
    (item,) = page["items"]
    assert item["seq"] == seq and "envelope" not in item
    assert item["removed"]["recall"]["sig"] == frame["sig"]
    await derm_ws.disconnect()


@pytest.mark.django_db(transaction=True)
def test_recalled_ciphertext_is_gone_from_the_database_dump_and_files() -> None:
    pcp, _derm, state = _room()
    kept = send(pcp, state, "a message that stays")
    seq = send(pcp, state, SECRET)
    ciphertext = bytes(Message.objects.get(seq=seq).ciphertext)
    needles = [ciphertext[16:80], ciphertext[16:80].hex().encode(),
               b64e(ciphertext).encode()[:64]]
    before = full_dump()
    assert ciphertext[16:80].hex().encode() in before.lower()  # the check can see it
    if connection.vendor == "sqlite":
        assert ciphertext[16:80] in sqlite_files()
    response = recall(pcp, state.case_id, seq, signed(pcp, state.case_id, seq))
    assert response.status_code == 200, response.content
    dump = full_dump()
    assert b"cases_message" in dump
    for needle in needles:
        assert needle not in dump and needle.lower() not in dump.lower()
    if connection.vendor == "sqlite":
        assert ciphertext[16:80] not in sqlite_files()
    # The other message is untouched, and the tombstone row is still there.
    assert bytes(Message.objects.get(seq=kept).ciphertext) != b""
    assert Message.objects.get(seq=seq).removed_reason == "recalled"
