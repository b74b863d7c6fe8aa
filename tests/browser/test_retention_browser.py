"""The retention line in real Chromium: an admin sets the period on the Retention page, a
clinician's room header and case list then say plainly what will be deleted and when,
and a legal hold placed on the page replaces the date with "nothing will be deleted".
Any console error or CSP violation fails the test."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from collab.cases.models import Case
from tests.browser.conftest import CSP_LISTENER, PageProblems
from tests.browser.test_case_room_browser import named, set_up_first_device, sign_in
from tests.support.users import make_user

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def day(at: datetime) -> str:
    return f"{at.day} {at:%b %Y}"  # the line's "3 Dec 2026", in UTC like the pages here


@pytest.fixture
def utc_page(browser: Any, server: str, problems: PageProblems) -> Iterator[Any]:
    """Pages in a UTC browser, so the dates the line names are the stored ones."""
    contexts: list[Any] = []

    def make(label: str) -> Any:
        context = browser.new_context(base_url=server, timezone_id="UTC",
                                      viewport={"width": 1280, "height": 900})
        context.add_init_script(CSP_LISTENER)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(30_000)
        problems.watch(page, label)
        return page

    yield make
    for context in contexts:
        context.close()


def test_the_case_list_and_room_say_what_will_be_deleted_and_when_and_a_hold_stops_it(
    server: str, utc_page: Any, problems: PageProblems
) -> None:
    admin_user = make_user("records_admin", role="admin")
    gp_user = named("gp_retention", "Dr Ada Park", "General practice")
    admin, gp = utc_page("admin"), utc_page("gp")

    # The admin sets a 30-day period on the Retention page (no device key needed).
    sign_in(admin, admin_user)
    admin.goto("/retention/")
    admin.locator("#policy-now", has_text="no retention period is set").wait_for()
    admin.get_by_label("Never delete").uncheck()
    admin.get_by_label("Days after a case is closed").fill("0")
    admin.get_by_role("button", name="Save").click()
    admin.locator("#policy-status", has_text="whole number of days").wait_for()
    admin.get_by_label("Days after a case is closed").fill("30")
    admin.get_by_role("button", name="Save").click()
    admin.locator("#policy-status", has_text="Saved.").wait_for()
    rule = "Closed cases are deleted 30 days after closing."
    admin.locator("#policy-now", has_text=rule).wait_for()

    # A clinician opens a case: kept while open, then the date once closed.
    sign_in(gp, gp_user)
    set_up_first_device(gp)
    gp.get_by_label("Requested specialty").fill("Dermatology")
    gp.get_by_label("Clinical question").fill("Pigmented lesion on the back, changing.")
    gp.get_by_role("button", name="Open case").click()
    gp.wait_for_url(re.compile(r"/cases/[0-9a-f-]{36}/$"))
    case_id = uuid.UUID(gp.url.rstrip("/").rsplit("/", 1)[1])
    header = gp.locator("#room-meta .retention")
    header.filter(has_text="Kept until the case is closed, then for 30 days.").wait_for()
    gp.get_by_role("button", name="Close case").click()
    closed_line = gp.locator("#room-meta .retention[data-retention='scheduled']")
    closed_line.wait_for()
    closed_at = Case.objects.get(pk=case_id).status_changed_at
    assert closed_at is not None
    expected = (
        f"Closed {day(closed_at)}: messages and files will be deleted on "
        f"{day(closed_at + timedelta(days=30))} (30 days after closing)."
    )
    assert closed_line.inner_text() == expected
    gp.goto("/")
    row = gp.locator("#case-rows tr", has=gp.locator(f"a[href='/cases/{case_id}/']"))
    assert row.locator(".retention").inner_text() == expected

    # The admin places a legal hold: the line says nothing will be deleted.
    admin.reload()
    hold_row = admin.locator(f"#hold-rows tr[data-case='{case_id}']")
    assert hold_row.locator(".retention").inner_text() == expected
    hold_row.get_by_role("button", name=f"Place a legal hold on case {str(case_id)[:8]}").click()
    admin.locator("#holds-status", has_text="is on legal hold").wait_for()
    admin.locator(f"#hold-rows tr[data-case='{case_id}'] .retention.held").wait_for()
    assert Case.objects.get(pk=case_id).legal_hold_by_id == admin_user.pk
    gp.reload()
    held = gp.locator("#case-rows .retention[data-retention='held']")
    assert held.inner_text() == "On legal hold: nothing will be deleted."
    gp.goto(f"/cases/{case_id}/")
    on_hold = "On legal hold: nothing will be deleted."
    gp.locator("#room-meta .retention", has_text=on_hold).wait_for()
    problems.assert_none()
