"""The consult as one printable HTML page: self-contained (styles inline, images as
``data:`` URLs), every piece of text escaped, and a Content-Security-Policy that lets
the file run no script and load nothing, wherever it is opened. The browser's
export-html.js writes the same page."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Iterable

from collab.client.export.model import (
    IMAGE_MIMES,
    ConsultExport,
    Message,
    ms_instant,
    removal_line,
)
from collab.client.export.record import (
    billing,
    consult_request,
    reports,
    time_totals,
    warning_text,
)

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
STYLE = """
body{font:11pt/1.4 system-ui,sans-serif;color:#111;margin:2em auto;max-width:48em;padding:0 1em}
h1{font-size:16pt}h2{font-size:13pt;border-bottom:1px solid #999;margin-top:1.6em}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2em 1em}dt{font-weight:600}dd{margin:0}
.text{white-space:pre-wrap}.meta{color:#555;font-size:9pt}
ol.messages{list-style:none;padding:0}ol.messages li{border-top:1px solid #ddd;padding:.4em 0}
img{max-width:100%;height:auto}.report{border:1px solid #999;padding:.5em 1em;margin:.5em 0}
.superseded{opacity:.7}table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:.2em .5em}
@media print{body{margin:0;max-width:none}a{color:inherit}li,.report,figure{break-inside:avoid}
h2{break-after:avoid}}
"""


_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def esc(value: object) -> str:
    """Escaped, without the control characters HTML does not allow."""
    return html.escape(_CONTROLS.sub("", str(value)), quote=True)


def _dl(rows: Iterable[tuple[str, object]]) -> str:
    return "<dl>" + "".join(f"<dt>{esc(k)}</dt><dd class=\"text\">{esc(v)}</dd>"
                            for k, v in rows if v not in (None, "")) + "</dl>"


class _Page:
    def __init__(self, export: ConsultExport) -> None:
        self.x = export

    def name(self, user_id: str) -> str:
        member = self.x.member(user_id)
        return (member.display_name if member and member.display_name
                else f"user {user_id[:8]}")

    def message(self, m: Message) -> str:
        if m.removed is not None:  # recalled or purged: one line, never content
            by = f" · {esc(self.name(m.sender))}" if m.sender else ""
            return (f'<li class="removed"><p class="meta">#{m.seq}{by}</p>'
                    f'<p class="text">[{esc(removal_line(m.removed))}]</p></li>')
        head = (f'<p class="meta">#{m.seq} · {esc(ms_instant(m.sent_ms))} · '
                f"{esc(self.name(m.sender))} · {esc(m.content_type)}</p>")
        if m.unavailable is not None:
            return f'<li>{head}<p class="text">[{esc(m.unavailable)}]</p></li>'
        parts = [head]
        if m.text:
            parts.append(f'<p class="text">{esc(m.text)}</p>')
        for image in m.images:
            if image.mime not in IMAGE_MIMES:
                continue  # only images go inline
            data = base64.b64encode(image.data).decode("ascii")
            label = "unmarked original" if image.kind == "original" else "image"
            parts.append(f'<figure><img alt="{esc(label)} of message #{m.seq}" '
                         f'width="{int(image.width)}" height="{int(image.height)}" '
                         f'src="data:{image.mime};base64,{data}">'
                         f"<figcaption class=\"meta\">{esc(label)} {int(image.width)}x"
                         f"{int(image.height)}, {len(image.data)} bytes</figcaption></figure>")
        return "<li>" + "".join(parts) + "</li>"

    def render(self) -> str:
        x, case = self.x, self.x.case
        out = [f"<h1>Consult {esc(case.get('id'))}</h1>",
               _dl([("Specialty", case.get("specialty")), ("Urgency", case.get("urgency")),
                    ("Status", case.get("status")), ("Opened", case.get("opened_at")),
                    ("Opened by", self.name(x.requester)),
                    ("Exported", x.exported_at), ("Exported by", self.name(x.exported_by))])]
        request = consult_request(x)
        out.append("<h2>Request</h2>")
        if request is None:
            out.append("<p>No structured consult request was sent in this case.</p>")
        else:
            out.append(_dl([
                ("Requested by", self.name(request.message.sender)),
                ("Sent", ms_instant(request.message.sent_ms)),
                ("Amends", f"message #{request.amends}" if request.amends else None),
                ("Reason", request.reason), ("Question", request.question),
                ("History", request.history), ("Medications", request.medications),
                ("Tried", request.tried), ("Urgency", request.urgency),
                ("Call-back", " ".join(v for v in (request.callback_method,
                                                   request.callback_detail) if v)),
                ("Patient consent", "noted by the requester" if request.patient_consent
                 else "not noted")]))
        out.append("<h2>Reports</h2>")
        found = reports(x)
        for r in found:
            cls = "report superseded" if r.superseded_by else "report"
            note = (f" (superseded by the report of message #{r.superseded_by})"
                    if r.superseded_by else "")
            out.append(f'<section class="{cls}"><p class="meta">Report of message '
                       f"#{r.message.seq} by {esc(self.name(r.message.sender))}, "
                       f"{esc(ms_instant(r.message.sent_ms))}{esc(note)}</p>" + _dl([
                           ("Assessment", r.assessment), ("Recommendations", r.recommendations),
                           ("Follow-up", r.follow_up),
                           ("Referral needed", "yes" if r.referral_needed else "no"),
                           ("Time stated", f"{r.minutes} minutes ({r.first_date} to "
                                           f"{r.last_date})" if r.minutes is not None else None),
                           ("Advice", " ".join(warning_text(w) for w in r.billing["warnings"])),
                       ]) + "</section>")
        if not found:
            out.append("<p>No report yet.</p>")
        b = billing(x)
        yes = {True: "yes", False: "no"}
        out.append("<h2>Time</h2>" + _dl(
            [(f"Time entries of {self.name(t.user_id)}",
              f"{t.minutes} minutes in {t.entries} entries, {t.first_date} to {t.last_date}")
             for t in time_totals(x)]
            + [("Cumulative minutes", b.minutes),
               ("Date range", f"{b.first_date or '-'} to {b.last_date or '-'}"),
               ("Request reason present", yes[b.reason_present]),
               ("Written report present", yes[b.report_present]),
               ("Patient consent noted", yes[b.patient_consent])]))
        out.append("<h2>Status history</h2><table><tr><th>When</th><th>From</th><th>To</th>"
                   "<th>By</th><th>Reason</th></tr>" + "".join(
                       f"<tr><td>{esc(row.get('at') or '')}</td><td>{esc(row.get('from') or '')}"
                       f"</td><td>{esc(row.get('to') or '')}</td>"
                       f"<td>{esc(self.name(str(row.get('by'))))}</td>"
                       f"<td>{esc(row.get('reason') or '')}</td></tr>"
                       for row in x.status_history) + "</table>")
        out.append("<h2>Members</h2><ul>" + "".join(
            f"<li>{esc(self.name(m.user_id))} ({esc(m.role)}"
            f"{', ' + esc(m.specialty) if m.specialty else ''})</li>"
            for m in x.members) + "</ul>")
        out.append('<h2>Messages</h2><ol class="messages">'
                   + "".join(self.message(m) for m in x.messages) + "</ol>")
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
                f"<title>Consult {esc(str(case.get('id'))[:8])}</title>"
                f"<style>{STYLE}</style></head><body>" + "".join(out) + "</body></html>\n")


def build_html(export: ConsultExport) -> str:
    return _Page(export).render()
