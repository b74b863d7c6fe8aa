"""The consult as a record: the bodies of ``consult_request``, ``consult_report`` and
``time_entry`` messages (docs/content-types.md), their validation, and the record a
client reads out of a case's history (the current request, the reports and which one
supersedes which, each consultant's time and the billing summary).

Pure: no network, no Django. ``frontend/static/collab/app/consult.js`` applies the same
rules with the same codes; both are tested on ``tests/policy/consult_bodies.json``.
Senders build bodies only through the validators; receivers validate too and treat a
body that fails as unsupported (``read_record`` skips it), never as an error.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from collab.client.errors import UsageError

REQUEST = "consult_request"
REPORT = "consult_report"
TIME_ENTRY = "time_entry"
CONTENT_TYPES = (REQUEST, REPORT, TIME_ENTRY)

MAX_TEXT = 1000
MAX_SHORT = 500
MAX_LONG = 8000
MAX_BODY_BYTES = 40000
MAX_ENTRY_MINUTES = 1440
DAY_MS = 86_400_000
MAX_MS = 2**53 - 1  # JavaScript's largest exact integer: both clients read the same value
URGENCIES = ("routine", "soon", "urgent")
CALLBACK_METHODS = ("message", "phone", "page")
TIME_KINDS = ("active", "manual")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
SEVEN_DAYS_MS = 7 * DAY_MS

# The request's and the report's long text fields.
REQUEST_LONG = ("question", "history", "medications", "tried")
REPORT_LONG = ("assessment", "recommendations", "follow_up")


class ConsultBodyError(UsageError):
    """A body that breaks the rules of docs/content-types.md; ``field`` names where."""

    def __init__(self, code: str, field_path: str, message: str) -> None:
        super().__init__(f"{field_path or 'body'}: {message}", code=code)
        self.field = field_path


# --- validation ----------------------------------------------------------------------


def _get(obj: Mapping[str, Any], key: str, path: str) -> Any:
    if key not in obj:
        raise ConsultBodyError("missing_field", path, "is missing")
    return obj[key]


def _string(value: Any, path: str, limit: int) -> str:
    if not isinstance(value, str):
        raise ConsultBodyError("bad_type", path, "must be a string")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise ConsultBodyError("bad_value", path, "is not well-formed text") from None
    if size > limit:
        raise ConsultBodyError("too_long", path, f"is over {limit} bytes")
    return value


def _object(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ConsultBodyError("bad_type", path, "must be an object")
    return value


def _bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise ConsultBodyError("bad_type", path, "must be true or false")
    return value


def _int(value: Any, path: str, low: int, high: int) -> int:
    # 5.0 reads as 5, as JSON.parse gives it in the browser; a bool is not a number.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConsultBodyError("bad_type", path, "must be an integer")
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise ConsultBodyError("bad_type", path, "must be an integer")
    number = int(value)
    if not low <= number <= high:
        raise ConsultBodyError("bad_value", path, f"must be between {low} and {high}")
    return number


def _choice(value: Any, path: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str):
        raise ConsultBodyError("bad_type", path, "must be a string")
    if value not in choices:
        raise ConsultBodyError("bad_value", path, f"must be one of {', '.join(choices)}")
    return value


def _date(value: Any, path: str) -> dt.date:
    if not isinstance(value, str):
        raise ConsultBodyError("bad_type", path, "must be a YYYY-MM-DD string")
    if not _DATE.match(value):
        raise ConsultBodyError("bad_value", path, "must be YYYY-MM-DD")
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ConsultBodyError("bad_value", path, "is not a calendar date") from None


def encode(body: Mapping[str, Any]) -> bytes:
    """The sender's serialisation (collab.crypto.envelope.encode_body's rules)."""
    return json.dumps(
        body, ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False
    ).encode("utf-8")


def validate(content_type: str, body: Any) -> None:
    """Raise ConsultBodyError unless ``body`` is a valid body of ``content_type``."""
    if content_type not in CONTENT_TYPES:
        raise ConsultBodyError("bad_body", "", f"{content_type!r} is not a consult type")
    if not isinstance(body, dict):
        raise ConsultBodyError("bad_body", "", "the body must be a JSON object")
    _string(_get(body, "text", "text"), "text", MAX_TEXT)
    if content_type == REQUEST:
        _validate_request(_object(_get(body, "consult", "consult"), "consult"))
    elif content_type == REPORT:
        _validate_report(_object(_get(body, "report", "report"), "report"))
    else:
        _validate_time(_object(_get(body, "time", "time"), "time"))
    try:
        size = len(encode(body))
    except (TypeError, ValueError, UnicodeEncodeError):
        raise ConsultBodyError("bad_body", "", "the body does not serialise as JSON") from None
    if size > MAX_BODY_BYTES:
        raise ConsultBodyError("too_large", "", f"the body is over {MAX_BODY_BYTES} bytes")


def _validate_request(c: Mapping[str, Any]) -> None:
    _string(_get(c, "reason", "consult.reason"), "consult.reason", MAX_SHORT)
    for name in REQUEST_LONG:
        _string(_get(c, name, f"consult.{name}"), f"consult.{name}", MAX_LONG)
    _choice(_get(c, "urgency", "consult.urgency"), "consult.urgency", URGENCIES)
    callback = _object(_get(c, "callback", "consult.callback"), "consult.callback")
    _choice(
        _get(callback, "method", "consult.callback.method"),
        "consult.callback.method",
        CALLBACK_METHODS,
    )
    _string(
        _get(callback, "detail", "consult.callback.detail"), "consult.callback.detail", MAX_SHORT
    )
    _bool(_get(c, "patient_consent", "consult.patient_consent"), "consult.patient_consent")


def _validate_report(r: Mapping[str, Any]) -> None:
    for name in REPORT_LONG:
        _string(_get(r, name, f"report.{name}"), f"report.{name}", MAX_LONG)
    _bool(_get(r, "referral_needed", "report.referral_needed"), "report.referral_needed")
    supersedes = _get(r, "supersedes", "report.supersedes")
    if supersedes is not None:
        _int(supersedes, "report.supersedes", 1, MAX_MS)
    if "seen_in_last_14_days" in r:
        _bool(r["seen_in_last_14_days"], "report.seen_in_last_14_days")
    t = _object(_get(r, "time", "report.time"), "report.time")
    first = _date(_get(t, "first_date", "report.time.first_date"), "report.time.first_date")
    last = _date(_get(t, "last_date", "report.time.last_date"), "report.time.last_date")
    if last < first:
        raise ConsultBodyError("bad_value", "report.time.last_date", "is before first_date")
    days = (last - first).days + 1
    _int(_get(t, "minutes", "report.time.minutes"), "report.time.minutes", 0, 1440 * days)


def _validate_time(t: Mapping[str, Any]) -> None:
    kind = _choice(_get(t, "kind", "time.kind"), "time.kind", TIME_KINDS)
    minutes = _int(_get(t, "minutes", "time.minutes"), "time.minutes", 1, MAX_ENTRY_MINUTES)
    start = _int(_get(t, "start_ms", "time.start_ms"), "time.start_ms", 0, MAX_MS)
    end = _int(_get(t, "end_ms", "time.end_ms"), "time.end_ms", 0, MAX_MS)
    if end < start:
        raise ConsultBodyError("bad_value", "time.end_ms", "is before start_ms")
    if end - start > DAY_MS:
        raise ConsultBodyError("bad_value", "time.end_ms", "is more than 24 h after start_ms")
    if kind == "active" and minutes > math.ceil((end - start) / 60000):
        raise ConsultBodyError("bad_value", "time.minutes", "is more than the period holds")
    _string(_get(t, "note", "time.note"), "time.note", MAX_SHORT)


def is_valid(content_type: str, body: Any) -> bool:
    try:
        validate(content_type, body)
    except ConsultBodyError:
        return False
    return True


# --- building ------------------------------------------------------------------------


def _line(text: str, limit: int = 200) -> str:
    """A one-line summary: the first line, cut at ``limit`` characters."""
    first = (text.strip().splitlines() or [""])[0]
    return first if len(first) <= limit else first[: limit - 1] + "…"


def request_body(
    *,
    reason: str,
    question: str,
    history: str = "",
    medications: str = "",
    tried: str = "",
    urgency: str = "routine",
    callback_method: str = "message",
    callback_detail: str = "",
    patient_consent: bool = False,
    text: str | None = None,
) -> dict[str, Any]:
    body = {
        "text": _line(reason) if text is None else text,
        "consult": {
            "reason": reason,
            "question": question,
            "history": history,
            "medications": medications,
            "tried": tried,
            "urgency": urgency,
            "callback": {"method": callback_method, "detail": callback_detail},
            "patient_consent": patient_consent,
        },
    }
    validate(REQUEST, body)
    return body


def report_body(
    *,
    assessment: str,
    recommendations: str,
    follow_up: str = "",
    referral_needed: bool = False,
    supersedes: int | None = None,
    minutes: int,
    first_date: str,
    last_date: str,
    seen_in_last_14_days: bool | None = None,
    text: str | None = None,
) -> dict[str, Any]:
    report: dict[str, Any] = {
        "assessment": assessment,
        "recommendations": recommendations,
        "follow_up": follow_up,
        "referral_needed": referral_needed,
        "supersedes": supersedes,
        "time": {"minutes": minutes, "first_date": first_date, "last_date": last_date},
    }
    if seen_in_last_14_days is not None:
        report["seen_in_last_14_days"] = seen_in_last_14_days
    body = {"text": "Report: " + _line(assessment) if text is None else text, "report": report}
    validate(REPORT, body)
    return body


def time_entry_body(
    *, kind: str, minutes: int, start_ms: int, end_ms: int, note: str = "", text: str | None = None
) -> dict[str, Any]:
    body = {
        "text": f"Time: {minutes} min {kind}" if text is None else text,
        "time": {
            "kind": kind,
            "minutes": minutes,
            "start_ms": start_ms,
            "end_ms": end_ms,
            "note": note,
        },
    }
    validate(TIME_ENTRY, body)
    return body


# --- reading the record --------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One opened message, as the record needs it."""

    seq: int
    sender: uuid.UUID
    sent_ms: int
    content_type: str
    body: Mapping[str, Any]


