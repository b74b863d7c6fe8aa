"""The SDK's recall policy (collab/client/recall.py) on the shared vectors, the same
scenarios as the browser's (frontend/tests/recall-policy.test.mjs): "recalled by the
sender" only for a statement that verifies with a device of the sender in the verified
roster and names exactly the message; anything else is "removed by the server"."""

from __future__ import annotations

import dataclasses
import json
import uuid
from typing import Any

import pytest

from collab.client.recall import PURGED, RECALLED, REMOVED_BY_SERVER, judge_frame, judge_tombstone
from collab.crypto import primitives as prim
from collab.crypto.envelope import Header
from collab.crypto.log import LogEntry
from collab.crypto.recall import Recall
from collab.crypto.vectors import PATH
from collab.crypto.vectors.fixtures import BOB
from collab.crypto.wire import b64e

V: dict[str, Any] = json.loads(PATH.read_text(encoding="ascii"))
R = V["recall"]
CHAIN = [LogEntry.decode(bytes.fromhex(e["entry_bytes"])) for e in V["log"]["entries"]]
CASE = uuid.UUID(V["log"]["case_id"])
HEADER = Header.decode(bytes.fromhex(R["header_bytes"]))
SIG = b64e(bytes.fromhex(R["sig"]))


def tombstone(recall: dict[str, Any] | None, **extra: Any) -> dict[str, Any]:
    return {"seq": R["seq"], "stored_at": "2023-11-14T22:18:20+00:00", "urgent": False,
            "removed": {"reason": "recalled", "at": "2023-11-14T22:20:00+00:00",
                        "sender_user_id": str(HEADER.sender_user_id),
                        "sender_device_id": str(HEADER.sender_device_id), "recall": recall,
                        **extra}}


@pytest.mark.parametrize("known", [HEADER, None])
def test_the_vector_recall_is_the_senders(known: Header | None) -> None:
    verdict = judge_tombstone(CASE, tombstone({**R["wire"], "sig": SIG}), CHAIN, known)
    assert (verdict.verdict, verdict.detail) == (RECALLED, "")
    assert verdict.describe().startswith("recalled by the sender at ")
    frame = {"type": "recalled", "seq": R["seq"], "by": str(HEADER.sender_user_id), "at": "x",
             "device": R["device_id"], "sig": SIG, "recall": R["wire"]}
    assert judge_frame(CASE, frame, CHAIN, known).verdict == RECALLED


def test_no_statement_is_removed_by_the_server_and_a_purge_says_so() -> None:
    verdict = judge_tombstone(CASE, tombstone(None), CHAIN, HEADER)
    assert (verdict.verdict, verdict.sender_user_id) == (REMOVED_BY_SERVER, HEADER.sender_user_id)
    assert "recalled by the sender" not in verdict.describe()
    assert judge_tombstone(CASE, tombstone(None, reason="purged"), CHAIN, None).verdict == PURGED


def _by_bob() -> dict[str, Any]:
    statement = dataclasses.replace(Recall.from_wire(R["wire"]), device_id=BOB.d.device_id)
    return {**statement.to_wire(), "sig": b64e(prim.sign(BOB.d.dsk_seed, statement.encode()))}


@pytest.mark.parametrize(("recall", "code"), [
    ({**R["wire"], "sig": b64e(prim.sign(prim.sha512(b"\x00")[:32],
                                         bytes.fromhex(R["statement_bytes"])))},
     "bad_signature"),
    (_by_bob(), "unauthorized_author"),
    ({**R["wire"], "seq": R["seq"] + 1, "sig": SIG}, "recall_mismatch"),
    ({**R["wire"], "sig": "AAAA"}, "bad_length"),
], ids=["server key", "another member", "another seq", "garbage"])
def test_forged_recalls_are_removed_by_the_server(recall: dict[str, Any], code: str) -> None:
    verdict = judge_tombstone(CASE, tombstone(recall), CHAIN, HEADER)
    assert (verdict.verdict, verdict.detail) == (REMOVED_BY_SERVER, code)


def test_a_recall_of_another_header_is_refused_when_the_message_is_held() -> None:
    other = dataclasses.replace(HEADER, sent_ms=HEADER.sent_ms + 1)
    verdict = judge_tombstone(CASE, tombstone({**R["wire"], "sig": SIG}), CHAIN, other)
    assert (verdict.verdict, verdict.detail) == (REMOVED_BY_SERVER, "recall_mismatch")


# A device removed from the case (epoch 2) recalls: only the head roster or the roster of
# the message's epoch may vouch for the recalling device (protocol-crypto §9e).
RV = R["revoked"]
REVOKED_CHAIN = [*CHAIN, LogEntry.decode(bytes.fromhex(RV["entry_bytes"]))]
REVOKED_HEADER = Header.decode(bytes.fromhex(RV["header_bytes"]))


@pytest.mark.parametrize("known", [REVOKED_HEADER, None], ids=["held", "not held"])
def test_a_recall_by_a_device_removed_before_the_message_is_removed_by_the_server(
        known: Header | None) -> None:
    item = {**tombstone({**RV["wire"], "sig": b64e(bytes.fromhex(RV["sig"]))}), "seq": RV["seq"]}
    verdict = judge_tombstone(CASE, item, REVOKED_CHAIN, known)
    assert (verdict.verdict, verdict.detail) == (REMOVED_BY_SERVER, RV["error"])
    frame = {"type": "recalled", "seq": RV["seq"], "by": str(HEADER.sender_user_id), "at": "x",
             "device": RV["wire"]["device_id"], "sig": b64e(bytes.fromhex(RV["sig"])),
             "recall": RV["wire"]}
    assert judge_frame(CASE, frame, REVOKED_CHAIN, known).detail == RV["error"]


def test_a_device_removed_since_still_recalls_a_message_of_its_epoch_when_held() -> None:
    item = tombstone({**R["wire"], "sig": SIG})
    assert judge_tombstone(CASE, item, REVOKED_CHAIN, HEADER).verdict == RECALLED
    # Without the header the message's epoch is unknown: only the head roster counts.
    verdict = judge_tombstone(CASE, item, REVOKED_CHAIN, None)
    assert (verdict.verdict, verdict.detail) == (REMOVED_BY_SERVER, "unauthorized_author")
