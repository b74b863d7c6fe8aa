"""The export against a lying server (collab-client export and the SDK's gather).

The case detail's ``opened_by`` is only the server's word: whose request, reports and
time count is decided by the verified genesis entry's author, as in the room. A case
holding recalled or purged messages (tombstones) exports: each removed message is one
line judged by the room's recall policy (collab.client.recall), never its content. The
browser's twin is frontend/tests/export-hostile.test.mjs."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.db import transaction

from collab.cases import models as m
from collab.cases.services.tombstones import message_tombstone
from collab.client import consult as c
from collab.client.export import record as rec
from collab.client.export.fhir import build_bundle
from collab.client.export.html import build_html
from collab.client.export.model import ConsultExport, Member, Message, gather, removal_line
from tests.client.export.support import validate_bundle
from tests.client.export.test_export_live import consult, export, send, server  # noqa: F401
from tests.support.clients import PASS

T0 = 1_764_633_600_000
FORGED = {"text": "Report", "report": {
    "assessment": "FORGED by the requester", "recommendations": "x", "follow_up": "",
    "referral_needed": False, "supersedes": None,
    "time": {"minutes": 600, "first_date": "2025-12-02", "last_date": "2025-12-02"}}}
FORGED_TIME = {"text": "Time: 600 min", "time": {
    "kind": "manual", "minutes": 600, "start_ms": T0, "end_ms": T0, "note": ""}}
SECRETS = ("RECALLED-SECRET", "SERVER-REMOVED-SECRET", "PURGED-SECRET")


def _remove(case_id: uuid.UUID, seq: int, reason: str) -> None:
    """What a server may do on its own: drop a message without any statement of its
    sender (as the retention purge does, or claiming a recall it cannot show)."""
    with transaction.atomic():
        msg = m.Message.objects.select_for_update().get(case_id=case_id, seq=seq)
        message_tombstone(msg, reason=reason, now=datetime(2025, 12, 3, 1, 2, 3, 456789, UTC))


@pytest.mark.django_db(transaction=True)
@pytest.mark.e2e
def test_export_of_a_lying_server(server: str, tmp_path: Path,  # noqa: F811
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLLAB_PASSPHRASE", PASS)
    pcp, derm, case_id, _ = consult(server, tmp_path)
    # The server now claims the consultant opened the case, and so accepts the opener's
    # report-shaped message and time entry as a consultant's.
    m.Case.objects.filter(pk=case_id).update(opened_by_id=derm.user_id)
    send(pcp, case_id, "consult_report", FORGED)
    send(pcp, case_id, "time_entry", FORGED_TIME)
    recalled, removed, purged = (asyncio.run(pcp.send_text(case_id, s)).seq for s in SECRETS)
    pcp.recall(case_id, recalled)
    _remove(case_id, removed, m.RemovedReason.RECALLED)
    _remove(case_id, purged, m.RemovedReason.PURGED)

    x = gather(derm, case_id)
    assert x.case["opened_by"] == str(derm.user_id)  # the server's claim, kept as shown
    assert x.requester == str(pcp.user_id)
    request = rec.consult_request(x)
    assert request is not None and request.message.sender == str(pcp.user_id)
    assert [(r.message.sender, r.assessment) for r in rec.reports(x)] == \
        [(str(derm.user_id), "Naevus.")]
    assert [(t.user_id, t.minutes) for t in rec.time_totals(x)] == [(str(derm.user_id), 12)]
    gone = {msg.seq: msg for msg in x.messages if msg.removed is not None}
    assert sorted(gone) == [recalled, removed, purged]
    assert all(g.body is None and not g.images for g in gone.values())
    assert removal_line(gone[recalled].removed or {}).startswith("recalled by the sender at 20")
    assert gone[recalled].sender == str(pcp.user_id)
    assert removal_line(gone[removed].removed or {}) == (
        "removed by the server at 2025-12-03T01:02:03.456Z (no valid recall from its sender)")
    assert removal_line(gone[purged].removed or {}) == (
        "removed by the server at 2025-12-03T01:02:03.456Z (retention policy)")
    assert gone[removed].sender == gone[purged].sender == ""

    bundle = build_bundle(x)
    validate_bundle(bundle)
    resources = [e["resource"] for e in bundle["entry"]]
    comms = {r["id"]: r for r in resources if r["resourceType"] == "Communication"
             and r["status"] == "entered-in-error"}
    assert sorted(n["text"] for r in comms.values() for n in r["note"]) == sorted(
        f"Message #{seq} {removal_line(g.removed or {})}" for seq, g in gone.items())
    assert all("payload" not in r and "sent" not in r for r in comms.values())
    (task,) = [r for r in resources if r["resourceType"] == "Task"]
    assert task["requester"]["reference"] == f"urn:uuid:{pcp.user_id}"
    assert [r["author"][0]["reference"] for r in resources
            if r["resourceType"] == "Composition"] == [f"urn:uuid:{derm.user_id}"]
    page = build_html(x)
    for text in (json.dumps(bundle), page):
        assert "FORGED" not in text  # exported as a plain message: its text only
        assert not any(s in text for s in SECRETS)
    assert f"[{removal_line(gone[recalled].removed or {})}]" in page

    # The command line exports the case too, in both formats.
    for fmt, name in (("fhir", "x.json"), ("html", "x.html")):
        out = export(tmp_path / "derm", case_id, fmt, tmp_path / name)
        assert "messages" in out
        assert not any(s in (tmp_path / name).read_text() for s in SECRETS)


def test_record_takes_the_model_requester_not_opened_by() -> None:
    """The reviewer's reproduction: the same messages under a lying opened_by."""
    pcp, spec = str(uuid.UUID(int=1)), str(uuid.UUID(int=2))
    msgs = [
        Message(1, pcp, T0, c.REQUEST, c.request_body(reason="chest pain", question="q?",
                                                      patient_consent=True)),
        Message(2, spec, T0 + 1, c.TIME_ENTRY, c.time_entry_body(
            kind="manual", minutes=30, start_ms=T0, end_ms=T0 + 1_800_000)),
        Message(3, spec, T0 + 2, c.REPORT, c.report_body(
            assessment="a", recommendations="r", minutes=30, first_date="2025-12-02",
            last_date="2025-12-02")),
        Message(4, pcp, T0 + 3, c.REPORT, c.report_body(
            assessment="FORGED", recommendations="x", minutes=600, first_date="2025-12-02",
            last_date="2025-12-02")),
        Message(5, pcp, T0 + 4, c.TIME_ENTRY, c.time_entry_body(
            kind="manual", minutes=600, start_ms=T0, end_ms=T0 + 36_000_000)),
    ]
    members = [Member(pcp, "owner"), Member(spec, "member")]
    for opened_by in (pcp, spec):
        x = ConsultExport({"id": str(uuid.UUID(int=9)), "opened_by": opened_by}, [], members,
                          msgs, "t", pcp, requester=pcp)
        r = rec.record(x)
        assert r.request_seq == 1
        assert [p.seq for p in r.reports] == [3]
        assert {str(k): v.minutes for k, v in r.time.items() if v.entries} == {spec: 30}
        assert not rec.is_consultant(x, x.member(pcp)) and rec.is_consultant(x, x.member(spec))
