"""Recall in real headless Chromium against daphne: the sender recalls a message from
the room; the other member's page replaces it with "Recalled by the sender at …" at
once and after a reload, and its text is nowhere in either page. A recall the server
forges (written to the database by the test, signed with a key of its own) shows as
"Removed by the server". Any console error or CSP violation fails the test."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.utils import timezone

from collab.cases import models as m
from collab.cases.wire import ms_datetime
from collab.crypto import primitives as prim
from collab.crypto.envelope import Header
from collab.crypto.recall import recall_for, sign_recall
from tests.browser.conftest import ARTIFACTS, STORED, PageProblems
from tests.browser.test_case_room_browser import named, set_up_first_device, sign_in

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

WRONG = "Wrong patient: mole on the right calf 4 mm"
SECOND = "Second note, later removed by the server"


def forge_recall(case_id: uuid.UUID, seq: int) -> None:
    """The operator deletes message ``seq`` and serves a recall it signed itself."""
    stored = m.Message.objects.get(case_id=case_id, seq=seq)
    statement = recall_for(Header.decode(bytes(stored.header)), seq=seq,
                           device_id=stored.sender_device_id,
                           recalled_ms=int(timezone.now().timestamp() * 1000))
    m.Message.objects.filter(pk=stored.pk).update(
        ciphertext=b"", removed_at=ms_datetime(statement.recalled_ms),
        removed_reason=m.RemovedReason.RECALLED,
        recall_sig=sign_recall(prim.random_bytes(32), statement),
        recall_device_id=stored.sender_device_id,
    )


def test_sender_recalls_a_message_and_a_forged_recall_is_marked(
    server: str, new_page: Callable[[str], Any], problems: PageProblems
) -> None:
    pcp_user = named("pcp_recall", "Dr Ada Park", "General practice")
    derm_user = named("derm_recall", "Dr Ben Okafor", "Dermatology")
    pcp, derm = new_page("pcp"), new_page("derm")
    sign_in(pcp, pcp_user)
    set_up_first_device(pcp)
    sign_in(derm, derm_user)
    set_up_first_device(derm)

    pcp.get_by_label("Requested specialty").fill("Dermatology")
    pcp.get_by_label("Clinical question").fill("Rash on the forearm, two weeks.")
    pcp.get_by_role("button", name="Open case").click()
    pcp.wait_for_url(re.compile(r"/cases/[0-9a-f-]{36}/$"))
    case_id = uuid.UUID(pcp.url.rstrip("/").rsplit("/", 1)[1])
    pcp.get_by_label("Search providers by name or specialty").fill("Okafor")
    pcp.get_by_role("button", name="Search").click()
    pcp.get_by_role("button", name="Add Dr Ben Okafor to the case").click()
    pcp.locator("#members li", has_text="Dr Ben Okafor").wait_for()
    derm.goto(f"/cases/{case_id}/")
    derm.locator("#conn-state", has_text="Connected").wait_for()
    pcp.locator("#conn-state", has_text="Connected").wait_for()

    pcp.get_by_label("Message", exact=True).fill(WRONG)
    pcp.get_by_role("button", name="Send", exact=True).click()
    derm.locator("li.message .text", has_text=WRONG).wait_for()
    own = pcp.locator("li.message.own", has_text=WRONG)
    own.locator(".receipt", has_text=STORED).wait_for()
    # The action is on one's own messages only.
    theirs = derm.locator("li.message", has_text=WRONG)
    assert theirs.get_by_role("button", name="Recall").count() == 0
    own.get_by_role("button", name="Recall").click()

    derm.locator("li.message.recalled", has_text="Recalled by the sender at").wait_for()
    pcp.locator("li.message.recalled", has_text="Recalled by the sender at").wait_for()
    for page in (pcp, derm):
        assert WRONG not in page.content()
    stored = m.Message.objects.get(case_id=case_id, removed_reason="recalled")
    assert bytes(stored.ciphertext) == b"" and stored.recall_sig is not None

    # A later message, deleted by the server with a recall it forged.
    derm.get_by_label("Message", exact=True).fill("Noted.")
    derm.keyboard.press("Enter")
    pcp.get_by_label("Message", exact=True).fill(SECOND)
    pcp.get_by_role("button", name="Send", exact=True).click()
    derm.locator("li.message .text", has_text=SECOND).wait_for()
    seq = m.Message.objects.get(case_id=case_id, removed_at__isnull=True,
                                sender=pcp_user, seq__gt=stored.seq).seq
    forge_recall(case_id, seq)

    derm.reload()
    derm.locator("#conn-state", has_text="Connected").wait_for()
    derm.locator("li.message .text", has_text="Noted.").wait_for()
    derm.locator(f"li.message.server-removed[data-seq='{seq}']",
                 has_text="Removed by the server at").wait_for()
    derm.locator(f"li.message.recalled[data-seq='{stored.seq}']",
                 has_text="Recalled by the sender at").wait_for()
    content = derm.content()
    assert SECOND not in content and WRONG not in content
    assert "Recalled by the sender" not in derm.locator(f"li[data-seq='{seq}']").inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    derm.screenshot(path=str(ARTIFACTS / "browser-recall-derm.png"), full_page=True)
    problems.assert_none()
