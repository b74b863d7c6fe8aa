"""The consult as a record in real Chromium against daphne: a primary-care provider
opens a structured consult; the dermatologist's active time is kept on a controlled
clock (Playwright's fake timers, no sleeps) while they add time by hand and answer
with a report; the report moves the case to answered, a second report supersedes the
first, and both browsers show the cards. Bad time input gets a specific error and sends
nothing. With COLLAB_SCREENSHOTS=1 the report cards are saved to
docs/images/report-card.png."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from collab.cases import models as m
from tests.browser.conftest import PageProblems
from tests.browser.test_case_room_browser import named, set_up_first_device, sign_in

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"


def keep_active(page: Any, seconds: int) -> None:
    """Input every 30 s of the page's (fake) clock: the person is acting throughout."""
    for i in range(seconds // 30):
        page.mouse.move(200 + i, 300 + i)
        page.clock.run_for(30_000)


def test_structured_consult_report_and_time_in_two_browsers(
    server: str, new_page: Callable[[str], Any], problems: PageProblems
) -> None:
    pcp_user = named("pcp_consult", "Dr Ada Park", "General practice")
    derm_user = named("derm_consult", "Dr Ben Okafor", "Dermatology")
    pcp, derm = new_page("pcp"), new_page("derm")
    sign_in(pcp, pcp_user)
    set_up_first_device(pcp)
    sign_in(derm, derm_user)
    set_up_first_device(derm)

    # The structured request: opening the case sends it as the first message.
    pcp.get_by_label("Requested specialty").fill("Dermatology")
    pcp.get_by_label("Urgency").select_option("soon")
    pcp.get_by_label("Reason for the consult").fill("Pigmented lesion, left forearm")
    pcp.get_by_label("Clinical question").fill("Suspicious for melanoma? Excise or watch?")
    pcp.get_by_label("Relevant history").fill("Noticed 3 months ago, has grown.")
    pcp.get_by_label("Medications").fill("Ramipril 5 mg")
    pcp.get_by_label("What has been tried").fill("Nothing yet")
    pcp.get_by_label("Call me back by").select_option("phone")
    pcp.get_by_label("Number or times (optional)").fill("ext. 4471")
    pcp.get_by_label("The patient consented to this consult").check()
    pcp.get_by_role("button", name="Open case").click()
    pcp.wait_for_url(re.compile(r"/cases/[0-9a-f-]{36}/$"))
    case_id = uuid.UUID(pcp.url.rstrip("/").rsplit("/", 1)[1])
    card = pcp.locator("#consult-record .request-card")
    card.wait_for()
    for shown in ("Pigmented lesion, left forearm", "Suspicious for melanoma?", "Ramipril 5 mg",
                  "phone: ext. 4471", "Patient consented"):
        assert shown in card.inner_text(), shown
    pcp.locator("li.message.own .text", has_text="Pigmented lesion, left forearm").wait_for()
    assert pcp.locator("#report-section").is_hidden()  # the requester writes no report
    case = m.Case.objects.get(pk=case_id)
    assert (case.last_seq, case.status) == (1, "requested")

    # The dermatologist joins and is shown the earlier request.
    pcp.get_by_label("Search providers by name or specialty").fill("Okafor")
    pcp.get_by_role("button", name="Search").click()
    pcp.get_by_role("button", name="Add Dr Ben Okafor to the case").click()
    pcp.locator("#members li", has_text="Dr Ben Okafor").wait_for()
    derm.clock.install()
    derm.goto(f"/cases/{case_id}/")
    derm.locator("#conn-state", has_text="Connected").wait_for()
    pcp.locator("#members li", has_text="Dr Ben Okafor").get_by_role(
        "button", name="Share earlier messages").click()
    derm.locator("#consult-record .request-card", has_text="ext. 4471").wait_for()
    assert derm.locator("#report-section").is_visible()

    # Time: three minutes of acting in the room on the page's clock; a manual entry;
    # bad entries are refused with their code and send nothing.
    keep_active(derm, 180)
    derm.locator("#time-counting", has_text="Counting now: 3 min").wait_for()
    before = m.Case.objects.get(pk=case_id).last_seq
    for bad, code in (("-5", "bad_value"), ("2.5", "bad_type"), ("1441", "bad_value")):
        derm.get_by_label("Minutes to add").fill(bad)
        derm.get_by_role("button", name="Add time").click()
        derm.locator("#time-status", has_text=f"({code})").wait_for()
    assert m.Case.objects.get(pk=case_id).last_seq == before
    derm.get_by_label("Minutes to add").fill("10")
    derm.get_by_label("Note (optional)", exact=True).fill("reviewed the history")
    derm.get_by_role("button", name="Add time").click()
    derm.locator("#time-total", has_text="10 min (0 active, 10 entered)").wait_for()

    # The report: the active time goes first, then the report with 13 minutes.
    derm.get_by_label("Assessment", exact=True).fill(
        "Likely dysplastic naevus; melanoma not excluded.")
    derm.get_by_label("Recommendations", exact=True).fill("Excision biopsy with 2 mm margins.")
    derm.get_by_label("Suggested follow-up").fill("Review histology in 2 weeks.")
    derm.get_by_label("A face-to-face referral is needed").check()
    derm.get_by_role("button", name="Send report").click()
    derm.locator("#report-status", has_text="Report sent").wait_for()
    report = pcp.locator("#consult-record .report-card")
    report.wait_for()
    text = report.inner_text()
    for shown in ("Likely dysplastic naevus", "Excision biopsy", "Review histology",
                  "Cumulative minutes\n13", "Request reason present\nYes",
                  "Written report present\nYes", "patient-consent note\nYes",
                  "if the patient is seen face to face within 14 days"):
        assert shown in text, (shown, text)
    pcp.locator("#status-text", has_text="Answered").wait_for()
    assert m.Case.objects.get(pk=case_id).status == "answered"
    derm.locator("#time-total", has_text="13 min (3 active, 10 entered)").wait_for()
    # request, manual time, active time, report: the bad entries sent nothing
    assert m.Message.objects.filter(case_id=case_id).count() == 4
    first_report = m.Case.objects.get(pk=case_id).last_seq

    # A second report supersedes the first; both stay, the older one marked.
    derm.get_by_label("Assessment", exact=True).fill("Dysplastic naevus with mild atypia.")
    derm.get_by_label("Recommendations", exact=True).fill("Excision as planned.")
    derm.get_by_role("button", name="Send report").click()
    derm.locator("#report-status", has_text="Report sent").wait_for()
    for page in (pcp, derm):
        page.locator(".report-card.superseded", has_text=f"Superseded by #{first_report + 1}"
                     ).wait_for()
        assert page.locator("#consult-record .report-card").count() == 2
    newest = pcp.locator(".report-card:not(.superseded)")
    assert f"replaces #{first_report}" in newest.inner_text()
    assert "Another report in this case" not in newest.inner_text()  # a correction
    if os.environ.get("COLLAB_SCREENSHOTS") == "1":
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        pcp.locator("#consult-record").screenshot(path=str(DOCS_IMAGES / "report-card.png"))
