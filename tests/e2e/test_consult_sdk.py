"""The consult record end to end through the SDK and the CLI against a real daphne
process: a structured request, the specialist's time and report (the case moves to
answered), a superseding report, and the refusals (a report by the requester, time that
is negative or past 24 h a day) that change nothing."""

from __future__ import annotations

import asyncio
import io
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from collab.cases import models as m
from collab.client import cli, consult
from collab.client.consult import ConsultBodyError
from collab.client.errors import ServerRefusedError, UsageError
from collab.client.sdk import CollabClient
from tests.e2e.test_client_e2e import PASS, new_member
from tests.support.live import daphne_servers

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

# Keyword arguments of consult.request_body, passed through **fields.
REQUEST: dict[str, Any] = {
    "reason": "Pigmented lesion, left forearm", "question": "Excise or watch?",
    "history": "Noticed 3 months ago, grown", "medications": "None",
    "tried": "Nothing yet", "urgency": "soon", "callback_method": "phone",
    "callback_detail": "ext. 4471", "patient_consent": True}


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker) -> Iterator[str]:
    with django_db_blocker.unblock(), daphne_servers(1) as urls:
        yield urls[0]


def room(server: str, home: Path) -> tuple[CollabClient, CollabClient, uuid.UUID]:
    pcp = new_member(server, "pcp", home)
    derm = new_member(server, "derm", home, specialty="Dermatology")
    case_id = pcp.open_case(specialty="Dermatology", urgency="soon")
    asyncio.run(pcp.send_consult_request(case_id, **REQUEST))
    pcp.add_member(case_id, derm.user_id)
    return pcp, derm, case_id


def status(client: CollabClient, case_id: uuid.UUID) -> str:
    return str(client.case_detail(case_id)["status"])


def test_request_report_and_time_round_trip_and_the_report_answers_the_case(
        server: str, tmp_path: Path) -> None:
    pcp, derm, case_id = room(server, tmp_path)
    assert status(pcp, case_id) == "requested"
    asyncio.run(derm.add_time(case_id, minutes=20, note="reviewed history"))
    now = consult.DAY_MS * 20000
    asyncio.run(derm.add_time(case_id, kind="active", minutes=6, start_ms=now,
                              end_ms=now + 6 * 60_000))
    first = asyncio.run(derm.send_report(case_id, assessment="Likely dysplastic naevus",
                                         recommendations="Excise with 2 mm margins",
                                         follow_up="Histology", referral_needed=True))
    assert status(pcp, case_id) == "answered"
    history = [(h["from"], h["to"]) for h in pcp.case_detail(case_id)["status_history"]]
    assert history[-2:] == [("requested", "accepted"), ("accepted", "answered")]

    # A second report supersedes the first by default; the status stays answered.
    second = asyncio.run(derm.send_report(case_id, assessment="Dysplastic naevus, mild",
                                          recommendations="Excise"))
    record = pcp.consult_record(case_id)
    assert record.request is not None and record.request["reason"] == REQUEST["reason"]
    assert record.request["callback"] == {"method": "phone", "detail": "ext. 4471"}
    assert (record.requester, record.request_seq, record.skipped) == (pcp.user_id, 1, 0)
    assert [(r.seq, r.superseded_by) for r in record.reports] == [
        (first.seq, second.seq), (second.seq, None)]
    time = record.time_of(derm.user_id)
    assert (time.minutes, time.active_minutes, time.manual_minutes) == (26, 6, 20)
    summary = consult.billing_summary(record, record.reports[1])
    assert summary["cumulative_minutes"] == 26 and summary["recorded_minutes"] == 26
    assert summary["request_reason_present"] and summary["written_report_present"]
    assert summary["patient_consent"] is True and summary["warnings"] == []
    assert consult.billing_summary(record, record.reports[0])["warnings"] == [
        "fourteen_day_referral"]
    # The specialist reads the same record.
    theirs = derm.consult_record(case_id)
    assert [(r.seq, r.superseded_by) for r in theirs.reports] == [
        (r.seq, r.superseded_by) for r in record.reports]
    assert status(derm, case_id) == "answered"
    # The server stored ciphertext only.
    stored = b"".join(bytes(c) for c in m.Message.objects.filter(case_id=case_id)
                      .values_list("ciphertext", flat=True))
    for secret in (b"dysplastic", b"Excise", b"ext. 4471", b"reviewed history"):
        assert secret not in stored


def test_report_and_time_by_the_requester_are_refused_and_change_nothing(
        server: str, tmp_path: Path) -> None:
    pcp, _derm, case_id = room(server, tmp_path)
    before = m.Case.objects.get(pk=case_id).last_seq
    with pytest.raises(UsageError) as refused:
        asyncio.run(pcp.send_report(case_id, assessment="a", recommendations="r"))
    assert refused.value.code == "not_consultant"
    with pytest.raises(UsageError) as refused:
        asyncio.run(pcp.add_time(case_id, minutes=5))
    assert refused.value.code == "not_consultant"
    # A client that skips its own check is refused by the server.
    body = consult.report_body(assessment="a", recommendations="r", minutes=0,
                               first_date="2025-12-02", last_date="2025-12-02")
    with pytest.raises(ServerRefusedError) as server_refused:
        asyncio.run(pcp._send_consult(case_id, consult.REPORT, body, None, None))
    assert server_refused.value.code == "not_consultant"
    assert m.Case.objects.get(pk=case_id).last_seq == before
    assert m.Case.objects.get(pk=case_id).status == "requested"
    assert pcp.outbox(case_id) == []


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [({"minutes": -5}, "bad_value"), ({"minutes": 0}, "bad_value"),
     ({"minutes": 1441}, "bad_value"),
     ({"minutes": 5, "start_ms": 2_000_000, "end_ms": 1_000_000}, "bad_value")],
)
def test_negative_or_absurd_time_is_refused_before_sending(
        server: str, tmp_path: Path, kwargs: dict[str, Any], code: str) -> None:
    _pcp, derm, case_id = room(server, tmp_path)
    before = m.Case.objects.get(pk=case_id).last_seq
    with pytest.raises(ConsultBodyError) as refused:
        asyncio.run(derm.add_time(case_id, **kwargs))
    assert refused.value.code == code
    assert m.Case.objects.get(pk=case_id).last_seq == before and derm.outbox(case_id) == []


