"""Recall of consult messages in real Chromium against daphne: the consultant's own time
entries and report carry a Recall action; a recalled time entry leaves the time total and
the next report's minutes; a time entry the server removes (a forged live ``recalled``
frame when the channel layer is Redis, its tombstone after a reload otherwise) leaves the
record too; a recalled report and a recalled request leave the cards on
both pages, with their plaintext, live and after a reload."""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from collab.cases import models as m
from collab.cases.services.recall import Recalled, recalled_frame
from collab.cases.wire import ms_datetime
from collab.crypto import primitives as prim
from collab.crypto.envelope import Header
from collab.crypto.recall import recall_for, sign_recall
from collab.realtime import case_group, publish_after_commit
from tests.browser.conftest import PageProblems
from tests.browser.test_case_room_browser import named, set_up_first_device, sign_in

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

REASON = "Pigmented lesion SECRET-REASON"
HISTORY = "Grown over SECRET-HISTORY months"
MEDS = "SECRET-MEDS 5 mg"
NOTE = "SECRET-NOTE reviewed the wrong chart"
ASSESSMENT = "SECRET-ASSESSMENT dysplastic naevus"


def forge_live_removal(case_id: uuid.UUID, seq: int) -> None:
    """The operator deletes message ``seq`` and rings the room with a recall it signed
    itself (it holds no device key): clients show "removed by the server"."""
    stored = m.Message.objects.get(case_id=case_id, seq=seq)
    statement = recall_for(Header.decode(bytes(stored.header)), seq=seq,
                           device_id=stored.sender_device_id,
                           recalled_ms=int(timezone.now().timestamp() * 1000))
    sig = sign_recall(prim.random_bytes(32), statement)
    at = ms_datetime(statement.recalled_ms)
    with transaction.atomic():
        m.Message.objects.filter(pk=stored.pk).update(
            ciphertext=b"", removed_at=at, removed_reason=m.RemovedReason.RECALLED,
            recall_sig=sig, recall_device_id=stored.sender_device_id)
        result = Recalled(seq, stored.sender_id, at, stored.sender_device_id, sig, statement, ())
        publish_after_commit(case_group(case_id),
                             {**recalled_frame(result), "type": "case.recalled"})


def time_total(page: Any) -> tuple[int, int]:
    """(minutes, entered minutes) from the consultant's time line."""
    text = page.locator("#time-total").inner_text()
    found = re.search(r"Your time on this case: (\d+) min \((\d+) active, (\d+) entered\)", text)
    assert found, text
    return int(found[1]), int(found[3])


