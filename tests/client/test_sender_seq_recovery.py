"""A device whose keystore is behind (another run of the same device sent more) recovers
by itself against a real server: the send is refused ``sender_seq_not_increasing`` with
the structured ``last_sender_seq``, the SDK seals the same message (same client_msg_id)
again above it, and it is stored once. A refusal without that field is raised, never
guessed from the message text.

The stale run is the keystore file copied before the other run sent (what a second
laptop restored from a backup, or a CLI run with an old copy, would hold)."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from collab.cases import models as m
from collab.client.errors import ServerRefusedError
from collab.client.keystore import Keystore
from collab.client.room import Room
from collab.client.sdk import CollabClient
from collab.crypto.envelope import Envelope
from collab.crypto.wire import b64d
from tests.support.clients import PASS, new_member, reload
from tests.support.live import daphne_servers

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]


@pytest.fixture(scope="module")
def server(django_db_setup: None, django_db_blocker: Any) -> Iterator[str]:
    with django_db_blocker.unblock(), daphne_servers(1) as urls:
        yield urls[0]


@pytest.fixture
def refusals(monkeypatch: pytest.MonkeyPatch) -> list[ServerRefusedError]:
    """Every refusal frame answering a send, as the SDK received it."""
    seen: list[ServerRefusedError] = []
    real = Room.send_envelope

    async def spied(self: Room, envelope: Envelope, timeout: float = 30) -> dict[str, Any]:
        try:
            return await real(self, envelope, timeout)
        except ServerRefusedError as refused:
            seen.append(refused)
            raise

    monkeypatch.setattr(Room, "send_envelope", spied)
    return seen


def stale_copy(client: CollabClient, home: Path) -> Path:
    """The client's keystore file as it is now, kept aside for a later (stale) run."""
    assert client.store is not None
    target = home / "stale" / "keystore.json"
    target.parent.mkdir(mode=0o700)
    shutil.copy2(client.store.path, target)  # keeps mode 0600
    return target


def open_stale(server: str, path: Path) -> CollabClient:
    return CollabClient(server, keystore=Keystore.load(path, PASS))


def device_rows(case_id: uuid.UUID, device_id: uuid.UUID) -> list[tuple[bytes, int]]:
    return [(bytes(cmid), seq) for cmid, seq in m.Message.objects.filter(
        case_id=case_id, sender_device_id=device_id).order_by("seq")
        .values_list("client_msg_id", "sender_seq")]


def case_with_member(server: str, home: Path) -> tuple[CollabClient, CollabClient, uuid.UUID]:
    pcp = new_member(server, "pcp", home)
    derm = new_member(server, "derm", home)
    case_id = pcp.open_case()
    pcp.add_member(case_id, derm.user_id)
    return pcp, derm, case_id


def test_a_stale_keystore_is_refused_then_recovers_and_the_message_is_stored_once(
        server: str, tmp_path: Path, refusals: list[ServerRefusedError]) -> None:
    pcp, derm, case_id = case_with_member(server, tmp_path)
    saved = stale_copy(pcp, tmp_path)  # this device has sent nothing yet

    first = asyncio.run(pcp.send_text(case_id, "biopsy booked"))
    second = asyncio.run(pcp.send_text(case_id, "results in a week"))
    assert refusals == []
    device = pcp.device.device_id
    assert [seq for _, seq in device_rows(case_id, device)] == [1, 2]

    # The same device, from the copy taken before those sends: it believes it sent none.
    stale = open_stale(server, saved)
    assert stale.device.device_id == device
    assert stale.state.cases[str(case_id)].sender_seq == 0
    sent = asyncio.run(stale.send_text(case_id, "from the old copy"))

    # The server refused the first try with the structured field, and only that once.
    assert [r.code for r in refusals] == ["sender_seq_not_increasing"]
    assert refusals[0].status is None  # an error frame answering the send
    assert refusals[0].body["last_sender_seq"] == 2
    # The retry was the same message (same client_msg_id), sealed above the last one.
    rows = device_rows(case_id, device)
    assert rows == [(first.client_msg_id, 1), (second.client_msg_id, 2),
                    (sent.client_msg_id, 3)]
    assert [cmid for cmid, _ in rows].count(sent.client_msg_id) == 1
    assert not sent.duplicate
    assert m.Message.objects.filter(case_id=case_id).count() == 3
    assert stale.outbox() == []
    assert stale.state.sent[-1]["seq"] == sent.seq  # the ack of the resealed envelope
    # Kept between runs: the next run of the stale copy starts above 3.
    again = reload(stale)
    assert again.outbox() == []
    assert again.state.cases[str(case_id)].sender_seq == 3

    # Another member reads all three, in order, with no false gap for the third.
    got = derm.history(case_id)
    assert [r.text for r in got] == ["biopsy booked", "results in a week", "from the old copy"]
    assert [r.header.sender_seq for r in got] == [1, 2, 3]
    assert got[-1].header.client_msg_id == sent.client_msg_id
    assert all(r.gap is None for r in got)

    # Now the first run is the one behind (it remembers 2): it recovers the same way.
    later = asyncio.run(pcp.send_text(case_id, "and from the first again"))
    assert [r.body.get("last_sender_seq") for r in refusals] == [2, 3]
    assert device_rows(case_id, device)[-1] == (later.client_msg_id, 4)
    assert pcp.outbox() == []


