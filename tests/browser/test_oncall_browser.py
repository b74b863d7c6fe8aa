"""On-call in real Chromium: an admin adds a service and a shift on the /oncall/ page,
and a provider sees who is on call (on that page, and under the new-case form's
specialty), then has a consult from that specialty offered first to the provider on
call, all without any console error or CSP violation. (Refused schedules are tested
through the API: Chromium logs every 4xx answer as a console error.)"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from collab.oncall.models import OnCallService, Shift
from tests.browser.conftest import PageProblems
from tests.browser.test_case_room_browser import named, set_up_first_device, sign_in
from tests.support.users import make_user

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

# A datetime-local value (the browser's own time zone) ``hours`` from now.
LOCAL_TIME = """(hours) => {
  const d = new Date(Date.now() + hours * 3600e3);
  const p = (n) => String(n).padStart(2, '0');
  const day = `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}`;
  return `${day}T${p(d.getHours())}:${p(d.getMinutes())}`;
}"""


def test_an_admin_schedules_a_shift_and_a_provider_sees_who_is_on_call(
    server: str, new_page: Callable[[str], Any], problems: PageProblems
) -> None:
    ann = named("oc_ann", "Dr Ann Vale", "Dermatology")
    named("oc_bob", "Dr Bob Reyes", "Dermatology")
    pcp = named("oc_pcp", "Dr Pat Lowe", "Family medicine")
    admin = make_user("oc_admin", role="admin")

    page = new_page("admin")
    sign_in(page, admin)
    set_up_first_device(page)
    page.get_by_role("link", name="On call").click()
    page.wait_for_url(re.compile(r"/oncall/$"))
    page.locator("#oncall-status", has_text="No on-call services yet").wait_for()
    page.get_by_label("New service for specialty").fill("Dermatology")
    page.get_by_label("Name", exact=True).fill("Dermatology consults")
    page.get_by_role("button", name="Add service").click()
    page.locator("#oncall-admin-status", has_text="Service Dermatology consults added").wait_for()
    page.get_by_label("Primary").select_option(label="Dr Ann Vale")
    page.get_by_label("Backup").select_option(label="Dr Bob Reyes")
    page.get_by_label("Starts (your local time)").fill(page.evaluate(LOCAL_TIME, -1))
    page.get_by_label("Ends").fill(page.evaluate(LOCAL_TIME, 8))
    page.get_by_role("button", name="Add shift").click()
    page.locator("#oncall-admin-status", has_text="Shift of Dr Ann Vale added").wait_for()
    row = page.locator("#oncall-rows tr", has_text="Dermatology consults")
    row.get_by_text("Dr Ann Vale").wait_for()
    row.get_by_text("Dr Bob Reyes").wait_for()
    page.locator("#shift-rows tr", has_text="Dr Ann Vale").wait_for()
    service = OnCallService.objects.get()
    stored = Shift.objects.get()
    assert stored.backup is not None
    assert (service.specialty, stored.primary.username, stored.backup.username) == (
        "Dermatology", "oc_ann", "oc_bob"
    )
    assert 8.9 * 3600 <= (stored.ends_at - stored.starts_at).total_seconds() <= 9 * 3600

    provider = new_page("provider")
    sign_in(provider, pcp)
    set_up_first_device(provider)
    # The cases page has loaded (and wired its form) once the queue has answered.
    provider.locator("#queue-status", has_text="No open consults").wait_for()
    provider.get_by_label("Requested specialty").fill("Dermatology")
    provider.get_by_label("Urgency").focus()  # leaving the field asks who is on call
    line = provider.locator("#oc-oncall")
    line.filter(has_text="On call now for Dermatology: Dr Ann Vale, backup Dr Bob Reyes").wait_for()
    provider.get_by_label("Requested specialty").fill("Cardiology")
    provider.get_by_label("Urgency").focus()
    line.filter(has_text="Nobody is on call for Cardiology now").wait_for()
    provider.get_by_role("link", name="On call").click()
    provider.locator("#oncall-rows tr", has_text="Dr Ann Vale").wait_for()
    assert provider.locator("#oncall-admin").is_hidden()

    # A consult requested from Dermatology now reaches Dr Vale first.
    provider.get_by_role("link", name="Cases").click()
    provider.locator("#queue-status", has_text="No open consults").wait_for()
    provider.get_by_label("Requested specialty").fill("Dermatology")
    provider.get_by_label("Clinical question").fill("Is this lesion suspicious?")
    provider.get_by_role("button", name="Open case").click()
    provider.wait_for_url(re.compile(r"/cases/[0-9a-f-]{36}/$"))
    oncall = new_page("on call")
    sign_in(oncall, ann)
    set_up_first_device(oncall)
    oncall.locator("#queue li", has_text="Offered to you first as on-call").wait_for()
    oncall.locator("#notice-list", has_text="A consult is offered to you first").wait_for()
