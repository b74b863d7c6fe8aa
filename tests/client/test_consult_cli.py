"""The CLI's consult output without a server: the tags history and watch print, and the
record's lines, which pass everything other people wrote through ``printable``."""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

from collab.client import consult
from collab.client.cli import printable
from collab.client.consult import Item
from collab.client.consult_cli import describe_tag, record_lines

T0 = 1764633600000
PCP, DERM = uuid.uuid4(), uuid.uuid4()


def message(content_type: str, body: Any, unavailable: str | None = None) -> Any:
    return SimpleNamespace(header=SimpleNamespace(content_type=content_type), body=body,
                           unavailable=unavailable)


def test_tags_name_each_type_and_an_unsupported_body() -> None:
    request = consult.request_body(reason="r", question="q")
    report = consult.report_body(assessment="a", recommendations="r", supersedes=3, minutes=1,
                                 first_date="2025-12-02", last_date="2025-12-02")
    entry = consult.time_entry_body(kind="active", minutes=6, start_ms=T0, end_ms=T0 + 360_000)
    assert describe_tag(message("consult_request", request)) == "[consult request]"
    assert describe_tag(message("consult_report", report)) == "[consult report, supersedes #3]"
    assert describe_tag(message("time_entry", entry)) == "[time 6 min active]"
    assert describe_tag(message("consult_report", {"text": "x"})) == \
        "[unsupported consult_report: missing_field]"
    assert describe_tag(message("text", {"text": "hi"})) == ""
    assert describe_tag(message("consult_report", {}, unavailable="no key")) == ""


def test_record_lines_strip_terminal_controls_and_indent_further_lines() -> None:
    hostile = "Naevus\x1b[2J\x1b]0;pwned\x07\nline two"
    items = [
        Item(1, PCP, T0, "consult_request",
             consult.request_body(reason="Lesion\u202e", question="Excise?", patient_consent=True)),
        Item(2, DERM, T0, "time_entry",
             consult.time_entry_body(kind="manual", minutes=20, start_ms=T0, end_ms=T0)),
        Item(3, DERM, T0, "consult_report",
             consult.report_body(assessment=hostile, recommendations="Watch", minutes=20,
                                 first_date="2025-12-02", last_date="2025-12-02")),
        Item(4, PCP, T0, "consult_report", {"text": "forged", "report": {}}),
    ]
    record = consult.read_record(items, requester=PCP, consultants=[DERM])
    names = {PCP: "Dr Park", DERM: "Dr Okafor"}
    out = "\n".join(record_lines(record, names.__getitem__, printable))
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert "  assessment: Naevus\n      line two" in out
    assert "Report #3 by Dr Okafor" in out
    assert "billing: 20 min, 2025-12-02..2025-12-02 (recorded now: 20 min)" in out
    assert "patient consent: yes" in out
    assert "Dr Okafor: 20 min (0 active, 20 manual), 2025-12-02..2025-12-02, 1 entries" in out
    assert "(1 consult message(s) unsupported or not allowed, left out)" in out
