"""What the consult record says, read from the decrypted messages (docs/content-types.md):
the current request, the consultants' reports and their time. The browser's export-fhir.js
applies the same rules.

Bodies are read defensively: a field of the wrong type is treated as absent; a report or
time entry from someone who is not a consultant (a provider member who did not open the
case) does not count, as the content-type rules say."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from collab.client.export.model import ConsultExport, Member, Message, ms_date

URGENCIES = ("routine", "soon", "urgent")
DAY_MS = 86_400_000


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value if isinstance(value, int) else None


def _obj(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def is_consultant(export: ConsultExport, member: Member | None) -> bool:
    return member is not None and not member.patient \
        and member.user_id != export.case.get("opened_by")


def provider(export: ConsultExport, user_id: str) -> bool:
    member = export.member(user_id)
    return member is not None and not member.patient


@dataclass
class Request:
    message: Message
    reason: str
    question: str
    history: str
    medications: str
    tried: str
    urgency: str
    callback_method: str
    callback_detail: str
    patient_consent: bool
    amends: int | None  # seq of the first request, when this one amends it


def consult_request(export: ConsultExport) -> Request | None:
    """The latest consult_request from a provider member (the current request)."""
    found = [m for m in export.messages if m.content_type == "consult_request"
             and m.body is not None and provider(export, m.sender)]
    if not found:
        return None
    latest = found[-1]
    c = _obj(latest.body.get("consult") if latest.body else None)
    urgency = _str(c.get("urgency"))
    callback = _obj(c.get("callback"))
    return Request(
        message=latest, reason=_str(c.get("reason")), question=_str(c.get("question")),
        history=_str(c.get("history")), medications=_str(c.get("medications")),
        tried=_str(c.get("tried")), urgency=urgency if urgency in URGENCIES else "",
        callback_method=_str(callback.get("method")), callback_detail=_str(callback.get("detail")),
        patient_consent=c.get("patient_consent") is True,
        amends=found[0].seq if len(found) > 1 else None)


@dataclass
class Report:
    message: Message
    assessment: str
    recommendations: str
    follow_up: str
    referral_needed: bool
    supersedes: int | None
    minutes: int | None
    first_date: str
    last_date: str
    superseded_by: int | None = None


def reports(export: ConsultExport) -> list[Report]:
    """Every consult_report from a consultant, oldest first; one another names in
    ``supersedes`` is marked with the seq of the report that replaced it."""
    out: list[Report] = []
    for m in export.messages:
        if m.content_type != "consult_report" or m.body is None \
                or not is_consultant(export, export.member(m.sender)):
            continue
        r = _obj(m.body.get("report"))
        t = _obj(r.get("time"))
        supersedes = _int(r.get("supersedes"))
        out.append(Report(
            message=m, assessment=_str(r.get("assessment")),
            recommendations=_str(r.get("recommendations")), follow_up=_str(r.get("follow_up")),
            referral_needed=r.get("referral_needed") is True,
            supersedes=supersedes if supersedes is not None and supersedes >= 1 else None,
            minutes=_int(t.get("minutes")), first_date=_str(t.get("first_date")),
            last_date=_str(t.get("last_date"))))
    by_seq = {report.message.seq: report for report in out}
    for report in out:
        older = by_seq.get(report.supersedes) if report.supersedes is not None else None
        if older is not None and older.message.seq < report.message.seq:
            older.superseded_by = report.message.seq
    return out


@dataclass
class TimeTotal:
    user_id: str
    minutes: int
    entries: int
    first_date: str
    last_date: str


def _entry(m: Message) -> tuple[int, int, int] | None:
    """(minutes, start_ms, end_ms) of a time entry that keeps the rules, else None."""
    t = _obj((m.body or {}).get("time"))
    kind, minutes = t.get("kind"), _int(t.get("minutes"))
    start, end = _int(t.get("start_ms")), _int(t.get("end_ms"))
    if kind not in ("active", "manual") or minutes is None or start is None or end is None:
        return None
    if not 1 <= minutes <= 1440 or start < 0 or end < start or end - start > DAY_MS:
        return None
    if kind == "active" and minutes > math.ceil((end - start) / 60000):
        return None
    return minutes, start, end


def time_totals(export: ConsultExport) -> list[TimeTotal]:
    """Each consultant's time from their valid time entries, in order of first entry."""
    totals: dict[str, TimeTotal] = {}
    for m in export.messages:
        if m.content_type != "time_entry" or m.body is None \
                or not is_consultant(export, export.member(m.sender)):
            continue
        entry = _entry(m)
        if entry is None:
            continue
        minutes, start, end = entry
        first, last = ms_date(start), ms_date(end)
        total = totals.get(m.sender)
        if total is None:
            totals[m.sender] = TimeTotal(m.sender, minutes, 1, first, last)
        else:
            total.minutes += minutes
            total.entries += 1
            total.first_date = min(total.first_date, first)
            total.last_date = max(total.last_date, last)
    return list(totals.values())


@dataclass
class Billing:
    """The fields interprofessional consult billing asks for."""

    minutes: int
    first_date: str
    last_date: str
    reason_present: bool
    report_present: bool
    patient_consent: bool


def billing(export: ConsultExport) -> Billing:
    totals = time_totals(export)
    request = consult_request(export)
    return Billing(
        minutes=sum(t.minutes for t in totals),
        first_date=min((t.first_date for t in totals), default=""),
        last_date=max((t.last_date for t in totals), default=""),
        reason_present=request is not None and bool(request.reason.strip()),
        report_present=bool(reports(export)),
        patient_consent=request is not None and request.patient_consent)
