"""collab.client.receipts: the server's receipts answer checked field by field and kept
to the verified roster (a lying server naming an outsider), the same states and words as
the browser, and the watcher's debounced delivered reports."""

from __future__ import annotations

import argparse
import asyncio
import io
import uuid
from types import SimpleNamespace
from typing import Any

import pytest

from collab.client.errors import ServerRefusedError
from collab.client.receipts import SERVER_REPORTED, CaseReceipts, DeliveredReporter
from collab.client.receipts_cli import as_json, lines, run
from collab.client.room import ConnectionLostError

ME, GOLD, SAM = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
MALLORY = uuid.uuid4()  # named by the server, not in the verified roster
NAMES = {ME: "me", GOLD: "Dr Gold", SAM: "Sam Patient", MALLORY: "Dr Mallory"}
ROSTER = (ME, GOLD, SAM)  # the user ids of the verified head roster


def answer(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "case": str(uuid.uuid4()), "last_seq": 5,
        "members": [
            {"user": str(ME), "read": None, "delivered": None},
            {"user": str(GOLD), "read": {"up_to": 4, "at": "t1"},
             "delivered": {"up_to": 5, "at": "t2"}},
            {"user": str(SAM), "read": None, "delivered": {"up_to": 3, "at": "t3"}},
        ],
        "urgent": [{"seq": 2, "acknowledged": [{"user": str(GOLD), "at": "t0"}]}],
    }
    body.update(changes)
    return body


def test_states_and_words_match_the_browser() -> None:
    receipts = CaseReceipts.from_wire(answer(), ROSTER)
    assert receipts.summary(3, ME, NAMES.__getitem__) == \
        "Read by Dr Gold · delivered to Sam Patient"
    assert receipts.summary(2, ME, NAMES.__getitem__) == \
        "Acknowledged by Dr Gold · delivered to Sam Patient"
    assert receipts.summary(5, ME, NAMES.__getitem__) == \
        "Delivered to Dr Gold · not yet delivered to Sam Patient"
    alone = CaseReceipts.from_wire(answer(members=[{"user": str(ME), "read": None,
                                                    "delivered": None}], urgent=[]),
                                   ROSTER)
    assert alone.summary(1, ME, NAMES.__getitem__) == "Delivered"


@pytest.mark.parametrize("changes", [
    {"members": "nope"},
    {"last_seq": -1},
    {"last_seq": True},
    {"members": [{"user": "not-a-uuid", "read": None, "delivered": None}]},
    {"members": [{"user": str(GOLD), "read": {"up_to": 0, "at": "t"}, "delivered": None}]},
    {"members": [{"user": str(GOLD), "read": {"up_to": "4", "at": "t"}, "delivered": None}]},
    {"urgent": [{"seq": "2", "acknowledged": []}]},
])
def test_a_malformed_answer_is_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ServerRefusedError) as refused:
        CaseReceipts.from_wire(answer(**changes), ROSTER)
    assert refused.value.code == "bad_receipts"


def lying() -> dict[str, Any]:
    """The answer of a server that names an outsider as having received, read and
    acknowledged everything."""
    body = answer()
    full = {"up_to": 5, "at": "t9"}
    body["members"].append({"user": str(MALLORY), "read": full, "delivered": full})
    body["urgent"][0]["acknowledged"].insert(0, {"user": str(MALLORY), "at": "t9"})
    body["urgent"].append({"seq": 5, "acknowledged": [{"user": str(MALLORY), "at": "t9"}]})
    return body


def test_a_user_the_server_names_outside_the_verified_roster_is_never_shown() -> None:
    receipts = CaseReceipts.from_wire(lying(), ROSTER)
    assert [m.user_id for m in receipts.members] == [ME, GOLD, SAM]
    assert receipts.acknowledged == {2: ((GOLD, "t0"),), 5: ()}
    # The members' receipts are still there, the outsider's nowhere.
    assert receipts.summary(2, ME, NAMES.__getitem__) == \
        "Acknowledged by Dr Gold · delivered to Sam Patient"
    assert receipts.summary(5, ME, NAMES.__getitem__) == \
        "Delivered to Dr Gold · not yet delivered to Sam Patient"
    assert receipts.state(MALLORY, 5) == "pending"
    out = "\n".join(lines(receipts, NAMES.__getitem__, str)) + as_json(receipts)
    assert "Mallory" not in out and str(MALLORY) not in out
    assert "Dr Gold: read up to #4" in out


def test_a_member_the_server_lists_but_the_roster_no_longer_holds_is_dropped() -> None:
    receipts = CaseReceipts.from_wire(answer(), (ME, SAM))
    assert receipts.summary(2, ME, NAMES.__getitem__) == "Delivered to Sam Patient"
    assert receipts.acknowledged == {2: ()}
    nobody = CaseReceipts.from_wire(lying(), ())  # no verified roster: nobody (fails closed)
    assert (nobody.members, nobody.summary(3, ME, NAMES.__getitem__)) == ((), "Delivered")


def test_the_command_line_says_whose_report_it_is() -> None:
    receipts = CaseReceipts.from_wire(answer(), ROSTER)
    out = lines(receipts, NAMES.__getitem__, str)
    assert out[0] == f"Receipts {SERVER_REPORTED}."
    assert out[0].startswith("Receipts as reported by the server: receipts are not signed")
    client = SimpleNamespace(user_id=ME, receipts=lambda case: receipts)
    written = io.StringIO()
    run(client, argparse.Namespace(case=uuid.uuid4(), seq=3, json=False),  # type: ignore[arg-type]
        written, NAMES.__getitem__, str)
    assert written.getvalue() == \
        "#3 Read by Dr Gold · delivered to Sam Patient (as reported by the server)\n"


def test_delivered_reports_are_debounced_and_retried_after_a_failure() -> None:
    sent: list[int] = []
    fail = [True]

    async def send(up_to: int) -> None:
        if fail[0]:
            fail[0] = False
            raise ConnectionLostError("gone")
        sent.append(up_to)

    async def flow() -> None:
        reporter = DeliveredReporter(send, delay=0.01)
        for seq in (1, 3, 2):
            reporter.note(seq)
        assert reporter.task is not None
        await reporter.task  # the failed send leaves the mark unsent
        assert (sent, reporter.sent) == ([], 0)
        reporter.note(3)  # the next note sends it
        await reporter.task
        reporter.note(2)  # covered already: nothing scheduled
        assert reporter.task is None or reporter.task.done()
        reporter.note(5)
        await reporter.task

    asyncio.run(flow())
    assert sent == [3, 5]
