"""Consult bodies: the shared vectors (also read by frontend/tests/consult.test.mjs), the
builders, and the record a client reads from a case's messages."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from collab.client import consult
from collab.client.consult import ConsultBodyError, Item

VECTORS = json.loads(
    (Path(__file__).resolve().parents[1] / "policy" / "consult_bodies.json").read_text("utf-8")
)
DAY = consult.DAY_MS
T0 = 1764633600000  # 2025-12-02T00:00:00Z
REQUESTER, SPECIALIST, OTHER, PATIENT = (uuid.uuid4() for _ in range(4))


@pytest.mark.parametrize("case", VECTORS["valid"], ids=lambda c: c["name"])
def test_valid_vector_is_accepted(case: dict[str, Any]) -> None:
    consult.validate(case["content_type"], case["body"])
    assert consult.is_valid(case["content_type"], case["body"])


@pytest.mark.parametrize("case", VECTORS["invalid"], ids=lambda c: c["name"])
def test_invalid_vector_is_refused_with_its_code_and_field(case: dict[str, Any]) -> None:
    with pytest.raises(ConsultBodyError) as raised:
        consult.validate(case["content_type"], case["body"])
    assert (raised.value.code, raised.value.field) == (case["code"], case["field"])
    assert not consult.is_valid(case["content_type"], case["body"])


def test_vectors_cover_every_code() -> None:
    codes = {c["code"] for c in VECTORS["invalid"]}
    assert codes == {"bad_body", "missing_field", "bad_type", "too_long", "too_large", "bad_value"}


def test_lone_surrogate_is_refused() -> None:
    body = consult.time_entry_body(kind="manual", minutes=5, start_ms=T0, end_ms=T0)
    body["time"]["note"] = "\ud800"
    with pytest.raises(ConsultBodyError) as raised:
        consult.validate("time_entry", body)
    assert (raised.value.code, raised.value.field) == ("bad_value", "time.note")


def test_builders_make_valid_bodies_with_a_one_line_summary() -> None:
    body = consult.request_body(reason="Rash on both hands\nsince May", question="Eczema?",
                                urgency="urgent", callback_method="page",
                                callback_detail="bleep 221", patient_consent=True)
    assert body["text"] == "Rash on both hands"
    assert body["consult"]["callback"] == {"method": "page", "detail": "bleep 221"}
    report = consult.report_body(assessment="Contact dermatitis", recommendations="Emollient",
                                 minutes=12, first_date="2026-12-01", last_date="2026-12-01")
    assert report["text"] == "Report: Contact dermatitis"
    assert report["report"]["supersedes"] is None and "seen_in_last_14_days" not in report["report"]
    entry = consult.time_entry_body(kind="active", minutes=3, start_ms=T0, end_ms=T0 + 180_000)
    assert entry["text"] == "Time: 3 min active"


@pytest.mark.parametrize(
    ("kwargs", "code", "field"),
    [
        ({"minutes": -1}, "bad_value", "time.minutes"),
        ({"minutes": 1441, "kind": "manual"}, "bad_value", "time.minutes"),
        ({"end_ms": T0 - 1}, "bad_value", "time.end_ms"),
        ({"minutes": 30}, "bad_value", "time.minutes"),  # active: more than 10 min period
    ],
)
def test_builder_refuses_negative_or_absurd_time(kwargs: dict[str, Any], code: str,
                                                 field: str) -> None:
    args: dict[str, Any] = {"kind": "active", "minutes": 5, "start_ms": T0,
                            "end_ms": T0 + 600_000, **kwargs}
    with pytest.raises(ConsultBodyError) as raised:
        consult.time_entry_body(**args)
    assert (raised.value.code, raised.value.field) == (code, field)


def _req(seq: int, sender: uuid.UUID = REQUESTER, **kw: Any) -> Item:
    body = consult.request_body(reason=kw.pop("reason", "Lesion"), question="Excise?", **kw)
    return Item(seq, sender, T0, "consult_request", body)


def _rep(seq: int, sender: uuid.UUID = SPECIALIST, sent: int = T0, **kw: Any) -> Item:
    args = {"assessment": "Naevus", "recommendations": "Watch", "minutes": 10,
            "first_date": "2025-12-02", "last_date": "2025-12-02", **kw}
    return Item(seq, sender, sent, "consult_report", consult.report_body(**args))


def _time(seq: int, minutes: int, start: int, sender: uuid.UUID = SPECIALIST,
          kind: str = "manual") -> Item:
    body = consult.time_entry_body(kind=kind, minutes=minutes, start_ms=start,
                                   end_ms=start + minutes * 60_000)
    return Item(seq, sender, start, "time_entry", body)


def _record(items: list[Item]) -> consult.ConsultRecord:
    return consult.read_record(items, requester=REQUESTER, consultants=[SPECIALIST, OTHER])


def test_record_takes_the_latest_request_from_the_requester_only() -> None:
    record = _record([_req(1), _req(2, sender=SPECIALIST, reason="forged"),
                      _req(3, reason="Lesion, amended")])
    assert record.request is not None and record.request["reason"] == "Lesion, amended"
    assert (record.request_seq, record.request_amended, record.skipped) == (3, True, 1)


def test_newer_report_supersedes_the_named_one_and_both_stay() -> None:
    record = _record([_req(1), _rep(2), _rep(3, supersedes=2), _rep(4, sender=OTHER)])
    assert [(r.seq, r.superseded_by) for r in record.reports] == [(2, 3), (3, None), (4, None)]
    assert [r.seq for r in record.current_reports()] == [3, 4]
    latest = record.latest_report(SPECIALIST)
    assert latest is not None and latest.seq == 3


def test_report_or_time_from_a_non_consultant_is_skipped() -> None:
    record = _record([_req(1), _rep(2, sender=REQUESTER), _rep(3, sender=PATIENT),
                      _time(4, 5, T0, sender=PATIENT)])
    assert record.reports == [] and record.time == {} and record.skipped == 3


def test_invalid_body_is_skipped_not_raised() -> None:
    broken = Item(2, SPECIALIST, T0, "consult_report", {"text": "x", "report": "nope"})
    # A body that is JSON but not an object, as a hostile sender may encrypt.
    not_object = Item(3, SPECIALIST, T0, "time_entry", [])  # type: ignore[arg-type]
    record = _record([_req(1), broken, not_object])
    assert record.reports == [] and record.skipped == 2


def test_time_sums_per_consultant_with_its_date_range() -> None:
    record = _record([_time(1, 20, T0), _time(2, 6, T0 + DAY, kind="active"),
                      _time(3, 15, T0, sender=OTHER)])
    mine = record.time_of(SPECIALIST)
    assert (mine.minutes, mine.active_minutes, mine.manual_minutes) == (26, 6, 20)
    assert (mine.first_date, mine.last_date) == ("2025-12-02", "2025-12-03")
    assert record.time_of(OTHER).minutes == 15
    assert record.time_of(REQUESTER).minutes == 0


def test_entries_past_24_hours_a_day_are_skipped_and_refused_to_senders() -> None:
    record = _record([_time(1, 1000, T0), _time(2, 500, T0 + 3_600_000)])
    assert record.time_of(SPECIALIST).minutes == 1000 and record.skipped == 1
    entry = consult.time_entry_body(kind="manual", minutes=441, start_ms=T0, end_ms=T0)
    with pytest.raises(ConsultBodyError) as raised:
        consult.check_new_entry(record.time_of(SPECIALIST), entry)
    assert raised.value.code == "day_over_24h"
    consult.check_new_entry(record.time_of(SPECIALIST),
                            consult.time_entry_body(kind="manual", minutes=440,
                                                    start_ms=T0, end_ms=T0))


def test_billing_summary_fields() -> None:
    record = _record([_req(1, patient_consent=True), _time(2, 25, T0), _rep(3, minutes=25)])
    summary = consult.billing_summary(record, record.reports[0])
    assert summary == {
        "cumulative_minutes": 25, "first_date": "2025-12-02", "last_date": "2025-12-02",
        "recorded_minutes": 25, "request_reason_present": True,
        "written_report_present": True, "patient_consent": True, "warnings": [],
    }


def test_billing_summary_without_reason_or_consent() -> None:
    record = _record([_req(1, reason="  "), _rep(2, assessment="", recommendations="")])
    summary = consult.billing_summary(record, record.reports[0])
    assert summary["request_reason_present"] is False
    assert summary["written_report_present"] is False
    assert summary["patient_consent"] is False


def test_seven_day_warning_for_another_report_but_not_for_a_correction() -> None:
    record = _record([_req(1), _rep(2), _rep(3, supersedes=2, sent=T0 + DAY)])
    assert consult.billing_summary(record, record.reports[1])["warnings"] == []
    record = _record([_req(1), _rep(2), _rep(3, sender=OTHER, sent=T0 + 6 * DAY)])
    assert consult.billing_summary(record, record.reports[1])["warnings"] == ["seven_day"]
    record = _record([_req(1), _rep(2), _rep(3, sender=OTHER, sent=T0 + 8 * DAY)])
    assert consult.billing_summary(record, record.reports[1])["warnings"] == []


def test_fourteen_day_warnings() -> None:
    record = _record([_req(1), _rep(2, referral_needed=True, seen_in_last_14_days=True)])
    assert consult.billing_summary(record, record.reports[0])["warnings"] == [
        "fourteen_day_referral", "fourteen_day_seen"]
    assert set(consult.WARNINGS) == {"seven_day", "fourteen_day_referral", "fourteen_day_seen"}


def test_report_time_from_the_summary() -> None:
    assert consult.report_time(consult.TimeSummary(), T0) == (0, "2025-12-02", "2025-12-02")
    record = _record([_time(1, 20, T0), _time(2, 5, T0 + 2 * DAY)])
    assert consult.report_time(record.time_of(SPECIALIST), T0 + 3 * DAY) == (
        25, "2025-12-02", "2025-12-04")
