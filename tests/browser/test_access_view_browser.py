"""The patient's "who accessed my case" view in real Chromium against daphne: a
specialist downloads a photo in the case, and the patient who joins later sees that,
by name and in plain words, with the older entries a page further on."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from collab.accounts.models import User
from collab.audit.models import AuditAction, AuditEvent
from collab.audit.selectors import ACCESS_LOG_PAGE_SIZE
from collab.audit.services import audit_record
from collab.cases import models as m
from tests.browser.conftest import ARTIFACTS, PageProblems
from tests.browser.test_case_room_browser import (
    admit_from_dialog,
    jpeg_with_exif,
    named,
    set_up_first_device,
    sign_in,
)
from tests.support.users import PASSWORD

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def test_patient_sees_the_specialist_download_their_photo_by_name(
    server: str, new_page: Callable[[str], Any], problems: PageProblems, tmp_path: Path
) -> None:
    gp_user = named("gp_access", "Dr Ada Park", "General practice")
    derm_user = named("derm_access", "Dr Fay Gold", "Dermatology")
    gp, derm = new_page("gp"), new_page("derm")
    sign_in(gp, gp_user)
    set_up_first_device(gp)
    sign_in(derm, derm_user)
    set_up_first_device(derm)

    gp.get_by_label("Requested specialty").fill("Dermatology")
    gp.get_by_label("Clinical question").fill("Pigmented lesion on the back, changing.")
    gp.get_by_role("button", name="Open case").click()
    gp.wait_for_url(re.compile(r"/cases/[0-9a-f-]{36}/$"))
    case_id = uuid.UUID(gp.url.rstrip("/").rsplit("/", 1)[1])
    gp.get_by_label("Search providers by name or specialty").fill("Gold")
    gp.get_by_role("button", name="Search").click()
    gp.get_by_role("button", name="Add Dr Fay Gold to the case").click()
    gp.locator("#members li", has_text="Dr Fay Gold").wait_for()
    gp.locator("#conn-state", has_text="Connected").wait_for()

    # Older entries, written straight to the trail as the server would: enough that the
    # specialist's download lands on the first page and these spill onto a second.
    for _ in range(ACCESS_LOG_PAGE_SIZE + 5):
        audit_record(action=AuditAction.HISTORY_READ, actor=gp_user, case_id=case_id,
                     details={"from_seq": 1, "to_seq": 1, "count": 1})

    # The specialist opens the room; the photo the GP sends is fetched and decrypted
    # there (the download the patient will see), and saved full size.
    derm.goto(f"/cases/{case_id}/")
    derm.locator("#conn-state", has_text="Connected").wait_for()
    photo = tmp_path / "back.jpg"
    photo.write_bytes(jpeg_with_exif())
    gp.locator("#img-file").set_input_files(str(photo))
    gp.get_by_role("button", name="Send image").click()
    gp.locator("#img-status", has_text="Image sent").wait_for()
    derm.locator("li.message img.thumb[src^='blob:']").wait_for()
    derm.get_by_role("button", name="View full size").last.click()
    with derm.expect_download():
        derm.get_by_role("link", name="Save decrypted copy").click()
    derm.get_by_role("button", name="Close").click()
    downloads = AuditEvent.objects.filter(
        case_id=case_id, action=AuditAction.ATTACHMENT_DOWNLOADED, actor=derm_user
    )
    assert downloads.exists()

    # The patient joins by invitation (code compared) and opens "who accessed".
    gp.get_by_role("button", name="Create an invitation link").click()
    gp.locator("#invite-out").wait_for()
    link = gp.get_by_label("Invitation link").input_value()
    patient = new_page("patient")
    patient.goto(link.split("#", 1)[0])
    patient.get_by_label("Username").fill("pat_access")
    patient.get_by_label("Your name (shown to your care team)").fill("Iris Patient")
    patient.get_by_label("Password", exact=True).fill(PASSWORD)
    patient.get_by_label("Password again").fill(PASSWORD)
    patient.get_by_role("button", name="Create my account").click()
    patient.get_by_role("link", name="Continue without it").click()
    set_up_first_device(patient)
    patient.locator("#waiting-code").wait_for()
    code = patient.locator("#waiting-code").inner_text()
    dialog = admit_from_dialog(gp, "Iris Patient")
    assert dialog.locator("#admit-code").inner_text() == code
    dialog.get_by_label("I compared this code with the patient").check()
    dialog.get_by_role("button", name="Admit").click()
    gp.locator("#members li", has_text="Iris Patient").wait_for()
    patient_user = User.objects.get(username="pat_access")
    assert m.Member.objects.filter(case_id=case_id, user=patient_user).exists()

    patient.goto(f"/cases/{case_id}/")
    patient.locator("#conn-state", has_text="Connected").wait_for()
    patient.get_by_text("Who accessed this case, and when").click()
    log = patient.locator("#access-log")
    download = log.locator("li[data-action='attachment_downloaded']", has_text="Dr Fay Gold")
    download.first.wait_for()
    assert "Dr Fay Gold downloaded a file or picture" in download.first.inner_text()
    assert download.first.locator("time[datetime]").count() == 1
    # Other accesses, in the same plain words: the specialist's reads and live deliveries.
    assert log.locator("li", has_text="Dr Fay Gold received messages").count() >= 1
    assert log.locator("li", has_text="Dr Ada Park opened this case").count() == 0  # page 2
    assert "attachment_downloaded" not in log.inner_text()  # words, not action names
    count = AuditEvent.objects.filter(case_id=case_id).count()
    assert count > ACCESS_LOG_PAGE_SIZE
    pager = patient.locator("#access-pager")
    assert pager.is_visible()
    assert patient.get_by_role("button", name="Newer").is_disabled()
    patient.get_by_role("button", name="Older").click()
    patient.locator("#access-count", has_text="page 2 of").wait_for()
    log.locator("li", has_text="Dr Ada Park read the case history").first.wait_for()
    assert download.count() == 0
    patient.get_by_role("button", name="Newer").click()
    patient.locator("#access-count", has_text="page 1 of").wait_for()
    download.first.wait_for()
    ARTIFACTS.mkdir(exist_ok=True)
    patient.screenshot(path=str(ARTIFACTS / "browser-access-view.png"), full_page=True)
    problems.assert_none()
