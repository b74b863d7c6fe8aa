"""The demo read in a fresh Chromium: `manage.py demo` into a temporary data directory, a
live daphne over it (device proofs required), sign in as pcp, recover with the printed
recovery key, open the demo case and see its first message. No command-line step."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, CSP_LISTENER
from tests.conftest import require
from tests.demo.test_demo import ROOT, run_demo
from tests.support.live import free_port, wait_for_port

pytestmark = pytest.mark.browser

FIRST_MESSAGE = "54-year-old with a pigmented lesion on the left forearm"


def demo_env(data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update(
        COLLAB_DEMO="1",
        COLLAB_DATA_DIR=str(data),
        COLLAB_DEVICE_PROOF_REQUIRED="1",
        DJANGO_SETTINGS_MODULE="collab.settings",
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture
def demo_server(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(base URL, demo output)."""
    made = run_demo(tmp_path, "demo")
    assert made.returncode == 0, made.stderr
    port = free_port()
    log = (tmp_path / "daphne.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
         "collab.asgi:application"],
        cwd=ROOT, env=demo_env(tmp_path), stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}", made.stdout
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def note(problems: list[str], msg: Any) -> None:
    # No synced pins yet is a normal 404 (see tests/browser/conftest.py).
    if msg.type == "error" and "/api/identity/pins" not in str(msg.location):
        problems.append(msg.text)


def totp(data: Path, username: str) -> str:
    code = run_demo(data, "demo_code", username)
    assert code.returncode == 0, code.stderr
    return code.stdout.strip()[:6]


def test_a_fresh_browser_reads_the_demo_case_from_its_first_message(
    demo_server: tuple[str, str], tmp_path: Path
) -> None:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - depends on the environment
        require(False, "playwright is not installed (pip install '.[dev]')")
        raise
    require(
        Path(CHROMIUM).exists() or shutil.which("chromium") is not None,
        "Debian's chromium is not installed (apt-get install chromium)",
    )
    url, output = demo_server
    case_id = re.search(r"Demo case ([0-9a-f-]{36})", output)
    recovery = re.search(r"pcp: recovery key ([A-Z2-7-]+)", output)
    assert case_id and recovery, output
    problems: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(base_url=url)
            context.add_init_script(CSP_LISTENER)
            page = context.new_page()
            page.set_default_timeout(30_000)
            page.on("console", lambda msg: note(problems, msg))
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto("/accounts/login/")
            page.get_by_label("Username").fill("pcp")
            page.get_by_label("Password").fill("demo-pcp-2026!")
            page.get_by_role("button", name="Continue").click()
            page.wait_for_url(re.compile(r"/accounts/otp/"))
            page.get_by_label("Code").fill(totp(tmp_path, "pcp"))
            page.get_by_role("button", name="Verify").click()
            page.wait_for_url(re.compile(r"/keys/"))
            page.get_by_role("textbox", name="Recovery key").fill(recovery.group(1))
            page.get_by_role("button", name="Set up this browser").click()
            page.wait_for_url(re.compile(r"/$"))
            page.get_by_role("link", name=f"Case {case_id.group(1)[:8]}").click()
            page.locator("#members li", has_text="2 devices").wait_for()  # enrolled
            page.locator("#conn-state", has_text="Connected").wait_for()
            page.locator("li.message .text", has_text=FIRST_MESSAGE).wait_for()
            assert page.locator("li.message.unavailable, li.message.invalid").count() == 0
        finally:
            browser.close()
    assert problems == []