@pytest.mark.parametrize("field", ["missing", "text", "bool", "float", "null"])
def test_a_refusal_without_last_sender_seq_is_raised_not_guessed(
        server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        refusals: list[ServerRefusedError], field: str) -> None:
    """The real server's refusal with the field taken away (or spoilt) on the way: the
    SDK raises it; the message is not stored and waits in the outbox, unchanged."""
    pcp, _derm, case_id = case_with_member(server, tmp_path)
    saved = stale_copy(pcp, tmp_path)
    asyncio.run(pcp.send_text(case_id, "biopsy booked"))
    asyncio.run(pcp.send_text(case_id, "results in a week"))

    spied = Room.send_envelope
    spoilt = {"missing": None, "text": "2", "bool": True, "float": 2.0, "null": None}[field]

    async def without_field(self: Room, envelope: Envelope, timeout: float = 30
                            ) -> dict[str, Any]:
        try:
            return await spied(self, envelope, timeout)
        except ServerRefusedError as refused:
            if field == "missing":
                refused.body.pop("last_sender_seq", None)
            else:
                refused.body["last_sender_seq"] = spoilt
            raise

    monkeypatch.setattr(Room, "send_envelope", without_field)
    stale = open_stale(server, saved)
    with pytest.raises(ServerRefusedError) as raised:
        asyncio.run(stale.send_text(case_id, "from the old copy"))

    assert raised.value.code == "sender_seq_not_increasing"
    assert raised.value is refusals[-1]  # the server's refusal itself, raised
    assert len(refusals) == 1  # not sent again with a guessed sender_seq
    # The prose still names the number: the SDK did not read it.
    assert "2" in raised.value.message
    assert m.Message.objects.filter(case_id=case_id).count() == 2
    pending = stale.outbox(case_id)
    assert [e["id"] for e in pending] == [raised.value.pending_id]
    assert pending[0]["envelope"]["sender_seq"] == 1  # as first sealed: no bump
    assert stale.cases[case_id].sender_seq == 1


@pytest.mark.parametrize("body", [
    {"code": "sender_seq_not_increasing", "message": "sender_seq must exceed 41."},
    {"code": "sender_seq_not_increasing", "message": "sender_seq must exceed 41.",
     "last_sender_seq": "41"},
    {"code": "sender_seq_not_increasing", "last_sender_seq": True},
    {"code": "sender_seq_not_increasing", "last_sender_seq": 41.0},
    {"code": "sender_seq_not_increasing", "last_sender_seq": None},
    {},
], ids=["prose-only", "string", "bool", "float", "null", "no-body"])
def test_reseal_raises_the_refusal_when_the_field_is_not_an_integer(
        server: str, tmp_path: Path, body: dict[str, Any]) -> None:
    pcp, _derm, case_id = case_with_member(server, tmp_path)
    entry = pcp._seal_into_outbox(case_id, "key", {"text": "biopsy booked"}, "text", ())
    before = dict(entry["envelope"])
    refused = ServerRefusedError("sender_seq must exceed 41.",
                                 code="sender_seq_not_increasing", body=body)
    with pytest.raises(ServerRefusedError) as raised:
        pcp._reseal(entry, refused)
    assert raised.value is refused
    assert entry["envelope"] == before  # not sealed again
    assert pcp.cases[case_id].sender_seq == 1
    assert pcp.state.cases[str(case_id)].sender_seq == 1


def test_reseal_with_the_field_seals_the_same_message_above_it(
        server: str, tmp_path: Path) -> None:
    """The positive twin of the test above, so that one fails if _reseal stops looking."""
    pcp, _derm, case_id = case_with_member(server, tmp_path)
    entry = pcp._seal_into_outbox(case_id, "key", {"text": "biopsy booked"}, "text", ())
    old = Envelope.from_wire(entry["envelope"]).header
    refused = ServerRefusedError("sender_seq must exceed 9.", code="sender_seq_not_increasing",
                                 body={"code": "sender_seq_not_increasing",
                                       "message": "sender_seq must exceed 9.",
                                       "last_sender_seq": 41})
    pcp._reseal(entry, refused)
    new = Envelope.from_wire(entry["envelope"]).header
    assert new.client_msg_id == old.client_msg_id == b64d(entry["id"])
    assert new.sender_seq == 42  # the field, not the prose
    assert pcp.state.cases[str(case_id)].sender_seq == 42
