"""Real headless Chromium (Debian's package) driven by Playwright, against daphne."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require
from tests.support.live import daphne_servers

CHROMIUM = "/usr/bin/chromium"
ASYNC_UNSAFE = "DJANGO_ALLOW_ASYNC_UNSAFE"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# An own message's receipt line once the server has stored it, whichever of the ack and
# the live frame came first: "Delivered" alone, else per recipient ("Not yet delivered
# to …", "Read by …"). "Sending…" and "Not sent: …" do not match.
STORED = re.compile(r"delivered|read by|acknowledged by", re.IGNORECASE)

# Reported by the page as a console error: makes any CSP violation visible to the test.
CSP_LISTENER = """
document.addEventListener('securitypolicyviolation', (e) => {
  console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI || 'inline'}`);
});
"""


@pytest.fixture(scope="module")
def server(django_db_setup: Any, django_db_blocker: Any) -> Iterator[str]:
    with django_db_blocker.unblock(), daphne_servers(1) as urls:
        yield urls[0]


@pytest.fixture(scope="module")
def browser(server: str) -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - depends on the environment
        require(False, "playwright is not installed (pip install '.[dev]')")
        raise
    require(
        Path(CHROMIUM).exists() or shutil.which("chromium") is not None,
        "Debian's chromium is not installed (apt-get install chromium)",
    )
    # Playwright's sync API keeps an event loop registered on this thread, which Django
    # takes for async code; the test's own ORM calls are synchronous. The servers were
    # started before (this fixture depends on them), so they do not inherit the flag.
    previous = os.environ.get(ASYNC_UNSAFE)
    os.environ[ASYNC_UNSAFE] = "1"
    try:
        with sync_playwright() as pw:
            instance = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                yield instance
            finally:
                instance.close()
    finally:
        if previous is None:
            os.environ.pop(ASYNC_UNSAFE, None)
        else:
            os.environ[ASYNC_UNSAFE] = previous


# Refusals the protocol defines as a normal answer, which Chromium still logs as a failed
# resource: no synced identity pins yet (404 no_pins), and a pins write that lost a race
# with the user's other device (409 stale_pins; the client merges and retries).
EXPECTED_REFUSALS = re.compile(
    r"Failed to load resource: the server responded with a status of (404|409) .*"
    r"/api/identity/pins['\"]"
)


class PageProblems:
    """Console errors, uncaught exceptions and CSP violations seen by one page."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def watch(self, page: Any, label: str) -> None:
        page.on("console", lambda msg: self._console(label, msg))
        page.on("pageerror", lambda err: self.items.append(f"{label} pageerror: {err}"))

    def _console(self, label: str, msg: Any) -> None:
        if msg.type == "error" and not EXPECTED_REFUSALS.search(f"{msg.text} @ {msg.location}"):
            self.items.append(f"{label} console.error: {msg.text} @ {msg.location}")

    def assert_none(self) -> None:
        assert self.items == [], "\n".join(self.items)


@pytest.fixture
def problems() -> Iterator[PageProblems]:
    seen = PageProblems()
    yield seen
    seen.assert_none()


@pytest.fixture
def new_page(browser: Any, server: str, problems: PageProblems) -> Iterator[Any]:
    contexts: list[Any] = []

    def make(label: str) -> Any:
        context = browser.new_context(
            base_url=server, accept_downloads=True, viewport={"width": 1280, "height": 900}
        )
        context.add_init_script(CSP_LISTENER)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(30_000)
        problems.watch(page, label)
        return page

    yield make
    for context in contexts:
        context.close()