@dataclass
class Report:
    seq: int
    author: uuid.UUID
    sent_ms: int
    report: Mapping[str, Any]
    superseded_by: int | None = None


@dataclass
class TimeSummary:
    minutes: int = 0
    active_minutes: int = 0
    manual_minutes: int = 0
    first_date: str | None = None
    last_date: str | None = None
    entries: int = 0
    per_day: dict[str, int] = field(default_factory=dict)

    def wire(self) -> dict[str, Any]:
        return {
            "minutes": self.minutes,
            "active_minutes": self.active_minutes,
            "manual_minutes": self.manual_minutes,
            "first_date": self.first_date,
            "last_date": self.last_date,
            "entries": self.entries,
        }


@dataclass
class ConsultRecord:
    requester: uuid.UUID
    request: Mapping[str, Any] | None = None
    request_seq: int | None = None
    request_amended: bool = False
    reports: list[Report] = field(default_factory=list)
    time: dict[uuid.UUID, TimeSummary] = field(default_factory=dict)
    # Consult messages that failed validation or came from someone not allowed to send
    # them: shown as unsupported, counted here.
    skipped: int = 0

    def current_reports(self) -> list[Report]:
        return [r for r in self.reports if r.superseded_by is None]

    def latest_report(self, author: uuid.UUID | None = None) -> Report | None:
        mine = [r for r in self.reports if author is None or r.author == author]
        current = [r for r in mine if r.superseded_by is None]
        chosen = current or mine
        return chosen[-1] if chosen else None

    def time_of(self, user: uuid.UUID) -> TimeSummary:
        return self.time.get(user, TimeSummary())


