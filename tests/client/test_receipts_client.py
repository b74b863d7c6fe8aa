"""collab.client.receipts: the server's receipts answer checked field by field, the same
states and words as the browser, and the watcher's debounced delivered reports."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from collab.client.errors import ServerRefusedError
from collab.client.receipts import CaseReceipts, DeliveredReporter
from collab.client.room import ConnectionLostError

ME, GOLD, SAM = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
NAMES = {ME: "me", GOLD: "Dr Gold", SAM: "Sam Patient"}


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
    receipts = CaseReceipts.from_wire(answer())
    assert receipts.summary(3, ME, NAMES.__getitem__) == \
        "Read by Dr Gold · delivered to Sam Patient"
    assert receipts.summary(2, ME, NAMES.__getitem__) == \
        "Acknowledged by Dr Gold · delivered to Sam Patient"
    assert receipts.summary(5, ME, NAMES.__getitem__) == \
        "Delivered to Dr Gold · not yet delivered to Sam Patient"
    alone = CaseReceipts.from_wire(answer(members=[{"user": str(ME), "read": None,
                                                    "delivered": None}], urgent=[]))
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
        CaseReceipts.from_wire(answer(**changes))
    assert refused.value.code == "bad_receipts"


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
