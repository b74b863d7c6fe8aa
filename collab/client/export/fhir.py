"""The consult as a FHIR R4 Bundle of type ``collection``, built as plain dicts (no FHIR
library at run time). docs/workflow.md "Exporting a consult" has the mapping table; the
browser's export-fhir.js builds the same Bundle from the same model.

Why ``collection`` and not ``document``: a document Bundle is one attested Composition
with what it references, and would have to start with a report the consult may not have
yet. This export is the whole record (request, status history, every message, every
report, who took part) gathered for filing: a collection of resources, each reports
included as a Composition inside it.

Ids are derived from the case id (a SHA-512 of ``<case>:<what>:<n>`` shaped as a UUID),
so exporting the same case twice names each resource the same; people are named by
their user ids."""

from __future__ import annotations

import base64
import hashlib
import html
import re
import uuid
from typing import Any

from collab.client.export.model import (
    ConsultExport,
    Member,
    Message,
    instant,
    ms_instant,
    removal_line,
)
from collab.client.export.record import (
    Report,
    consult_request,
    is_consultant,
    reports,
    time_totals,
    warning_text,
)

SR_STATUS = {"requested": "active", "accepted": "active", "answered": "active",
             "closed": "completed"}
# request-priority: routine < urgent < asap < stat; "soon" sits between.
PRIORITY = {"routine": "routine", "soon": "urgent", "urgent": "asap"}
CONSULT_NOTE = {"coding": [{"system": "http://loinc.org", "code": "11488-4",
                            "display": "Consult note"}], "text": "Consult note"}
CONSULTATION = {"coding": [{"system": "http://snomed.info/sct", "code": "11429006",
                            "display": "Consultation"}], "text": "Consultation"}
URI = "urn:ietf:rfc:3986"
# FHIR strings allow space, tab, CR and LF as their only whitespace and no controls.
_ODD_SPACE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\x85\xa0\u1680\u2000-\u200a"
                        "\u2028\u2029\u202f\u205f\u3000\ufeff]")
_DATE = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])")


def fhir_text(value: object) -> str | None:
    """A FHIR string: odd whitespace and controls become spaces; blank is None (FHIR
    strings may not be empty)."""
    if not isinstance(value, str):
        return None
    clean = _ODD_SPACE.sub(" ", value).strip()
    return clean or None