def utc_date(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).date().isoformat()


def read_record(
    items: Iterable[Item], *, requester: uuid.UUID, consultants: Iterable[uuid.UUID]
) -> ConsultRecord:
    """The record from a case's messages in seq order. ``requester`` is the case's
    opener (the genesis entry's author); ``consultants`` the provider members who did
    not open it. A request counts only from the requester, reports and time only from
    a consultant; anything else, and every invalid body, is skipped."""
    allowed = set(consultants)
    record = ConsultRecord(requester=requester)
    by_seq: dict[int, Report] = {}
    for item in items:
        if item.content_type not in CONTENT_TYPES:
            continue
        if not is_valid(item.content_type, item.body):
            record.skipped += 1
            continue
        if item.content_type == REQUEST:
            if item.sender != requester:
                record.skipped += 1
                continue
            record.request_amended = record.request is not None
            record.request, record.request_seq = item.body["consult"], item.seq
        elif item.sender not in allowed:
            record.skipped += 1
        elif item.content_type == REPORT:
            report = Report(item.seq, item.sender, item.sent_ms, item.body["report"])
            older = by_seq.get(_as_int(report.report.get("supersedes")))
            if older is not None and older.superseded_by is None:
                older.superseded_by = item.seq
            by_seq[item.seq] = report
            record.reports.append(report)
        else:
            if not _add_time(record.time.setdefault(item.sender, TimeSummary()), item.body):
                record.skipped += 1
    return record


