"""What the browser counts as a person's activity is what the server counts: the
"Stay signed in" touch postpones the server's automatic logoff (API reads do not, so
it is not one), and the page's own background requests are marked as such."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.sessions.backends.db import SessionStore

from collab.accounts.policy import LAST_ACTIVITY_KEY
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


def last_activity(page: Any) -> float:
    """The server's idle clock of this page's session, read from the session store."""
    cookie = next(c for c in page.context.cookies() if c["name"].endswith("sessionid"))
    return float(SessionStore(session_key=cookie["value"]).load()[LAST_ACTIVITY_KEY])


def test_stay_signed_in_postpones_the_servers_automatic_logoff(
    new_page: Callable[[str], Any], problems: PageProblems
) -> None:
    user = named("staying", "Dr Stan Ames", "General practice")
    page = new_page("stay")
    sign_in(page, user)
    set_up_first_device(page)
    page.get_by_text("You are not in any case yet.").wait_for()
    before = last_activity(page)

    banner = page.locator("#session-banner")
    banner.get_by_text("signed out soon").wait_for(timeout=IDLE_SECONDS * 1000)
    # Only reads happened since (the case list, nonces): the server's clock stood still.
    assert last_activity(page) == before
    page.get_by_role("button", name="Stay signed in").click()
    banner.wait_for(state="hidden")
    assert last_activity(page) > before, "the touch must count as activity on the server"
    problems.assert_none()
