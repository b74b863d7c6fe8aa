"""Escalation in real Chromium: the recipient sees the reminder and acknowledges it, the
sender sees who still owes an acknowledgement and to whom the message was escalated,
after a reload too; a case owner overrides the policy in the room, an admin sets the
default on /escalation/.

The worker's step service runs in the test process at times after the message was
stored (``escalation_pass(now=...)``), as ``run_worker --once`` would under a shifted
clock. Its frames reach the browsers through Redis when the run has one; with the
in-memory layer (another process) the pages are reloaded and read the stored state."""

from __future__ import annotations

import concurrent.futures
import re
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from django.conf import settings
from django.db import connection

from collab.cases import models as m
from collab.escalation.models import CasePolicy, DoneReason, Escalation, EscalationStep
from collab.escalation.policy import organisation_policy
from collab.escalation.selectors import step_wire
from collab.escalation.services import PassResult, escalation_pass
from tests.browser.conftest import PageProblems
from tests.browser.test_case_room_browser import named, set_up_first_device, sign_in
from tests.escalation.support import at, on_call, set_policy
from tests.support.actor import Actor
from tests.support.users import make_user

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

LIVE = "redis" in settings.CHANNEL_LAYERS["default"]["BACKEND"]
POLICY = {
    "first_reminder_minutes": 2,
    "repeat_minutes": 2,
    "repeat_count": 2,
    "steps": [{"to": "oncall", "after_minutes": 5}, {"to": "owner", "after_minutes": 30}],
}