def _as_int(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def _add_time(summary: TimeSummary, body: Mapping[str, Any]) -> bool:
    """Add one valid entry; an entry that would take its day past 24 h is skipped."""
    t = body["time"]
    minutes = int(t["minutes"])
    day = utc_date(int(t["start_ms"]))
    if summary.per_day.get(day, 0) + minutes > MAX_ENTRY_MINUTES:
        return False
    summary.per_day[day] = summary.per_day.get(day, 0) + minutes
    summary.minutes += minutes
    if t["kind"] == "active":
        summary.active_minutes += minutes
    else:
        summary.manual_minutes += minutes
    last = utc_date(int(t["end_ms"]))
    summary.first_date = min(filter(None, (summary.first_date, day)))
    summary.last_date = max(filter(None, (summary.last_date, last)))
    summary.entries += 1
    return True


def check_new_entry(summary: TimeSummary, body: Mapping[str, Any]) -> None:
    """Refuse (``day_over_24h``) an entry that would take its sender past 24 h a day."""
    validate(TIME_ENTRY, body)
    t = body["time"]
    day = utc_date(int(t["start_ms"]))
    if summary.per_day.get(day, 0) + int(t["minutes"]) > MAX_ENTRY_MINUTES:
        raise ConsultBodyError(
            "day_over_24h", "time.minutes", f"would take {day} past 1440 minutes"
        )


# --- the billing summary -------------------------------------------------------------

WARNINGS = {
    "seven_day": (
        "Another report in this case lies within 7 days of this one: interprofessional "
        "consult codes are reported once per patient in 7 days (reports in other cases "
        "are not visible here)."
    ),
    "fourteen_day_referral": (
        "A face-to-face referral is recommended: if the patient is seen face to face "
        "within 14 days, the interprofessional consult codes do not apply."
    ),
    "fourteen_day_seen": (
        "The consultant saw the patient face to face in the last 14 days: the "
        "interprofessional consult codes do not apply."
    ),
}


def billing_summary(record: ConsultRecord, report: Report) -> dict[str, Any]:
    """The fields interprofessional consult billing asks for, for one report, and the
    advisory warnings (codes from WARNINGS; advice only, nothing is refused)."""
    time = record.time_of(report.author)
    stated = report.report["time"]
    warnings = []
    replaced = {_as_int(report.report.get("supersedes"))}
    for other in record.reports:
        # A correction is the same consult: the report this one replaces, or the one
        # that replaced it, does not count as another report.
        if other.seq in (report.seq, report.superseded_by) or other.seq in replaced \
                or other.superseded_by == report.seq:
            continue
        if abs(other.sent_ms - report.sent_ms) < SEVEN_DAYS_MS:
            warnings.append("seven_day")
            break
    if report.report.get("referral_needed") is True:
        warnings.append("fourteen_day_referral")
    if report.report.get("seen_in_last_14_days") is True:
        warnings.append("fourteen_day_seen")
    request = record.request or {}
    reason = request.get("reason")
    return {
        # What the report states (signed with it); ``recorded_minutes`` is the author's
        # time entries now, which may have grown since.
        "cumulative_minutes": _as_int(stated["minutes"]),
        "first_date": stated["first_date"],
        "last_date": stated["last_date"],
        "recorded_minutes": time.minutes,
        "request_reason_present": isinstance(reason, str) and bool(reason.strip()),
        "written_report_present": any(
            str(report.report.get(k, "")).strip() for k in ("assessment", "recommendations")
        ),
        "patient_consent": request.get("patient_consent") is True,
        "warnings": warnings,
    }


def report_time(summary: TimeSummary, today_ms: int) -> tuple[int, str, str]:
    """(minutes, first_date, last_date) for a new report's ``time`` field."""
    today = utc_date(today_ms)
    first = summary.first_date or today
    last = max(summary.last_date or today, first)
    return summary.minutes, first, last
