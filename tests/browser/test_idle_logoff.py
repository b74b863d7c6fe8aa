"""Automatic logoff in the browser: a warning first, then "signed out after inactivity"."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.browser.conftest import PageProblems
from tests.browser.test_case_room_browser import named, set_up_first_device, sign_in
from tests.support.live import daphne_servers

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

IDLE_SECONDS = 12


@pytest.fixture(scope="module")
def server(django_db_setup: Any, django_db_blocker: Any) -> Iterator[str]:
    with (
        django_db_blocker.unblock(),
        daphne_servers(1, COLLAB_IDLE_TIMEOUT_SECONDS=str(IDLE_SECONDS)) as urls,
    ):
        yield urls[0]


def test_idle_session_warns_then_signs_out_and_says_why(
    new_page: Callable[[str], Any], problems: PageProblems
) -> None:
    user = named("idle_browser", "Dr Eve Idle", "General practice")
    page = new_page("idle")
    sign_in(page, user)
    set_up_first_device(page)

    banner = page.locator("#session-banner")
    banner.get_by_text("signed out soon").wait_for(timeout=IDLE_SECONDS * 1000)
    page.get_by_role("button", name="Stay signed in").click()
    banner.wait_for(state="hidden")

    banner.get_by_text("signed out soon").wait_for(timeout=IDLE_SECONDS * 1000)
    banner.get_by_text("signed out after inactivity").wait_for(timeout=IDLE_SECONDS * 1000)
    page.wait_for_url(re.compile(r"/accounts/login/\?reason=idle"))
    page.get_by_text("signed out after a period of inactivity").wait_for()
    # The session really ended on the server.
    page.goto("/")
    page.wait_for_url(re.compile(r"/accounts/login/"))
    problems.assert_none()
