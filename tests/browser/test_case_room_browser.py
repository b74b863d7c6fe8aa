"""The browser client in real headless Chromium against a real daphne process.

Users sign in through the real pages (password, then a real TOTP code), make their keys
in the browser, and talk end to end: a primary-care provider opens a case, adds a
dermatologist, sends text and a photo carrying EXIF/GPS; the dermatologist sees both
decrypted live and the image they save has no metadata. The Python client talks to the
browser both ways. Any console error, uncaught exception or CSP violation fails a test.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import re
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import pytest
from PIL import Image, ImageDraw

from collab.accounts.models import Device, IdentityBackup, IdentityKey, User
from collab.cases import models as m
from collab.crypto.actions import Action
from collab.crypto.envelope import Envelope
from collab.crypto.log import LogEntry
from tests.browser.conftest import ARTIFACTS, PageProblems
from tests.support.actor import Actor
from tests.support.users import PASSWORD, make_user, totp_code
from tests.support.ws import RoomSocket

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

T = TypeVar("T")
GPS_MARK = "SecretCam Model-X SN-4711"


def named(username: str, display_name: str, specialty: str = "") -> User:
    user = make_user(username, specialty=specialty)
    user.display_name = display_name
    user.organisation = "Riverside Health"
    user.save(update_fields=["display_name", "organisation"])
    return user


def sign_in(page: Any, user: User, offset_steps: int = 0) -> None:
    """The two real sign-in pages: password, then a TOTP code (django-otp refuses a code
    twice, so a second sign-in of one user within 30 s takes the next step's code)."""
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url(re.compile(r"/accounts/otp/"))
    page.get_by_label("Code").fill(totp_code(user, offset_steps=offset_steps))
    page.get_by_role("button", name="Verify").click()


def admit_from_dialog(page: Any, name: str) -> Any:
    """Open the admission dialog for ``name``'s join request; returns the dialog."""
    page.locator("#joins").get_by_role("button", name=f"Review {name}").click()
    dialog = page.locator("#admit-dialog")
    dialog.locator("[data-pin]").wait_for()
    return dialog


def set_up_first_device(page: Any) -> str:
    """First sign-in ever: the browser makes the identity; confirm the recovery key."""
    page.wait_for_url(re.compile(r"/keys/"))
    page.locator("#new-identity").wait_for(state="visible")
    key: str = page.locator("#recovery-key").inner_text().strip()
    assert re.fullmatch(r"([A-Z2-7]{4}-){12}[A-Z2-7]{4}", key), key
    label = page.locator("#confirm-label").inner_text()
    a, b = (int(n) for n in re.findall(r"group (\d+)", label))
    groups = key.split("-")
    field = page.locator("#confirm-groups")
    field.fill("AAAA BBBB")
    page.get_by_role("button", name=re.compile("finish setup")).click()
    page.get_by_text("does not match").wait_for()
    field.fill(f"{groups[a - 1]} {groups[b - 1]}")
    page.get_by_role("button", name=re.compile("finish setup")).click()
    page.wait_for_url(re.compile(r"/$"))
    return key


READ_KEYSTORE = """async () => {
  const db = await new Promise((ok, no) => {
    const r = indexedDB.open('collab-keys');
    r.onsuccess = () => ok(r.result);
    r.onerror = no;
  });
  const ask = (fn) => new Promise((ok) => {
    const r = fn(db.transaction('kv').objectStore('kv'));
    r.onsuccess = () => ok(r.result);
  });
  const key = await ask((s) => s.get('wrapping-key'));
  const keys = await ask((s) => s.getAllKeys());
  return {extractable: key.extractable, algorithm: key.algorithm.name, keys,
          local: localStorage.length, session: sessionStorage.length};
}"""


def jpeg_with_exif() -> bytes:
    """640x480 JPEG whose EXIF says: rotate 90 degrees, GPS position, camera serial."""
    img = Image.new("RGB", (640, 480), (205, 150, 140))
    draw = ImageDraw.Draw(img)
    draw.ellipse((250, 170, 390, 310), fill=(150, 60, 60))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: display rotated 90 degrees clockwise
    exif[0x010F] = GPS_MARK  # Make
    exif[0x8825] = {1: "N", 2: (52.0, 31.0, 12.0), 3: "E", 4: (13.0, 24.0, 0.0)}  # GPS
    out = io.BytesIO()
    img.save(out, "JPEG", quality=92, exif=exif, comment=b"patient Jane Roe")
    data = out.getvalue()
    assert Image.open(io.BytesIO(data)).getexif().get_ifd(0x8825)  # the source has GPS
    return data


def run_async(factory: Callable[[], Coroutine[Any, Any, T]]) -> concurrent.futures.Future[T]:
    """Run a coroutine on its own thread and loop (Playwright's sync API owns this one)."""
    future: concurrent.futures.Future[T] = concurrent.futures.Future()

    def target() -> None:
        try:
            future.set_result(asyncio.run(factory()))
        except BaseException as error:  # handed to the test thread
            future.set_exception(error)

    threading.Thread(target=target, daemon=True).start()
    return future


def check_integrity(page: Any) -> None:
    """Every script carries SRI, and every module Chromium fetched was preloaded with it."""
    report = page.evaluate(
        """() => ({
          scripts: [...document.scripts].map((s) => [s.src, s.integrity, s.type]),
          preloads: [...document.querySelectorAll('link[rel=modulepreload]')]
            .map((l) => [l.href, l.integrity]),
          fetched: performance.getEntriesByType('resource')
            .map((e) => e.name).filter((n) => n.endsWith('.js')),
        })"""
    )
    assert report["scripts"], "no scripts on the page"
    for src, integrity, _ in report["scripts"]:
        assert src and integrity.startswith("sha384-"), (src, integrity)
    preloaded = {href for href, integrity in report["preloads"] if integrity.startswith("sha384-")}
    classic = {src for src, _, kind in report["scripts"] if kind != "module"}
    missing = [url for url in report["fetched"] if url not in preloaded | classic]
    assert not missing, f"scripts loaded without integrity: {missing}"


def test_two_clinicians_open_a_case_and_exchange_text_and_a_clean_image(
    server: str, new_page: Callable[[str], Any], problems: PageProblems, tmp_path: Path
) -> None:
    pcp_user = named("pcp_browser", "Dr Ada Park", "General practice")
    derm_user = named("derm_browser", "Dr Ben Okafor", "Dermatology")
    pcp = new_page("pcp")
    derm = new_page("derm")

    # Sign in with TOTP through the real pages; first device: keys made in the browser.
    sign_in(pcp, pcp_user)
    set_up_first_device(pcp)
    sign_in(derm, derm_user)
    set_up_first_device(derm)
    assert IdentityKey.objects.filter(user__in=[pcp_user, derm_user]).count() == 2
    assert IdentityBackup.objects.filter(user__in=[pcp_user, derm_user]).count() == 2
    assert Device.objects.filter(user=pcp_user, revoked_at__isnull=True).count() == 1
    check_integrity(pcp)
    # The secret keys are wrapped by a non-extractable AES-GCM key kept in IndexedDB,
    # and nothing is in localStorage.
    stored = pcp.evaluate(READ_KEYSTORE)
    assert stored["extractable"] is False and stored["algorithm"] == "AES-GCM"
    assert f"device:{pcp_user.pk}" in stored["keys"]
    assert stored["local"] == 0 and stored["session"] == 0

    # The provider opens a case with the clinical question as its first message.
    pcp.get_by_label("Requested specialty").fill("Dermatology")
    pcp.get_by_label("Urgency").select_option("soon")
    pcp.get_by_label("Clinical question").fill("Itchy plaque on the left forearm for 3 weeks.")
    pcp.get_by_role("button", name="Open case").click()
    pcp.wait_for_url(re.compile(r"/cases/[0-9a-f-]{36}/$"))
    case_id = uuid.UUID(pcp.url.rstrip("/").rsplit("/", 1)[1])
    case = m.Case.objects.get(pk=case_id)
    assert (case.specialty, case.urgency, case.last_seq) == ("Dermatology", "soon", 1)
    pcp.locator("li.message.own .text", has_text="Itchy plaque").wait_for()
    check_integrity(pcp)

    # Add the dermatologist through the directory search: a signed add_user entry.
    pcp.get_by_label("Search providers by name or specialty").fill("Okafor")
    pcp.get_by_role("button", name="Search").click()
    pcp.get_by_role("button", name="Add Dr Ben Okafor to the case").click()
    pcp.locator("#members li", has_text="Dr Ben Okafor").wait_for()
    assert m.Case.objects.get(pk=case_id).head_epoch == 1

    # The dermatologist finds the case in their list and opens the room.
    derm.goto("/")
    derm.get_by_role("link", name=f"Case {str(case_id)[:8]}").click()
    derm.wait_for_url(re.compile(rf"/cases/{case_id}/$"))
    derm.locator("#conn-state", has_text="Connected").wait_for()
    pcp.locator("#conn-state", has_text="Connected").wait_for()

    # Typing indicator, then a text message in real time.
    pcp.get_by_label("Message", exact=True).press_sequentially("Photo foll", delay=20)
    derm.locator("#typing", has_text="Dr Ada Park is typing").wait_for()
    pcp.get_by_label("Message", exact=True).fill("Photo follows. Eczema or psoriasis?")
    pcp.get_by_label("Mark as urgent").check()
    pcp.get_by_role("button", name="Send", exact=True).click()
    text = derm.locator("li.message.urgent .text", has_text="Photo follows. Eczema or psoriasis?")
    text.wait_for()
    derm.locator("li.message.urgent", has_text="Dr Ada Park").wait_for()

    # A photo with EXIF and GPS: re-encoded on a canvas before encryption.
    photo = tmp_path / "forearm.jpg"
    photo.write_bytes(jpeg_with_exif())
    pcp.locator("#img-file").set_input_files(str(photo))
    pcp.get_by_label("Caption (optional)").fill("Left forearm, today")
    pcp.get_by_role("button", name="Send image").click()
    pcp.locator("#img-status", has_text="Image sent").wait_for()
    thumb = derm.locator("li.message img.thumb[src^='blob:']")
    thumb.wait_for()
    derm.locator("li.message .text", has_text="Left forearm, today").wait_for()

    # Full size, decrypted in memory; the saved copy carries no metadata at all.
    derm.get_by_role("button", name="View full size").last.click()
    save = derm.get_by_role("link", name="Save decrypted copy")
    save.wait_for()
    with derm.expect_download() as info:
        save.click()
    data = Path(info.value.path()).read_bytes()
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG"
    assert image.size == (480, 640)  # the orientation was applied, then dropped
    assert not image.getexif(), dict(image.getexif())
    assert "exif" not in image.info and "comment" not in image.info
    assert b"Exif" not in data and GPS_MARK.encode() not in data and b"Jane Roe" not in data
    derm.screenshot(path=str(ARTIFACTS / "browser-room-image-viewer.png"))
    derm.get_by_role("button", name="Close").click()
    assert derm.locator("#viewer-img").get_attribute("src") is None  # Blob URL revoked

    # Read receipts reach the sender; the dermatologist answers.
    pcp.locator("li.message.own .receipt", has_text="Read by Dr Ben Okafor").first.wait_for()
    answer = "Looks like nummular eczema. Try a potent steroid."
    derm.get_by_label("Message", exact=True).fill(answer)
    derm.keyboard.press("Enter")
    pcp.locator("li.message .text", has_text="nummular eczema").wait_for()
    derm.locator("li.message.own .receipt", has_text="Read by Dr Ada Park").wait_for()
    # The urgent message asks for acknowledgement.
    pcp.locator(
        "li.message.urgent .acks", has_text="Waiting for acknowledgement from Dr Ben"
    ).wait_for()
    derm.get_by_role("button", name="Acknowledge").click()
    pcp.locator("li.message.urgent .acks", has_text="Acknowledged by Dr Ben Okafor").wait_for()
    derm.locator("li.message.urgent .acks", has_text="Acknowledged by you").wait_for()

    # Members see each other as active and can compare safety numbers.
    pcp.locator("#members li", has_text="Dr Ben Okafor").locator(".presence.online").wait_for()
    pcp.locator("#members li", has_text="Dr Ben Okafor").get_by_role(
        "button", name="Safety number"
    ).click()
    pcp_digits = pcp.locator("#safety").inner_text().split()
    derm.locator("#members li", has_text="Dr Ada Park").get_by_role(
        "button", name="Safety number"
    ).click()
    assert pcp_digits == derm.locator("#safety").inner_text().split()
    assert len(pcp_digits) == 12

    ARTIFACTS.mkdir(exist_ok=True)
    pcp.screenshot(path=str(ARTIFACTS / "browser-room-pcp.png"), full_page=True)
    derm.screenshot(path=str(ARTIFACTS / "browser-room-derm.png"), full_page=True)
    check_integrity(derm)

    # A reload keeps the keys and shows the history again, verified.
    derm.reload()
    derm.locator("li.message .text", has_text="nummular eczema").wait_for()
    derm.locator("li.message img.thumb[src^='blob:']").wait_for()

    # Removing the dermatologist: a remove_user entry and a new epoch; their socket closes.
    pcp.locator("#members li", has_text="Dr Ben Okafor").get_by_role(
        "button", name="Remove"
    ).click()
    pcp.get_by_role("button", name="Confirm: remove Dr Ben Okafor").click()
    pcp.locator("#members-status", has_text="was removed").wait_for()
    derm.locator("#room-error", has_text="no longer in this case").wait_for()
    assert m.Case.objects.get(pk=case_id).head_epoch == 2
    problems.assert_none()


def test_the_open_case_form_is_not_sent_before_its_script_is_ready(
    server: str, new_page: Callable[[str], Any], problems: PageProblems
) -> None:
    """A click or Enter before the page has its device must not send the form natively:
    that GET would put the clinical question in the URL and the server's logs."""
    user = named("early_click", "Dr Ivy Lane", "General practice")
    page = new_page("early")
    sign_in(page, user)
    set_up_first_device(page)
    held: list[Any] = []
    def hold(route: Any) -> None:
        held.append(route)

    page.route("**/api/devices", hold)  # the page waits for its device list
    page.reload()
    while not held:
        page.wait_for_timeout(50)
    button = page.locator("#open-case-btn")
    assert button.is_disabled()
    page.get_by_label("Requested specialty").fill("Cardiology")
    page.get_by_label("Clinical question").fill("Chest pain on exertion")
    page.get_by_label("Requested specialty").press("Enter")
    page.evaluate("document.getElementById('open-case-form').requestSubmit()")
    page.wait_for_timeout(500)
    assert "?" not in page.url and "Chest" not in page.url, page.url
    assert not m.Case.objects.filter(opened_by=user).exists()

    held[0].continue_()
    page.unroute("**/api/devices", hold)
    button.click()  # waits until the script enables it
    page.wait_for_url(re.compile(r"/cases/[0-9a-f-]{36}/$"))
    page.locator("li.message.own .text", has_text="Chest pain").wait_for()
    problems.assert_none()


def test_browser_and_python_client_talk_both_ways(
    server: str, new_page: Callable[[str], Any], problems: PageProblems
) -> None:
    gp_user = named("gp_interop", "Dr Cora Lind", "General practice")
    page = new_page("gp")
    sign_in(page, gp_user)
    set_up_first_device(page)

    # The Python client opens the case and adds the browser user (log made in Python,
    # verified in the browser).
    bot = Actor("bot_interop", specialty="Dermatology").register().go_live(server)
    state = bot.open_case(specialty="General practice")
    assert bot.add(state, SimpleNamespace(user=gp_user)).status_code == 201  # type: ignore[arg-type]

    page.goto(f"/cases/{state.case_id}/")
    page.locator("#conn-state", has_text="Connected").wait_for()
    page.locator("#members li", has_text="Bot_Interop").wait_for()

    async def python_side() -> dict[str, Any]:
        sock = await RoomSocket.open(server, bot.session_id, state.case_id, bot.device.device_id)
        await sock.next("hello")
        ack = await sock.send_envelope(state.seal({"text": "Hello from the Python client"}))
        assert ack["type"] == "ack", ack
        # Skip a few sender_seq values: the browser must show "missing messages".
        state.sender_seq += 3
        ack = await sock.send_envelope(state.seal({"text": "After a gap", "priority": "urgent"}))
        assert ack["type"] == "ack", ack
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            frame = await sock.next("message", timeout=60)
            envelope = Envelope.from_wire(frame["envelope"])
            if envelope.header.sender_user_id != bot.user.pk:
                opened = state.open(envelope)
                await sock.close()
                return opened.body
        raise AssertionError("no message from the browser")

    future = run_async(python_side)
    page.locator("li.message .text", has_text="Hello from the Python client").wait_for()
    page.locator("li.gap", has_text="Missing messages: 3 messages").wait_for()
    page.locator("li.message.urgent .text", has_text="After a gap").wait_for()
    page.get_by_label("Message", exact=True).fill("Hello back from Chromium")
    page.get_by_role("button", name="Send", exact=True).click()
    body = future.result(timeout=90)
    assert body == {"text": "Hello back from Chromium"}
    page.locator("li.message.own .receipt", has_text="Delivered").wait_for()
    page.screenshot(path=str(ARTIFACTS / "browser-room-interop.png"), full_page=True)
    problems.assert_none()


def test_a_second_browser_recovers_the_identity_and_enrols_itself(
    server: str, new_page: Callable[[str], Any], problems: PageProblems
) -> None:
    user = named("multi_device", "Dr Dana Reyes", "General practice")
    first = new_page("first")
    sign_in(first, user)
    recovery = set_up_first_device(first)
    first.get_by_label("Requested specialty").fill("Cardiology")
    first.get_by_label("Clinical question").fill("Palpitations at rest, ECG attached later.")
    first.get_by_role("button", name="Open case").click()
    first.wait_for_url(re.compile(r"/cases/[0-9a-f-]{36}/$"))
    room_url = first.url
    case_id = uuid.UUID(room_url.rstrip("/").rsplit("/", 1)[1])

    # A new browser: same identity, recovered from the recovery key; a new device.
    second = new_page("second")
    sign_in(second, user, offset_steps=1)
    second.wait_for_url(re.compile(r"/keys/"))
    second.get_by_role("textbox", name="Recovery key").fill("AAAA-" * 12 + "AAAA")
    second.get_by_role("button", name="Set up this browser").click()
    second.get_by_text("does not open your identity backup").wait_for()
    second.get_by_role("textbox", name="Recovery key").fill(recovery.lower().replace("-", " "))
    second.get_by_role("button", name="Set up this browser").click()
    second.wait_for_url(re.compile(r"/$"))
    assert Device.objects.filter(user=user, revoked_at__isnull=True).count() == 2

    # Not in the case yet: opening the room enrols it (enrol_device, signed by the
    # identity key, authored by the new device itself).
    second.goto(room_url)
    second.locator("#members li", has_text="2 devices").wait_for()
    assert m.Case.objects.get(pk=case_id).head_epoch == 1
    enrol = m.LogEntry.objects.get(case_id=case_id, epoch=1)
    assert enrol.action == Action.ENROL_DEVICE
    first_device = m.LogEntry.objects.get(case_id=case_id, epoch=0).author_device_id
    assert LogEntry.decode(bytes(enrol.raw)).author_device_id != first_device
    # The second browser's socket goes through a proxy the test can cut.
    links: list[Any] = []
    blocked = threading.Event()

    def route(ws: Any) -> None:
        if blocked.is_set():
            ws.close(code=1011, reason="network down")
            return
        ws.connect_to_server()
        links.append(ws)

    second.route_web_socket(re.compile(r"/ws/cases/"), route)
    second.reload()
    second.locator("#conn-state", has_text="Connected").wait_for()
    first.get_by_label("Message", exact=True).fill("Seen on my other device?")
    first.get_by_role("button", name="Send", exact=True).click()
    second.locator("li.message .text", has_text="Seen on my other device?").wait_for()

    # A dropped connection: messages sent meanwhile arrive after the resume, once.
    blocked.set()
    links[-1].close(code=1001, reason="dropped")
    second.locator("#conn-state", has_text="reconnecting").wait_for()
    first.get_by_label("Message", exact=True).fill("Sent while you were offline")
    first.get_by_role("button", name="Send", exact=True).click()
    first.locator("li.message.own .receipt", has_text="Delivered").last.wait_for()
    time.sleep(1)
    assert second.locator("li.message .text", has_text="while you were offline").count() == 0
    blocked.clear()
    offline = second.locator("li.message .text", has_text="Sent while you were offline")
    offline.wait_for(timeout=60_000)
    second.locator("#conn-state", has_text="Connected").wait_for()
    assert offline.count() == 1
    assert second.locator("li.message .text", has_text="Seen on my other device?").count() == 1

    # Revoke the first browser from the second: its room closes at once.
    second.goto("/devices/")
    row = second.locator("#device-rows tr", has_text="(this browser)")
    row.wait_for()
    other = second.locator("#device-rows tr").filter(has_not_text="(this browser)")
    other.get_by_role("button", name="Revoke").click()
    other.get_by_role("button", name=re.compile("Confirm: revoke")).click()
    second.locator("#devices-status", has_text="was revoked").wait_for()
    first.locator("#room-error", has_text="no longer in this case").wait_for()
    # The next time the second device opens the room, it removes the revoked device.
    second.goto(room_url)
    second.locator("#members li", has_text="1 device").wait_for()
    assert m.Case.objects.get(pk=case_id).head_epoch == 2

    # Signing out closes the room and lands on the sign-in page.
    second.get_by_role("button", name="Sign out", exact=True).click()
    second.wait_for_url(re.compile(r"/accounts/login/\?reason=signed_out"))
    second.get_by_text("keys stay in this browser").wait_for()
    problems.assert_none()


def test_specialist_claims_from_the_queue_and_a_patient_joins_by_invitation_then_leaves(
    server: str, new_page: Callable[[str], Any], problems: PageProblems
) -> None:
    gp_user = named("gp_queue", "Dr Fay Gold", "General practice")
    derm_user = named("derm_queue", "Dr Hal Ito", "Dermatology")
    gp = new_page("gp")
    sign_in(gp, gp_user)
    set_up_first_device(gp)
    gp.get_by_label("Requested specialty").fill("Dermatology")
    gp.get_by_label("Urgency").select_option("urgent")
    gp.get_by_label("Clinical question").fill("Rapidly spreading rash with fever.")
    gp.get_by_role("button", name="Open case").click()
    gp.wait_for_url(re.compile(r"/cases/[0-9a-f-]{36}/$"))
    case_id = uuid.UUID(gp.url.rstrip("/").rsplit("/", 1)[1])
    gp.locator("li.message.own.urgent", has_text="Rapidly spreading rash").wait_for()
    gp.locator("#conn-state", has_text="Connected").wait_for()

    # The dermatologist sees the consult in their queue (metadata only) and claims it;
    # the requester reviews the request and admits them with a signed add_user entry.
    derm = new_page("derm")
    sign_in(derm, derm_user)
    set_up_first_device(derm)
    queue = derm.locator("#queue li", has_text="Dr Fay Gold")
    queue.wait_for()
    assert "Rapidly" not in derm.locator("#queue").inner_text()
    queue.get_by_role("button", name="Claim the consult from Dr Fay Gold").click()
    derm.get_by_text("Claimed.").wait_for()
    dialog = admit_from_dialog(gp, "Dr Hal Ito")
    for shown in ("Dr Hal Ito", "Dermatology", "Riverside Health", "Claimed this consult", "NEW"):
        assert shown in dialog.inner_text(), shown
    dialog.get_by_role("button", name="Admit").click()
    gp.locator("#members li", has_text="Dr Hal Ito").wait_for()
    gp.locator("#status-text", has_text="Accepted").wait_for()
    derm.goto(f"/cases/{case_id}/")
    derm.locator("#conn-state", has_text="Connected").wait_for()
    # History is off by default: the question reaches the specialist only when shared.
    assert derm.locator("li.message .text", has_text="Rapidly spreading rash").count() == 0
    gp.locator("#members li", has_text="Dr Hal Ito").get_by_role(
        "button", name="Share earlier messages"
    ).click()
    gp.locator("#members-status", has_text="can now read the earlier messages").wait_for()
    derm.locator("li.message.urgent .text", has_text="Rapidly spreading rash").wait_for()
    derm.get_by_role("button", name="Acknowledge").click()
    gp.locator("li.message.urgent .acks", has_text="Acknowledged by Dr Hal Ito").wait_for()
    derm.get_by_role("button", name="Mark answered").click()
    gp.locator("#status-text", has_text="Answered").wait_for()

    # The patient: a single-use link shown once, sign-up, keys in the browser.
    gp.get_by_role("button", name="Create an invitation link").click()
    gp.locator("#invite-out").wait_for()
    link = gp.get_by_label("Invitation link").input_value()
    assert "/invite/" in link and re.search(r"#k=[A-Za-z0-9_-]{43}$", link), link
    # The QR code is drawn in the page from the full link, fragment included.
    assert gp.locator("#invite-qr").get_attribute("data-qr") == link
    # This patient types the link without its fragment: nothing binds the account to
    # the link, so the clinician compares the patient's code before admitting.
    patient = new_page("patient")
    patient.goto(link.split("#", 1)[0])
    patient.get_by_label("Username").fill("pat_browser")
    patient.get_by_label("Your name (shown to your care team)").fill("Iris Patient")
    patient.get_by_label("Password", exact=True).fill(PASSWORD)
    patient.get_by_label("Password again").fill(PASSWORD)
    patient.get_by_role("button", name="Create my account").click()
    patient.get_by_role("link", name="Continue without it").click()
    set_up_first_device(patient)
    patient.locator("#waiting-code").wait_for()
    patient_code = patient.locator("#waiting-code").inner_text()
    assert re.fullmatch(r"\d{5}( \d{5}){3}", patient_code), patient_code
    dialog = admit_from_dialog(gp, "Iris Patient")
    assert dialog.locator("[data-binding]").get_attribute("data-binding") == "unbound"
    assert dialog.locator("#admit-code").inner_text() == patient_code
    admit = dialog.get_by_role("button", name="Admit")
    assert admit.is_disabled()
    dialog.get_by_label("I compared this code with the patient").check()
    admit.click()
    gp.locator("#members li", has_text="Iris Patient").wait_for()
    patient_user = User.objects.get(username="pat_browser")
    assert m.Member.objects.filter(case_id=case_id, user=patient_user).exists()

    patient.goto("/")
    patient.get_by_role("link", name=f"Case {str(case_id)[:8]}").click()
    patient.locator("#conn-state", has_text="Connected").wait_for()
    assert patient.locator("#add-section").is_hidden()  # no directory for patients
    patient.get_by_label("Message", exact=True).fill("Thank you, the rash is on my back too.")
    patient.keyboard.press("Enter")
    gp.locator("li.message .text", has_text="the rash is on my back too").wait_for()
    derm.locator("li.message .text", has_text="the rash is on my back too").wait_for()
    gp.get_by_label("Message", exact=True).fill("Thank you. We will call you today.")
    gp.keyboard.press("Enter")
    patient.locator("li.message", has_text="We will call you today").locator(
        ".sender", has_text="Dr Fay Gold"
    ).wait_for()
    # The patient sees who accessed their case.
    patient.get_by_text("Who accessed this case, and when").click()
    patient.locator("#access-log li", has_text="Dr Fay Gold").first.wait_for()

    # The patient leaves: a signed leave request that a remaining member's device commits.
    patient.get_by_role("button", name="Leave this case").click()
    patient.get_by_role("button", name="Confirm: leave this case").click()
    patient.locator("#room-error", has_text="no longer in this case").wait_for()
    gp.locator("#members li", has_text="Iris Patient").wait_for(state="detached")
    assert not m.Member.objects.filter(case_id=case_id, user=patient_user).exists()
    gp.screenshot(path=str(ARTIFACTS / "browser-room-consult.png"), full_page=True)

    # The requester's notifications: kinds and case ids only.
    gp.goto("/")
    notices = gp.locator("#notice-list")
    notices.get_by_text("A specialist claimed your consult").wait_for()
    notices.get_by_text("A patient accepted your invitation").wait_for()
    gp.get_by_role("button", name="Mark all as read").click()
    gp.locator("#notices").wait_for(state="hidden")
    gp.screenshot(path=str(ARTIFACTS / "browser-cases.png"), full_page=True)
    problems.assert_none()