def step(when: datetime) -> PassResult:
    """One worker pass at ``when``, in a thread of its own: this thread holds
    Playwright's event loop, and the pass rings the channel layer after commit."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(_pass, when).result(timeout=60)


def _pass(when: datetime) -> PassResult:
    try:
        return escalation_pass(now=when)
    finally:
        connection.close()


def heard(page: Any) -> None:
    """Frames come live through Redis; without it the page reads the stored state."""
    if not LIVE:
        page.reload()
        page.locator("#conn-state", has_text="Connected").wait_for()


def test_sender_sees_the_escalation_and_recipient_acknowledges_the_reminder(
    server: str, new_page: Callable[[str], Any], problems: PageProblems
) -> None:
    set_policy(POLICY)
    gp_user = named("gp_esc", "Dr Ada Park", "General practice")
    derm_user = named("derm_esc", "Dr Ben Okafor", "Dermatology")
    oncall = Actor("oncall_esc", specialty="Dermatology")
    oncall.user.display_name = "Dr Cy Vale"
    oncall.user.save(update_fields=["display_name"])
    on_call(oncall, None)
    gp = new_page("gp")
    derm = new_page("derm")
    sign_in(gp, gp_user)
    set_up_first_device(gp)
    sign_in(derm, derm_user)
    set_up_first_device(derm)

    gp.get_by_label("Requested specialty").fill("Dermatology")
    gp.get_by_label("Clinical question").fill("Spreading erythema, febrile.")
    gp.get_by_role("button", name="Open case").click()
    gp.wait_for_url(re.compile(r"/cases/[0-9a-f-]{36}/$"))
    case_id = uuid.UUID(gp.url.rstrip("/").rsplit("/", 1)[1])
    gp.get_by_label("Search providers by name or specialty").fill("Okafor")
    gp.get_by_role("button", name="Search").click()
    gp.get_by_role("button", name="Add Dr Ben Okafor to the case").click()
    gp.locator("#members li", has_text="Dr Ben Okafor").wait_for()
    # The room says which policy applies.
    gp.locator(
        "#esc-policy-now", has_text="Organisation default: A reminder after 2 minutes"
    ).wait_for()

    derm.goto(f"/cases/{case_id}/")
    derm.locator("#conn-state", has_text="Connected").wait_for()
    gp.locator("#conn-state", has_text="Connected").wait_for()
    gp.get_by_label("Message", exact=True).fill("Please call me about this patient now.")
    gp.get_by_label("Mark as urgent").check()
    gp.get_by_role("button", name="Send", exact=True).click()
    derm.locator("li.message.urgent .text", has_text="Please call me").wait_for()
    message = m.Message.objects.get(case_id=case_id, urgent=True)
    assert Escalation.objects.get(message=message).next_due == at(message, 2)

    # 2 minutes on: the reminder. The recipient sees it; the sender sees who owes one.
    assert step(at(message, 2)).reminders == 1
    heard(derm)
    reminder = derm.locator("li.message.urgent .escalation .reminder",
                            has_text="Reminder 1 at")
    reminder.wait_for()
    assert "please acknowledge" in reminder.inner_text()
    heard(gp)
    gp.locator("li.message.urgent .acks",
               has_text="Waiting for acknowledgement from Dr Ben Okafor").wait_for()
    assert gp.locator("li.message.urgent .escalation .reminder").count() == 0

    # 5 minutes on: escalated to the on-call dermatologist, who is not a member. The page
    # names them from the directory when the server gives their id, else (no id) says
    # an unknown person; never the frame's name.
    assert step(at(message, 5)).escalations == 1
    wire = step_wire(EscalationStep.objects.get(escalation__message=message))
    shown = "Dr Cy Vale" if wire["to"]["id"] else "an unknown person (as the on-call provider)"
    for page in (gp, derm):
        heard(page)
        page.locator("li.message.urgent .escalation .escalated",
                     has_text=re.compile(rf"Escalated to {re.escape(shown)} at \d")).wait_for()
    # Outside the verified roster: they cannot read it until admitted after an identity check.
    line = gp.locator("li.message.urgent .escalated").inner_text()
    assert "not a member: they cannot read this case until they ask to join" in line
    assert "after checking who they are" in line
    assert not m.Member.objects.filter(case_id=case_id, user=oncall.user).exists()

    # The recipient acknowledges: the reminder goes, the sender sees it, the timer ends.
    derm.get_by_role("button", name="Acknowledge").click()
    gp.locator("li.message.urgent .acks", has_text="Acknowledged by Dr Ben Okafor").wait_for()
    derm.locator("li.message.urgent .acks", has_text="Acknowledged by you").wait_for()
    assert derm.locator("li.message.urgent .escalation .reminder").count() == 0
    row = Escalation.objects.get(message=message)
    assert row.done_reason == DoneReason.ACKNOWLEDGED
    assert step(at(message, 60)).claimed == 0

    # After a reload the sender still sees the escalation (GET /api/cases/<id>/urgent).
    # A lying server that stores the target as a member changes nothing: the page asks
    # its verified roster.
    EscalationStep.objects.filter(escalation__message=message).update(target_was_member=True)
    gp.reload()
    gp.locator("li.message.urgent .escalated", has_text="Escalated to Dr Cy Vale").wait_for()
    assert "they cannot read this case" in gp.locator(
        "li.message.urgent .escalated").inner_text()

    # The case owner overrides the policy for this case in the room.
    gp.locator("#esc-override summary").click()
    gp.get_by_label("Reminders in all").fill("0")
    gp.locator("#esc-case-save").click()
    gp.locator("#esc-case-status", has_text="Saved").wait_for()
    gp.locator("#esc-policy-now", has_text="This case: No reminders").wait_for()
    assert CasePolicy.objects.get(case_id=case_id).repeat_count == 0
    # A zero interval is refused on the page with the server's code; nothing changes.
    gp.get_by_label("Minutes between reminders").fill("0")
    gp.locator("#esc-case-save").click()
    gp.locator("#esc-case-status", has_text="bad_interval").wait_for()
    assert CasePolicy.objects.get(case_id=case_id).repeat_minutes == 2
    # The member who is not a manager has no form.
    derm.reload()
    derm.locator("#esc-policy-now", has_text="This case: No reminders").wait_for()
    assert derm.locator("#esc-override").count() == 0


def test_an_admin_sets_the_default_on_the_escalation_page(
    server: str, new_page: Callable[[str], Any], problems: PageProblems
) -> None:
    admin_user = make_user("admin_esc", role="admin")
    page = new_page("admin")
    sign_in(page, admin_user)
    page.goto("/escalation/")
    page.locator(
        "#esc-org-now", has_text="Organisation default: A reminder after 2 minutes"
    ).wait_for()
    page.get_by_label("Minutes between reminders").fill("3")
    page.get_by_label(re.compile("Then escalate to")).fill("backup:15, owner:40")
    page.get_by_role("button", name="Save").click()
    page.locator("#esc-org-status", has_text="Saved").wait_for()
    page.locator("#esc-org-now", has_text="then every 3 minutes").wait_for()
    policy = organisation_policy()
    assert (policy.repeat_minutes, policy.steps) == (3, (("backup", 15), ("owner", 40)))
