"""What the consult record says, for the export: the current request, the consultants'
reports and their time, read with the room's own rules (collab.client.consult:
``read_record`` and ``billing_summary``, docs/content-types.md), so an export shows the
record exactly as the room does. The browser's export-record.js does the same over
consult.js.

A request counts only from the case's opener (the verified genesis entry's author, the
model's ``requester``; never the server's ``opened_by``), reports and time entries only from a
consultant (a provider member who did not open the case), and only bodies that pass
validation; the others are still exported as plain messages."""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass
from typing import Any

from collab.client import consult as rules
from collab.client.export.model import ConsultExport, Member, Message

NOBODY = uuid.UUID(int=0)


def _uuid(value: object) -> uuid.UUID | None:
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        return uuid.UUID(str(value))
    return None


def is_consultant(export: ConsultExport, member: Member | None) -> bool:
    return member is not None and not member.patient \
        and member.user_id != export.requester


def record(export: ConsultExport) -> rules.ConsultRecord:
    items = []
    for m in export.messages:
        sender = _uuid(m.sender)
        if m.body is not None and sender is not None:
            items.append(rules.Item(m.seq, sender, m.sent_ms, m.content_type, m.body))
    consultants = [u for m in export.members if is_consultant(export, m)
                   if (u := _uuid(m.user_id)) is not None]
    return rules.read_record(items, requester=_uuid(export.requester) or NOBODY,
                             consultants=consultants)


def _message(export: ConsultExport, seq: int) -> Message:
    return next(m for m in export.messages if m.seq == seq)


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
    """The current (latest valid) request of the case's opener."""
    rec = record(export)
    if rec.request is None or rec.request_seq is None:
        return None
    c, callback = rec.request, rec.request["callback"]
    amends = None
    if rec.request_amended:
        amends = next(m.seq for m in export.messages if m.content_type == rules.REQUEST
                      and _uuid(m.sender) == rec.requester
                      and rules.is_valid(rules.REQUEST, m.body))
    return Request(
        message=_message(export, rec.request_seq), reason=c["reason"], question=c["question"],
        history=c["history"], medications=c["medications"], tried=c["tried"],
        urgency=c["urgency"], callback_method=callback["method"],
        callback_detail=callback["detail"], patient_consent=c["patient_consent"] is True,
        amends=amends)


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
    superseded_by: int | None
    billing: dict[str, Any]  # rules.billing_summary: the fields billing asks for, warnings


def reports(export: ConsultExport) -> list[Report]:
    """Every valid report of a consultant, oldest first."""
    rec = record(export)
    out = []
    for r in rec.reports:
        body, time = r.report, r.report["time"]
        supersedes = body.get("supersedes")
        out.append(Report(
            message=_message(export, r.seq), assessment=body["assessment"],
            recommendations=body["recommendations"], follow_up=body["follow_up"],
            referral_needed=body["referral_needed"] is True,
            supersedes=supersedes if isinstance(supersedes, int) else None,
            minutes=int(time["minutes"]), first_date=time["first_date"],
            last_date=time["last_date"], superseded_by=r.superseded_by,
            billing=rules.billing_summary(rec, r)))
    return out


@dataclass
class TimeTotal:
    user_id: str
    minutes: int
    entries: int
    first_date: str
    last_date: str


def time_totals(export: ConsultExport) -> list[TimeTotal]:
    """Each consultant's time from their valid time entries."""
    return [TimeTotal(str(user), s.minutes, s.entries, s.first_date or "", s.last_date or "")
            for user, s in record(export).time.items() if s.entries]


@dataclass
class Billing:
    """The fields interprofessional consult billing asks for, over the whole case."""

    minutes: int
    first_date: str
    last_date: str
    reason_present: bool
    report_present: bool
    patient_consent: bool


def billing(export: ConsultExport) -> Billing:
    totals = time_totals(export)
    rec = record(export)
    request = rec.request or {}
    reason = request.get("reason")
    return Billing(
        minutes=sum(t.minutes for t in totals),
        first_date=min((t.first_date for t in totals), default=""),
        last_date=max((t.last_date for t in totals), default=""),
        reason_present=isinstance(reason, str) and bool(reason.strip()),
        report_present=bool(rec.reports),
        patient_consent=request.get("patient_consent") is True)


def warning_text(code: str) -> str:
    return rules.WARNINGS.get(code, code)