def rid(case_id: str, what: str, n: object = 0) -> str:
    digest = bytearray(hashlib.sha512(f"{case_id}:{what}:{n}".encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x80  # version 8 (custom)
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    return str(uuid.UUID(bytes=bytes(digest)))


def narrative(lines: list[str]) -> dict[str, str]:
    paras = "".join(f"<p>{html.escape(fhir_text(line) or '', quote=True)}</p>"
                    for line in lines) or "<p></p>"
    return {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{paras}</div>'}


def _date(text: str) -> str | None:
    return text if _DATE.fullmatch(text) else None


class _Builder:
    def __init__(self, export: ConsultExport) -> None:
        self.x = export
        self.case_id = str(export.case.get("id"))
        people = list(export.members)
        for m in export.messages:  # every sender is a member of a verified roster; still
            if m.sender and export.member(m.sender) is None \
                    and all(p.user_id != m.sender for p in people):
                people.append(Member(m.sender, "member"))
        self.people = people
        patient = next((p for p in people if p.patient), None)
        self.subject = self.ref(patient.user_id) if patient else \
            {"display": f"The patient of case {self.case_id}"}

    def ref(self, user_id: object) -> dict[str, str]:
        person = next((p for p in self.people if p.user_id == user_id), None)
        if person is None:
            return {"display": f"user {user_id}"}
        out = {"reference": f"urn:uuid:{person.user_id}"}
        name = fhir_text(person.display_name)
        if name:
            out["display"] = name
        return out

    def url(self, what: str, n: object = 0) -> str:
        return f"urn:uuid:{rid(self.case_id, what, n)}"

    def person(self, p: Member) -> dict[str, Any]:
        resource: dict[str, Any] = {
            "resourceType": "Patient" if p.patient else "Practitioner", "id": p.user_id,
            "identifier": [{"system": URI, "value": f"urn:uuid:{p.user_id}"}]}
        name = fhir_text(p.display_name)
        if name:
            resource["name"] = [{"text": name}]
        return resource

    def service_request(self, all_reports: list[Report]) -> dict[str, Any]:
        case, request = self.x.case, consult_request(self.x)
        urgency = (request.urgency if request else "") or str(case.get("urgency") or "")
        sr: dict[str, Any] = {
            "resourceType": "ServiceRequest", "id": rid(self.case_id, "service-request"),
            "identifier": [{"system": URI, "value": f"urn:uuid:{self.case_id}"}],
            "status": SR_STATUS.get(str(case.get("status")), "unknown"), "intent": "order",
            "category": [CONSULTATION], "subject": self.subject,
        }
        if urgency in PRIORITY:
            sr["priority"] = PRIORITY[urgency]
        authored = ms_instant(request.message.sent_ms) if request \
            else instant(case.get("opened_at"))
        if authored:
            sr["authoredOn"] = authored
        sr["requester"] = self.ref(request.message.sender if request else self.x.requester)
        specialty = fhir_text(case.get("specialty"))
        if specialty:
            sr["performerType"] = {"text": specialty}
        performers: list[str] = []
        for r in all_reports:
            if r.message.sender not in performers:
                performers.append(r.message.sender)
        if performers:
            sr["performer"] = [self.ref(u) for u in performers]
        if request is not None:
            reason = fhir_text(request.reason)
            if reason:
                sr["reasonCode"] = [{"text": reason}]
            notes = [("Question", request.question), ("History", request.history),
                     ("Medications", request.medications), ("Tried", request.tried),
                     ("Call-back", " ".join(x for x in (request.callback_method,
                                                        request.callback_detail) if x)),
                     ("Patient consent", "noted by the requester" if request.patient_consent
                      else "not noted")]
            if request.amends is not None:
                notes.append(("Amends", f"the request of message #{request.amends}"))
            sr["note"] = [{"text": f"{label}: {fhir_text(text)}"}
                          for label, text in notes if fhir_text(text)]
        return sr

    def task(self, all_reports: list[Report]) -> dict[str, Any]:
        case = self.x.case
        status = str(case.get("status"))
        task_status = {"requested": "requested", "accepted": "accepted",
                       "answered": "completed"}.get(status)
        if status == "closed":
            task_status = "completed" if all_reports else "cancelled"
        task: dict[str, Any] = {
            "resourceType": "Task", "id": rid(self.case_id, "task"),
            "status": task_status or "requested", "intent": "order",
            "businessStatus": {"text": fhir_text(status) or "unknown"},
            "focus": {"reference": self.url("service-request")},
            "basedOn": [{"reference": self.url("service-request")}],
            "for": self.subject,
            "requester": self.ref(self.x.requester),
        }
        priority = PRIORITY.get(str(case.get("urgency")))
        if priority:
            task["priority"] = priority
        opened, changed = instant(case.get("opened_at")), instant(case.get("status_changed_at"))
        if opened:
            task["authoredOn"] = opened
            task["executionPeriod"] = {"start": opened}
        if changed:
            task["lastModified"] = changed
            if status == "closed" and opened:
                task["executionPeriod"]["end"] = changed
        owner = None
        notes = []
        for row in self.x.status_history:
            to, frm, reason = fhir_text(row.get("to")), fhir_text(row.get("from")), \
                fhir_text(row.get("reason"))
            if to is None:
                continue
            if to == "accepted":
                owner = row.get("by")
            note: dict[str, Any] = {"authorReference": self.ref(row.get("by")),
                                    "text": f"status {frm} → {to}" if frm else f"status {to}"}
            if reason:
                note["text"] += f" ({reason})"
            at = instant(row.get("at"))
            if at:
                note["time"] = at
            notes.append(note)
        if owner is not None:
            task["owner"] = self.ref(owner)
        if notes:
            task["note"] = notes
        return task

    def communication(self, m: Message) -> dict[str, Any]:
        if m.removed is not None:  # recalled or purged: one line, never content
            gone: dict[str, Any] = {
                "resourceType": "Communication", "id": rid(self.case_id, "message", m.seq),
                "basedOn": [{"reference": self.url("service-request")}],
                "status": "entered-in-error", "subject": self.subject,
                "note": [{"text": f"Message #{m.seq} {removal_line(m.removed)}"}],
            }
            if m.sender:
                gone["sender"] = self.ref(m.sender)
            return gone
        comm: dict[str, Any] = {
            "resourceType": "Communication", "id": rid(self.case_id, "message", m.seq),
            "basedOn": [{"reference": self.url("service-request")}],
            "status": "completed", "category": [{"text": fhir_text(m.content_type) or "text"}],
            "subject": self.subject, "sent": ms_instant(m.sent_ms), "sender": self.ref(m.sender),
        }
        payload: list[dict[str, Any]] = []
        text = fhir_text(m.text)
        if text:
            payload.append({"contentString": text})
        for image in m.images:
            title = f"Image {image.width}x{image.height}" + \
                (" (unmarked original)" if image.kind == "original" else "")
            payload.append({"contentAttachment": {
                "contentType": image.mime, "data": base64.b64encode(image.data).decode("ascii"),
                "size": len(image.data),
                "hash": base64.b64encode(hashlib.sha1(image.data).digest()).decode("ascii"),  # noqa: S324 - FHIR's Attachment.hash is SHA-1
                "title": title}})
        if payload:
            comm["payload"] = payload
        if m.unavailable is not None:
            comm["note"] = [{"text": fhir_text(m.unavailable) or "not available on this device"}]
        return comm

    def time_lines(self, r: Report) -> list[str]:
        """The report's billing summary (what the room shows with it), then each
        consultant's time entries."""
        b, yes = r.billing, {True: "yes", False: "no"}
        lines = [f"Cumulative minutes stated on this report: {b['cumulative_minutes']} "
                 f"({b['first_date']} to {b['last_date']})",
                 f"Minutes in the author's time entries now: {b['recorded_minutes']}",
                 f"Request reason present: {yes[b['request_reason_present'] is True]}",
                 f"Written report present: {yes[b['written_report_present'] is True]}",
                 "Patient consent noted by the requester: "
                 f"{yes[b['patient_consent'] is True]}"]
        for t in time_totals(self.x):
            who = self.ref(t.user_id).get("display") or t.user_id
            lines.append(f"Time entries of {who}: {t.minutes} minutes in {t.entries} "
                         f"entries, {t.first_date} to {t.last_date}")
        lines += [f"Advice: {warning_text(code)}" for code in b["warnings"]]
        return lines

    def composition(self, r: Report, by_seq: dict[int, Report]) -> dict[str, Any]:
        m = r.message
        older = by_seq.get(r.supersedes) if r.supersedes is not None else None
        title = "Consult report"
        if r.superseded_by is not None:
            title += f" (superseded by the report of message #{r.superseded_by})"
        comp: dict[str, Any] = {
            "resourceType": "Composition", "id": rid(self.case_id, "report", m.seq),
            "status": "amended" if older is not None else "final", "type": CONSULT_NOTE,
            "subject": self.subject, "date": ms_instant(m.sent_ms), "author": [self.ref(m.sender)],
            "title": title,
            "section": [
                {"title": "Assessment", "text": narrative(r.assessment.splitlines())},
                {"title": "Recommendations", "text": narrative(r.recommendations.splitlines())},
                {"title": "Follow-up", "text": narrative(r.follow_up.splitlines())},
                {"title": "Referral", "text": narrative(
                    [f"Face-to-face referral needed: {'yes' if r.referral_needed else 'no'}"])},
                {"title": "Time", "text": narrative(self.time_lines(r))},
            ],
        }
        first, last = _date(r.first_date), _date(r.last_date)
        if first and last:
            comp["event"] = [{"period": {"start": first, "end": last}}]
        if older is not None:
            target = {"reference": self.url("report", older.message.seq)}
            comp["relatesTo"] = [{"code": "replaces", "targetReference": target}]
        return comp


def build_bundle(export: ConsultExport) -> dict[str, Any]:
    b = _Builder(export)
    all_reports = [r for r in reports(export)
                   if is_consultant(export, export.member(r.message.sender))]
    by_seq = {r.message.seq: r for r in all_reports}
    resources = [b.service_request(all_reports), b.task(all_reports)]
    resources += [b.composition(r, by_seq) for r in all_reports]
    resources += [b.communication(m) for m in export.messages]
    resources += [b.person(p) for p in b.people]
    bundle_id = rid(b.case_id, "bundle", export.exported_at)
    return {
        "resourceType": "Bundle", "id": bundle_id,
        "identifier": {"system": URI, "value": f"urn:uuid:{bundle_id}"},
        "type": "collection", "timestamp": export.exported_at,
        "entry": [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in resources],
    }
