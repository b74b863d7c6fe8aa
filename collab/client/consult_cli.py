"""The consult record on the command line (docs/workflow.md §8):

    collab-client request CASE --reason ... --question ... [--history ...] ...
    collab-client report CASE --assessment ... --recommendations ... [--referral-needed]
    collab-client time CASE --minutes 15 [--date YYYY-MM-DD] [--note ...]
    collab-client consult CASE [--json]

and the one-line tags ``history`` and ``watch`` print for these content types. Everything
that came from other people goes through ``cli.printable``."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from collab.client import consult
from collab.client.consult import ConsultBodyError, ConsultRecord, Report
from collab.client.errors import UsageError

if TYPE_CHECKING:
    from collab.client.sdk import CollabClient, Received

COMMANDS = ("request", "report", "time", "consult")
Name = Callable[[uuid.UUID], str]


def _uuid(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a UUID: {text!r}") from None


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("request", help="send the structured consult request (encrypted)")
    p.add_argument("case", type=_uuid)
    p.add_argument("--reason", required=True)
    p.add_argument("--question", required=True)
    p.add_argument("--history", default="", help="relevant history and medications")
    p.add_argument("--medications", default="")
    p.add_argument("--tried", default="", help="what has been tried")
    p.add_argument("--urgency", choices=consult.URGENCIES, default="routine")
    p.add_argument("--callback", choices=consult.CALLBACK_METHODS, default="message",
                   help="how to call back the requester")
    p.add_argument("--callback-detail", default="", help="a number, an extension, hours")
    p.add_argument("--patient-consent", action="store_true",
                   help="note that the patient consented to the consult")
    p = sub.add_parser("report", help="send the consultant's report (moves the case to "
                                      "answered); supersedes your latest report")
    p.add_argument("case", type=_uuid)
    p.add_argument("--assessment", required=True)
    p.add_argument("--recommendations", required=True)
    p.add_argument("--follow-up", default="")
    p.add_argument("--referral-needed", action="store_true",
                   help="a face-to-face referral is needed")
    p.add_argument("--seen-recently", action="store_true",
                   help="you saw the patient face to face in the last 14 days")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--supersedes", type=int, default=None, metavar="SEQ",
                       help="the report this one replaces (default: your latest)")
    group.add_argument("--new", action="store_true",
                       help="a report of its own, superseding none")
    p = sub.add_parser("time", help="record minutes you spent on the case (manual entry)")
    p.add_argument("case", type=_uuid)
    p.add_argument("--minutes", type=int, required=True)
    p.add_argument("--date", default=None, help="YYYY-MM-DD (UTC; default today)")
    p.add_argument("--note", default="")
    p = sub.add_parser("consult", help="the consult record: request, reports, time summary")
    p.add_argument("case", type=_uuid)
    p.add_argument("--json", action="store_true")


def _day_ms(text: str) -> int:
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--date must be YYYY-MM-DD, not {text!r}", code="bad_value") from None
    return int(dt.datetime(day.year, day.month, day.day, 12, tzinfo=dt.UTC).timestamp() * 1000)


def run(client: CollabClient, args: argparse.Namespace, out: TextIO, name: Name,
        printable: Callable[..., str]) -> None:
    command = args.command
    if command == "request":
        sent = asyncio.run(client.send_consult_request(
            args.case, reason=args.reason, question=args.question, history=args.history,
            medications=args.medications, tried=args.tried, urgency=args.urgency,
            callback_method=args.callback, callback_detail=args.callback_detail,
            patient_consent=args.patient_consent))
        out.write(f"sent consult request #{sent.seq}\n")
    elif command == "report":
        supersedes: int | str | None = None if args.new else (args.supersedes or "latest")
        sent = asyncio.run(client.send_report(
            args.case, assessment=args.assessment, recommendations=args.recommendations,
            follow_up=args.follow_up, referral_needed=args.referral_needed,
            seen_in_last_14_days=args.seen_recently or None, supersedes=supersedes))
        out.write(f"sent report #{sent.seq}\n")
    elif command == "time":
        at = _day_ms(args.date) if args.date else None
        sent = asyncio.run(client.add_time(args.case, minutes=args.minutes, start_ms=at,
                                           end_ms=at, note=args.note))
        out.write(f"recorded {args.minutes} min as #{sent.seq}\n")
    elif command == "consult":
        record = client.consult_record(args.case)
        if args.json:
            out.write(json.dumps(record_json(record), sort_keys=True) + "\n")
        else:
            out.write("".join(line + "\n" for line in record_lines(record, name, printable)))


def _yes(value: object) -> str:
    return "yes" if value is True else "no"


def record_lines(record: ConsultRecord, name: Name, printable: Callable[..., str]) -> list[str]:
    def field(label: str, value: object) -> str:
        text = printable(value, multiline=True).replace("\n", "\n      ")
        return f"  {label}: {text}"

    lines: list[str] = []
    r = record.request
    if r is None:
        lines.append("No consult request.")
    else:
        amended = ", amended" if record.request_amended else ""
        lines.append(f"Request #{record.request_seq}{amended} from {name(record.requester)}")
        for label, key in (("reason", "reason"), ("question", "question"),
                           ("history", "history"), ("medications", "medications"),
                           ("tried", "tried")):
            lines.append(field(label, r[key]))
        callback = r["callback"]
        lines.append(f"  urgency: {r['urgency']} · call back by {callback['method']}"
                     f"{': ' + printable(callback['detail']) if callback['detail'] else ''}"
                     f" · patient consent: {_yes(r['patient_consent'])}")
    for report in record.reports:
        lines.extend(_report_lines(record, report, name, field))
    if not record.reports:
        lines.append("No report yet.")
    lines.append("Time:")
    for user, t in record.time.items():
        span = f", {t.first_date}..{t.last_date}" if t.first_date else ""
        lines.append(f"  {name(user)}: {t.minutes} min ({t.active_minutes} active, "
                     f"{t.manual_minutes} manual){span}, {t.entries} entries")
    if not record.time:
        lines.append("  none recorded")
    if record.skipped:
        lines.append(f"({record.skipped} consult message(s) unsupported or not allowed, "
                     "left out)")
    return lines


def _report_lines(record: ConsultRecord, report: Report, name: Name,
                  field: Callable[[str, object], str]) -> list[str]:
    when = dt.datetime.fromtimestamp(report.sent_ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M")
    state = f" [superseded by #{report.superseded_by}]" if report.superseded_by else ""
    replaces = report.report.get("supersedes")
    head = f"Report #{report.seq} by {name(report.author)}, {when}"
    head += f" (supersedes #{replaces})" if replaces else ""
    lines = [head + state]
    for label, key in (("assessment", "assessment"), ("recommendations", "recommendations"),
                       ("follow-up", "follow_up")):
        lines.append(field(label, report.report[key]))
    lines.append(f"  referral needed: {_yes(report.report['referral_needed'])}")
    b = consult.billing_summary(record, report)
    lines.append(f"  billing: {b['cumulative_minutes']} min, {b['first_date']}..{b['last_date']}"
                 f" (recorded now: {b['recorded_minutes']} min)"
                 f" · request reason: {_yes(b['request_reason_present'])}"
                 f" · written report: {_yes(b['written_report_present'])}"
                 f" · patient consent: {_yes(b['patient_consent'])}")
    lines.extend(f"  advisory: {consult.WARNINGS[w]}" for w in b["warnings"])
    return lines


def record_json(record: ConsultRecord) -> dict[str, Any]:
    return {
        "requester": str(record.requester),
        "request": record.request,
        "request_seq": record.request_seq,
        "request_amended": record.request_amended,
        "reports": [
            {"seq": r.seq, "author": str(r.author), "sent_ms": r.sent_ms, "report": r.report,
             "superseded_by": r.superseded_by,
             "billing": consult.billing_summary(record, r)}
            for r in record.reports
        ],
        "time": {str(user): t.wire() for user, t in record.time.items()},
        "skipped": record.skipped,
    }


def describe_tag(msg: Received) -> str:
    """The tag ``history``/``watch`` put before a consult message's summary ('' for other
    types): what it is, or that its body is unsupported."""
    content_type = msg.header.content_type
    if content_type not in consult.CONTENT_TYPES or msg.unavailable is not None:
        return ""
    try:
        consult.validate(content_type, msg.body)
    except ConsultBodyError as error:
        return f"[unsupported {content_type}: {error.code}]"
    if content_type == consult.REQUEST:
        return "[consult request]"
    if content_type == consult.REPORT:
        replaces = msg.body["report"].get("supersedes")
        return f"[consult report, supersedes #{replaces}]" if replaces else "[consult report]"
    t = msg.body["time"]
    return f"[time {t['minutes']} min {t['kind']}]"