def test_more_than_24_hours_on_one_day_is_refused(server: str, tmp_path: Path) -> None:
    _pcp, derm, case_id = room(server, tmp_path)
    day = consult.DAY_MS * 20400
    asyncio.run(derm.add_time(case_id, minutes=1000, start_ms=day, end_ms=day))
    before = m.Case.objects.get(pk=case_id).last_seq
    with pytest.raises(ConsultBodyError) as refused:
        asyncio.run(derm.add_time(case_id, minutes=441, start_ms=day + 3_600_000,
                                  end_ms=day + 3_600_000))
    assert refused.value.code == "day_over_24h"
    assert m.Case.objects.get(pk=case_id).last_seq == before
    asyncio.run(derm.add_time(case_id, minutes=440, start_ms=day, end_ms=day))
    assert derm.consult_record(case_id).time_of(derm.user_id).minutes == 1440


def run_cli(home: Path, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    os.environ["COLLAB_PASSPHRASE"] = PASS
    try:
        code = cli.main(["--home", str(home), *argv], out=out, err=err)
    finally:
        del os.environ["COLLAB_PASSPHRASE"]
    return code, out.getvalue(), err.getvalue()


def test_cli_request_time_report_consult_and_history(server: str, tmp_path: Path) -> None:
    pcp = new_member(server, "pcp", tmp_path)
    derm = new_member(server, "derm", tmp_path, specialty="Dermatology")
    case_id = pcp.open_case(specialty="Dermatology")
    pcp.add_member(case_id, derm.user_id)
    pcp_home, derm_home = tmp_path / "pcp", tmp_path / "derm"
    case = str(case_id)
    code, out, err = run_cli(pcp_home, "request", case, "--reason", "Rash on both hands",
                             "--question", "Eczema or psoriasis?", "--urgency", "urgent",
                             "--callback", "page", "--callback-detail", "bleep 221",
                             "--patient-consent")
    assert (code, out) == (0, "sent consult request #1\n"), err
    code, out, err = run_cli(derm_home, "time", case, "--minutes", "15",
                             "--date", "2026-11-30", "--note", "read the history")
    assert code == 0 and out.startswith("recorded 15 min as #2"), err
    code, out, err = run_cli(derm_home, "time", case, "--minutes", "-3")
    assert code == 1 and "(bad_value)" in err
    code, out, err = run_cli(pcp_home, "report", case, "--assessment", "x",
                             "--recommendations", "y")
    assert code == 1 and "(not_consultant)" in err
    code, out, err = run_cli(derm_home, "report", case, "--assessment", "Hand eczema",
                             "--recommendations", "Emollients, potent steroid 2 weeks",
                             "--seen-recently")
    assert (code, out) == (0, "sent report #3\n"), err
    code, out, err = run_cli(derm_home, "report", case, "--assessment", "Hand eczema, atopic",
                             "--recommendations", "Emollients")
    assert (code, out) == (0, "sent report #4\n"), err
    assert status(pcp, case_id) == "answered"

    code, out, err = run_cli(pcp_home, "consult", case)
    assert code == 0, err
    assert "Request #1 from Pcp" in out
    assert "  reason: Rash on both hands" in out
    assert "urgency: urgent · call back by page: bleep 221 · patient consent: yes" in out
    assert "Report #3 by Derm" in out and "[superseded by #4]" in out
    assert "Report #4 by Derm" in out and "(supersedes #3)" in out
    assert "billing: 15 min, 2026-11-30..2026-11-30" in out
    assert "request reason: yes · written report: yes · patient consent: yes" in out
    assert "advisory: The consultant saw the patient face to face in the last 14 days" in out
    assert "Derm: 15 min (0 active, 15 manual), 2026-11-30..2026-11-30, 1 entries" in out
    code, out, err = run_cli(pcp_home, "consult", case, "--json")
    record = json.loads(out)
    assert [(r["seq"], r["superseded_by"]) for r in record["reports"]] == [(3, 4), (4, None)]
    assert record["reports"][0]["billing"]["warnings"] == ["fourteen_day_seen"]

    code, out, err = run_cli(pcp_home, "history", case)
    assert code == 0, err
    lines = out.splitlines()
    assert "[consult request] Rash on both hands" in lines[0]
    assert "[time 15 min manual]" in lines[1]
    assert "[consult report] Report: Hand eczema" in lines[2]
    assert "[consult report, supersedes #3] Report: Hand eczema, atopic" in lines[3]