def test_recalled_consult_items_leave_the_cards_totals_and_next_report(
    server: str, new_page: Callable[[str], Any], problems: PageProblems
) -> None:
    pcp_user = named("pcp_rc", "Dr Ada Park", "General practice")
    derm_user = named("derm_rc", "Dr Ben Okafor", "Dermatology")
    pcp, derm = new_page("pcp"), new_page("derm")
    sign_in(pcp, pcp_user)
    set_up_first_device(pcp)
    sign_in(derm, derm_user)
    set_up_first_device(derm)

    pcp.get_by_label("Requested specialty").fill("Dermatology")
    pcp.get_by_label("Reason for the consult").fill(REASON)
    pcp.get_by_label("Clinical question").fill("Excise or watch?")
    pcp.get_by_label("Relevant history").fill(HISTORY)
    pcp.get_by_label("Medications").fill(MEDS)
    pcp.get_by_role("button", name="Open case").click()
    pcp.wait_for_url(re.compile(r"/cases/[0-9a-f-]{36}/$"))
    case_id = uuid.UUID(pcp.url.rstrip("/").rsplit("/", 1)[1])
    pcp.locator("#consult-record .request-card").wait_for()
    pcp.get_by_label("Search providers by name or specialty").fill("Okafor")
    pcp.get_by_role("button", name="Search").click()
    pcp.get_by_role("button", name="Add Dr Ben Okafor to the case").click()
    pcp.locator("#members li", has_text="Dr Ben Okafor").wait_for()
    derm.goto(f"/cases/{case_id}/")
    derm.locator("#conn-state", has_text="Connected").wait_for()
    pcp.locator("#members li", has_text="Dr Ben Okafor").get_by_role(
        "button", name="Share earlier messages").click()
    derm.locator("#consult-record .request-card", has_text=REASON).wait_for()
    # The request card is the requester's: no Recall on the consultant's page.
    assert derm.get_by_role("button", name="Recall").count() == 0

    # Two manual entries, each listed with its Recall action; the first is recalled.
    for typed, note in (("600", NOTE), ("7", "")):
        derm.get_by_label("Minutes to add").fill(typed)
        derm.get_by_label("Note (optional)", exact=True).fill(note)
        derm.get_by_role("button", name="Add time").click()
        derm.locator("#time-entries li", has_text=f"{typed} min entered").wait_for()
    derm.locator("#time-total", has_text="607 entered)").wait_for()
    wrong = derm.locator("#time-entries li", has_text=NOTE)
    wrong_seq = int(wrong.get_attribute("data-seq") or 0)
    wrong.get_by_role("button", name="Recall").click()
    derm.locator(f"li.message.recalled[data-seq='{wrong_seq}']").wait_for()
    derm.locator("#time-total", has_text=", 7 entered)").wait_for()
    assert derm.locator("#time-entries li", has_text=NOTE).count() == 0
    assert NOTE not in derm.content()
    assert m.Message.objects.get(case_id=case_id, seq=wrong_seq).removed_reason == "recalled"

    # The report's minutes leave the recalled entry out; its card has Recall for its author.
    derm.get_by_label("Assessment", exact=True).fill(ASSESSMENT)
    derm.get_by_label("Recommendations", exact=True).fill("Excision biopsy.")
    derm.get_by_role("button", name="Send report").click()
    derm.locator("#report-status", has_text="Report sent").wait_for()
    card = derm.locator("#consult-record .report-card")
    card.get_by_role("button", name="Recall").wait_for()
    minutes, entered = time_total(derm)
    assert entered == 7 and 7 <= minutes < 600
    assert f"Cumulative minutes\n{minutes}\n" in card.inner_text()
    pcp_card = pcp.locator("#consult-record .report-card", has_text=ASSESSMENT)
    pcp_card.wait_for()
    assert f"Cumulative minutes\n{minutes}\n" in pcp_card.inner_text()
    assert pcp_card.get_by_role("button", name="Recall").count() == 0

    # The server removes the 7-minute entry (no valid recall): it leaves the record too,
    # and both pages' billing summaries show the time recorded now.
    kept_seq = int(derm.locator("#time-entries li", has_text="7 min entered")
                   .get_attribute("data-seq") or 0)
    # Off the test's thread: Playwright's event loop runs on it, the publish needs its own.
    worker = threading.Thread(target=forge_live_removal, args=(case_id, kept_seq))
    worker.start()
    worker.join()
    live = "Redis" in settings.CHANNEL_LAYERS["default"]["BACKEND"]
    if not live:
        # The in-memory layer is the daphne process's own: no frame reaches the room, so
        # the page learns of the removal from the tombstone after a reload.
        derm.reload()
        derm.locator("#conn-state", has_text="Connected").wait_for()
    derm.locator(f"li.message.server-removed[data-seq='{kept_seq}']").wait_for()
    derm.locator("#time-total", has_text=", 0 entered)").wait_for()
    assert derm.locator("#time-entries li", has_text="7 min entered").count() == 0
    for page in (pcp, derm) if live else (derm,):
        page.locator("#consult-record .report-card",
                     has_text=f"(recorded now: {minutes - 7})").wait_for()

    # The consultant recalls the report: its card goes from both pages.
    report_seq = int(card.get_attribute("data-seq") or 0)
    card.get_by_role("button", name="Recall").click()
    for page in (pcp, derm):
        page.locator(f"li.message.recalled[data-seq='{report_seq}']").wait_for()
        assert page.locator("#consult-record .report-card").count() == 0
        assert ASSESSMENT not in page.content()

    # The requester recalls the request: the card and its plaintext go from both pages.
    pcp.locator("li.message.own", has_text=REASON).get_by_role("button", name="Recall").click()
    for page in (pcp, derm):
        page.locator("li.message.recalled[data-seq='1']").wait_for()
        assert page.locator("#consult-record .request-card").count() == 0
        assert page.locator("#consult-record").is_hidden()
        content = page.content()
        for secret in (REASON, HISTORY, MEDS, NOTE, ASSESSMENT):
            assert secret not in content, secret
    assert m.Message.objects.get(case_id=case_id, seq=1).removed_reason == "recalled"

    # After a reload the tombstones keep everything out of the record.
    for page in (pcp, derm):
        page.reload()
        page.locator("#conn-state", has_text="Connected").wait_for()
        page.locator(f"li.message.recalled[data-seq='{report_seq}']").wait_for()
        page.locator("li.message.recalled[data-seq='1']").wait_for()
        assert page.locator("#consult-record .consult-card").count() == 0
        content = page.content()
        for secret in (REASON, HISTORY, MEDS, NOTE, ASSESSMENT):
            assert secret not in content, secret
    derm.locator(f"li.message.server-removed[data-seq='{kept_seq}']").wait_for()
    derm.locator("#time-total", has_text=", 0 entered)").wait_for()
    problems.assert_none()
