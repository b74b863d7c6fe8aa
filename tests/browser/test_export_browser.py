"""Export in the case room, in real headless Chromium: the browser reads and decrypts
the whole consult and offers it as a download, a FHIR R4 Bundle (validated here with
fhir.resources and the R4 JSON schema) or a printable HTML page with hostile text
escaped. No request the page makes carries the export."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import PageProblems
from tests.browser.test_case_room_browser import named, set_up_first_device, sign_in
from tests.client.export.support import HOSTILE, png, validate_bundle
from tests.client.export.test_export_live import REQUEST, send
from tests.support.clients import new_member

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def in_thread(fn: Callable[[], Any]) -> Any:
    """SDK sends run their own event loop: not on Playwright's thread."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result(timeout=120)


def download(page: Any, fmt: str, target: Path) -> Path:
    page.locator("#export-format").select_option(fmt)
    with page.expect_download() as info:
        page.get_by_role("button", name="Export", exact=True).click()
    info.value.save_as(target)
    page.locator("#export-status", has_text="not uploaded").wait_for()
    return target


def test_the_room_exports_the_consult_as_fhir_and_html_downloads(
    server: str, new_page: Callable[[str], Any], problems: PageProblems, tmp_path: Path
) -> None:
    derm_user = named("derm_export", "Dr Sam Patel", "Dermatology")
    page = new_page("derm")
    sign_in(page, derm_user)
    set_up_first_device(page)

    pcp = new_member(server, "pcp_export", tmp_path)
    case_id = pcp.open_case(specialty="Dermatology", urgency="soon")
    pcp.add_member(case_id, derm_user.pk)
    other = pcp.open_case()
    source = tmp_path / "lesion.png"
    source.write_bytes(png((200, 30, 30), (48, 32)))

    def messages() -> None:
        asyncio.run(pcp.send_text(other, "OTHER CASE: not for this export"))
        send(pcp, case_id, "consult_request", REQUEST)
        asyncio.run(pcp.send_text(case_id, HOSTILE))
        asyncio.run(pcp.send_image(case_id, source, caption="day 3"))

    in_thread(messages)
    stored = pcp.history(case_id)
    image_msg = next(m for m in stored if m.header.content_type == "image")
    manifest = image_msg.image()
    assert manifest is not None
    sent_image = pcp.download_bytes(manifest)

    bodies: list[str] = []
    page.on("request", lambda r: bodies.append(f"{r.method} {r.url} {r.post_data or ''}"))
    page.on("websocket", lambda ws: ws.on("framesent", lambda frame: bodies.append(str(frame))))
    page.goto(f"/cases/{case_id}/")
    page.locator("#conn-state", has_text="Connected").wait_for()
    page.locator("li.message figure.image").wait_for()

    bundle = json.loads(download(page, "fhir", tmp_path / "case.fhir.json").read_text())
    validate_bundle(bundle)
    resources = [e["resource"] for e in bundle["entry"]]
    comms = [r for r in resources if r["resourceType"] == "Communication"]
    assert [c["category"][0]["text"] for c in comms] == [m.header.content_type for m in stored]
    texts = [p["contentString"] for c in comms for p in c.get("payload", [])
             if "contentString" in p]
    assert HOSTILE in texts
    (attachment,) = [p["contentAttachment"] for c in comms for p in c.get("payload", [])
                     if "contentAttachment" in p]
    assert base64.b64decode(attachment["data"]) == sent_image
    (sr,) = [r for r in resources if r["resourceType"] == "ServiceRequest"]
    assert sr["reasonCode"][0]["text"] == REQUEST["consult"]["reason"]  # type: ignore[index]
    assert {r["id"] for r in resources if r["resourceType"] == "Practitioner"} == \
        {str(pcp.user_id), str(derm_user.pk)}
    assert "OTHER CASE" not in json.dumps(bundle)

    page_html = download(page, "html", tmp_path / "case.html").read_text()
    assert "<script>alert" not in page_html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page_html
    assert f"data:{manifest.mime};base64,{base64.b64encode(sent_image).decode()}" in page_html

    # The export never left the browser: no request or socket frame of the page held it.
    assert any(line.startswith("GET ") and "/messages?" in line for line in bodies)
    for line in bodies:
        for marker in ("resourceType", "<!DOCTYPE", "alert(1)", "Pigmented"):
            assert marker not in line, line
    problems.assert_none()


def test_the_room_exports_a_case_of_a_lying_server_with_removed_messages(
    server: str, new_page: Callable[[str], Any], problems: PageProblems, tmp_path: Path
) -> None:
    """The server claims the consultant opened the case and holds a recalled and a
    server-removed message: the export counts the genesis author's request, and each
    removed message is one line (entered-in-error), never its content."""
    from datetime import UTC, datetime

    from django.db import transaction

    from collab.cases import models as m
    from collab.cases.services.tombstones import message_tombstone

    derm_user = named("derm_export_lie", "Dr Sam Patel", "Dermatology")
    page = new_page("derm")
    sign_in(page, derm_user)
    set_up_first_device(page)
    pcp = new_member(server, "pcp_export_lie", tmp_path)
    case_id = pcp.open_case(specialty="Dermatology", urgency="soon")
    pcp.add_member(case_id, derm_user.pk)

    def messages() -> tuple[int, int]:
        send(pcp, case_id, "consult_request", REQUEST)
        recalled = asyncio.run(pcp.send_text(case_id, "RECALLED-SECRET")).seq
        removed = asyncio.run(pcp.send_text(case_id, "REMOVED-SECRET")).seq
        pcp.recall(case_id, recalled)
        return recalled, removed

    recalled, removed = in_thread(messages)
    with transaction.atomic():
        msg = m.Message.objects.select_for_update().get(case_id=case_id, seq=removed)
        message_tombstone(msg, reason=m.RemovedReason.RECALLED,
                          now=datetime(2025, 12, 3, 1, 2, 3, tzinfo=UTC))
    m.Case.objects.filter(pk=case_id).update(opened_by_id=derm_user.pk)

    page.goto(f"/cases/{case_id}/")
    page.locator("#conn-state", has_text="Connected").wait_for()
    page.locator("li.message.recalled", has_text="Recalled by the sender").wait_for()
    text = download(page, "fhir", tmp_path / "case.fhir.json").read_text()
    bundle = json.loads(text)
    validate_bundle(bundle)
    resources = [e["resource"] for e in bundle["entry"]]
    (sr,) = [r for r in resources if r["resourceType"] == "ServiceRequest"]
    assert sr["reasonCode"][0]["text"] == REQUEST["consult"]["reason"]  # type: ignore[index]
    assert sr["requester"]["reference"] == f"urn:uuid:{pcp.user_id}"
    (task,) = [r for r in resources if r["resourceType"] == "Task"]
    assert task["requester"]["reference"] == f"urn:uuid:{pcp.user_id}"
    gone = {r["id"]: r for r in resources if r["resourceType"] == "Communication"
            and r["status"] == "entered-in-error"}
    notes = sorted(r["note"][0]["text"] for r in gone.values())
    assert len(notes) == 2
    assert notes[0].startswith(f"Message #{recalled} recalled by the sender at 20")
    assert notes[1] == (f"Message #{removed} removed by the server at "
                        "2025-12-03T01:02:03.000Z (no valid recall from its sender)")
    page_html = download(page, "html", tmp_path / "case.html").read_text()
    for out in (text, page_html):
        assert "RECALLED-SECRET" not in out and "REMOVED-SECRET" not in out
    assert "[recalled by the sender at 20" in page_html
    problems.assert_none()
