"""Clients trust people, not the server: the browser against a malicious server.

The test plays the server by writing to its database: join-request rows nobody asked
for, a user's identity key swapped (with their devices re-certified by the new key), a
patient's invitation proof forged. Each property has its honest twin.
"""

from __future__ import annotations

import dataclasses
import re
import time
import uuid
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from collab.accounts.models import Device, IdentityKey, IdentityPins, User
from collab.cases import models as m
from collab.crypto import primitives as prim
from collab.crypto.actions import RotateBody
from collab.crypto.devcert import make_device_cert
from collab.crypto.log import Wrap
from collab.crypto.wire import b64e
from tests.browser.conftest import ARTIFACTS, STORED, PageProblems
from tests.browser.test_case_room_browser import (
    admit_from_dialog,
    named,
    run_async,
    set_up_first_device,
    sign_in,
)
from tests.support.actor import Actor
from tests.support.users import PASSWORD
from tests.support.ws import RoomSocket

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def open_case(page: Any, specialty: str, question: str) -> uuid.UUID:
    page.goto("/")
    page.get_by_label("Requested specialty").fill(specialty)
    page.get_by_label("Clinical question").fill(question)
    page.get_by_role("button", name="Open case").click()
    page.wait_for_url(re.compile(r"/cases/[0-9a-f-]{36}/$"))
    page.locator("#conn-state", has_text="Connected").wait_for()
    return uuid.UUID(page.url.rstrip("/").rsplit("/", 1)[1])


def inject_join_request(case_id: uuid.UUID, user: User) -> m.JoinRequest:
    """A row the server inserts on its own: nobody asked for it."""
    return m.JoinRequest.objects.create(
        case_id=case_id, user=user, kind=m.JoinKind.INVITE, requested_by=user
    )


def swap_identity(user: User) -> bytes:
    """The server replaces the user's identity key and re-certifies their devices with
    it (anyone holding a key can certify any public keys). Returns the fake key."""
    seed = prim.random_bytes(32)
    fake = prim.ed25519_public(seed)
    IdentityKey.objects.filter(user=user).update(uik_pub=fake)
    for d in Device.objects.filter(user=user, revoked_at__isnull=True):
        cert = make_device_cert(
            seed, user.pk, d.pk, bytes(d.dsk_pub), bytes(d.dxk_pub), d.not_before_ms
        )
        Device.objects.filter(pk=d.pk).update(cert_sig=cert.cert_sig)
    return fake


def safety_digits(page: Any, name: str) -> list[str]:
    page.locator("#members li", has_text=name).get_by_role("button", name="Safety number").click()
    page.locator("#safety .group").first.wait_for()
    digits: list[str] = page.locator("#safety").inner_text().split()
    assert len(digits) == 12 and all(re.fullmatch(r"\d{5}", g) for g in digits), digits
    assert page.locator("#safety-qr").get_attribute("data-qr") == "collab-safety:1:" + "".join(
        digits
    )
    return digits


def test_join_requests_wait_for_a_click_and_identity_keys_are_pinned(
    server: str, new_page: Callable[[str], Any], problems: PageProblems
) -> None:
    gp_user = named("gp_trust", "Dr Gil Park", "General practice")
    derm_user = named("derm_trust", "Dr Dee Rowe", "Dermatology")
    gp = new_page("gp")
    derm = new_page("derm")
    sign_in(gp, gp_user)
    set_up_first_device(gp)
    sign_in(derm, derm_user)
    set_up_first_device(derm)
    case_a = open_case(gp, "Dermatology", "Scaly patch on the scalp.")

    # (a) A join request the server inserted: the manager's open room shows it for review
    # and commits nothing, on hello (reload), typing, clicks or focus.
    inject_join_request(case_a, derm_user)
    gp.reload()
    gp.locator("#conn-state", has_text="Connected").wait_for()
    review = gp.locator("#joins").get_by_role("button", name="Review Dr Dee Rowe")
    review.wait_for()
    gp.get_by_label("Message", exact=True).press_sequentially("typing here", delay=10)
    gp.locator("#room-h").click()
    gp.locator("#members").click()
    gp.get_by_label("Message", exact=True).focus()
    gp.keyboard.press("Tab")
    time.sleep(1.5)
    assert not m.Member.objects.filter(case_id=case_a, user=derm_user).exists()
    assert m.Case.objects.get(pk=case_a).head_epoch == 0
    # Twin: the click in the dialog admits, after showing who, why and the key's state.
    dialog = admit_from_dialog(gp, "Dr Dee Rowe")
    text = dialog.inner_text()
    for shown in ("Dr Dee Rowe", "Dermatology", "Riverside Health", "Invited by name", "NEW"):
        assert shown in text, (shown, text)
    dialog.get_by_role("button", name="Admit").click()
    gp.locator("#members li", has_text="Dr Dee Rowe").wait_for()
    assert m.Case.objects.get(pk=case_a).head_epoch == 1

    # (c, twin) Honest keys: both screens show the same safety number, from each
    # device's own identity key and the other's key in the verified roster.
    derm.goto(f"/cases/{case_a}/")
    derm.locator("#conn-state", has_text="Connected").wait_for()
    derm_digits = safety_digits(derm, "Dr Gil Park")
    assert safety_digits(gp, "Dr Dee Rowe") == derm_digits
    gp.get_by_role("button", name="Mark as verified").click()
    gp.locator("#members li", has_text="Dr Dee Rowe").locator("[data-pin=verified]").wait_for()
    # The decision follows the clinician to their other devices: a sealed, signed copy.
    deadline = time.monotonic() + 15
    while not IdentityPins.objects.filter(user=gp_user, version__gte=2).exists():
        assert time.monotonic() < deadline, "the pins were not synced"
        time.sleep(0.2)
    assert str(derm_user.pk).encode() not in bytes(IdentityPins.objects.get(user=gp_user).blob)

    # (b) The server swaps the dermatologist's identity key: the dialog in another case
    # says CHANGED and Admit stays disabled until the change is accepted explicitly.
    case_b = open_case(gp, "Dermatology", "Second opinion on a mole.")
    swap_identity(derm_user)
    inject_join_request(case_b, derm_user)
    gp.reload()
    dialog = admit_from_dialog(gp, "Dr Dee Rowe")
    assert dialog.locator("[data-pin]").get_attribute("data-pin") == "changed"
    assert "CHANGED" in dialog.inner_text()
    admit = dialog.get_by_role("button", name="Admit")
    assert admit.is_disabled()
    ARTIFACTS.mkdir(exist_ok=True)
    gp.screenshot(path=str(ARTIFACTS / "browser-admit-changed.png"))
    dialog.get_by_role("button", name="Cancel").click()
    time.sleep(0.5)
    assert not m.Member.objects.filter(case_id=case_b, user=derm_user).exists()
    # A fooled clinician accepts the new key anyway: the substituted member is admitted.
    admit_from_dialog(gp, "Dr Dee Rowe")
    dialog.get_by_label("Accept the new identity key for this person").check()
    dialog.get_by_role("button", name="Admit").click()
    gp.locator("#members li", has_text="Dr Dee Rowe").wait_for()

    # (c) The substituted member's safety number differs from the real one.
    assert safety_digits(gp, "Dr Dee Rowe") != derm_digits

    # (e) The dermatologist's browser in that case: the roster lists them under a key
    # that is not theirs, so the room fails closed.
    derm.goto(f"/cases/{case_b}/")
    fatal = derm.locator("#room-fatal")
    fatal.wait_for()
    assert "identity key that is not yours" in fatal.inner_text()
    assert derm.locator(".room").is_hidden()
    assert derm.locator("#messages li").count() == 0
    # Twin: the honest case still opens.
    derm.goto(f"/cases/{case_a}/")
    derm.locator("#conn-state", has_text="Connected").wait_for()

    # Back in the first case the clinician's pin (now the substituted key) differs from
    # the roster: "identity key changed", and sending is blocked until a decision.
    gp.goto(f"/cases/{case_a}/")
    banner = gp.locator("#trust-banner")
    banner.wait_for()
    gp.locator("#conn-state", has_text="Connected").wait_for()
    assert "Dr Dee Rowe's identity key changed" in banner.inner_text()
    assert banner.locator(".safety").count() == 2  # old and new safety numbers
    seq = m.Case.objects.get(pk=case_a).last_seq
    gp.get_by_label("Message", exact=True).fill("Should not go out")
    gp.get_by_role("button", name="Send", exact=True).click()
    gp.locator("#send-blocked", has_text="Sending is blocked").wait_for()
    gp.locator("#room-error", has_text="Not sent").wait_for()
    assert m.Case.objects.get(pk=case_a).last_seq == seq
    ARTIFACTS.mkdir(exist_ok=True)
    gp.screenshot(path=str(ARTIFACTS / "browser-identity-changed.png"), full_page=True)
    banner.get_by_role("button", name="Accept the new key").click()
    banner.wait_for(state="hidden")
    gp.get_by_label("Message", exact=True).fill("Sent after accepting")
    gp.get_by_role("button", name="Send", exact=True).click()
    gp.locator("li.message.own", has_text="Sent after accepting").locator(
        ".receipt", has_text=STORED
    ).wait_for()
    assert m.Case.objects.get(pk=case_a).last_seq == seq + 1
    problems.assert_none()


def sign_up_patient(page: Any, link: str, username: str, name: str) -> str:
    """Through the invitation page; returns the short code the waiting view shows."""
    page.goto(link)
    assert page.locator('script[src$="/collab/app/invite-page.js"]').count() == 1
    page.get_by_label("Username").fill(username)
    page.get_by_label("Your name (shown to your care team)").fill(name)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD)
    page.get_by_role("button", name="Create my account").click()
    page.get_by_role("link", name="Continue without it").click()
    set_up_first_device(page)
    page.locator("#waiting-code").wait_for()
    code: str = page.locator("#waiting-code").inner_text()
    return code


def new_link(gp: Any) -> str:
    gp.get_by_role("button", name=re.compile("Create (an invitation link|another link)")).click()
    field = gp.get_by_label("Invitation link")
    previous = field.input_value()
    deadline = time.monotonic() + 10
    while field.input_value() == previous and time.monotonic() < deadline:
        time.sleep(0.05)
    link: str = field.input_value()
    assert re.search(r"#k=[A-Za-z0-9_-]{43}$", link), link
    return link


def test_patient_link_binding_is_shown_and_a_missing_or_bad_proof_needs_the_code(
    server: str, new_page: Callable[[str], Any], problems: PageProblems
) -> None:
    gp_user = named("gp_link", "Dr Lia Berg", "General practice")
    gp = new_page("gp")
    sign_in(gp, gp_user)
    set_up_first_device(gp)
    case_id = open_case(gp, "General practice", "Follow-up of blood pressure.")

    # Twin: the patient opened the full link; their browser kept the fragment's secret and
    # proved the link once it had an identity key: "bound", Admit needs no code.
    first = new_page("patient1")
    sign_up_patient(first, new_link(gp), "pat_bound", "Pia Bound")
    assert first.evaluate("location.hash") == ""  # the secret left the address bar
    dialog = admit_from_dialog(gp, "Pia Bound")
    assert dialog.locator("[data-binding]").get_attribute("data-binding") == "bound"
    # Who made the link (the invitation's created_by, signed by that member's device).
    dialog.locator(".admit-inviter", has_text="Invitation link created by: Dr Lia Berg").wait_for()
    dialog.get_by_role("button", name="Admit").click()
    gp.locator("#members li", has_text="Pia Bound").wait_for()

    # A tampered fragment: the proof the browser made does not verify and the server
    # refuses it, so nothing binds this account...
    second = new_page("patient2")
    link = new_link(gp)
    tampered = link[:-2] + ("AA" if not link.endswith("AA") else "BB")
    code = sign_up_patient(second, tampered, "pat_tampered", "Quinn Tampered")
    patient = User.objects.get(username="pat_tampered")
    invitation = m.Invitation.objects.get(used_by=patient)
    assert invitation.proof_sig is None
    # ...and a server that stores a forged proof anyway gets "does not match".
    m.Invitation.objects.filter(pk=invitation.pk).update(proof_sig=prim.random_bytes(64))
    gp.reload()
    dialog = admit_from_dialog(gp, "Quinn Tampered")
    assert dialog.locator("[data-binding]").get_attribute("data-binding") == "bad_proof"
    assert "does not match" in dialog.inner_text()
    assert dialog.locator("#admit-code").inner_text() == code
    admit = dialog.get_by_role("button", name="Admit")
    assert admit.is_disabled()
    time.sleep(0.5)
    assert not m.Member.objects.filter(case_id=case_id, user=patient).exists()
    dialog.get_by_label("I compared this code with the patient").check()
    admit.click()
    gp.locator("#members li", has_text="Quinn Tampered").wait_for()
    # The refused proof was an expected answer for the tampered link.
    problems.items = [
        p for p in problems.items if not ("patient2" in p and "/proof" in p and "400" in p)
    ]
    problems.assert_none()


def test_a_wrap_this_browser_cannot_open_leaves_the_rest_of_the_case_readable(
    server: str, new_page: Callable[[str], Any], problems: PageProblems
) -> None:
    gp_user = named("gp_wrap", "Dr Wes Ray", "General practice")
    page = new_page("gp")
    sign_in(page, gp_user)
    set_up_first_device(page)
    bot = Actor("bot_wrap", specialty="Dermatology").register().go_live(server)
    state = bot.open_case(specialty="General practice")
    assert bot.add(state, SimpleNamespace(user=gp_user)).status_code == 201  # type: ignore[arg-type]
    browser_device = Device.objects.get(user=gp_user).pk

    async def python_side(texts: list[str]) -> None:
        sock = await RoomSocket.open(server, bot.session_id, state.case_id, bot.device.device_id)
        await sock.next("hello")
        for text in texts:
            ack = await sock.send_envelope(state.seal({"text": text}))
            assert ack["type"] == "ack", ack
        await sock.close()

    run_async(lambda: python_side(["Readable before the rotate"])).result(timeout=60)
    # A validly signed rotate whose wrap for the browser's device is garbage.
    entry = bot.forge(state, RotateBody())
    wraps = tuple(
        Wrap(w.device_id, prim.random_bytes(len(w.ciphertext)))
        if w.device_id == browser_device
        else w
        for w in entry.wraps
    )
    entry = dataclasses.replace(entry, wraps=wraps)
    entry = dataclasses.replace(
        entry, signature=prim.sign(bot.device.dsk_seed, entry.signed_bytes())
    )
    response = bot.call("POST", f"/api/cases/{state.case_id}/log", {"entry": b64e(entry.encode())})
    assert response.status_code == 201, response.content
    state.accept_entries([entry])
    run_async(lambda: python_side(["Sent in the epoch the browser lost"])).result(timeout=60)

    page.goto(f"/cases/{state.case_id}/")
    page.locator("#conn-state", has_text="Connected").wait_for()
    page.locator("li.message .text", has_text="Readable before the rotate").wait_for()
    lost = page.locator("li.message.unavailable")
    lost.wait_for()
    assert "not available on this device" in lost.inner_text()
    assert "Bot_Wrap" in lost.inner_text()
    assert page.locator("li.message.invalid").count() == 0  # the chain stays verified
    assert "Sent in the epoch" not in page.locator("#messages").inner_text()
    # Sending with the head key unavailable: a fresh key first (rotate), then the message.
    page.get_by_label("Message", exact=True).fill("After a fresh key")
    page.get_by_role("button", name="Send", exact=True).click()
    page.locator("li.message.own", has_text="After a fresh key").locator(
        ".receipt", has_text=STORED
    ).wait_for()
    case = m.Case.objects.get(pk=state.case_id)
    assert case.head_epoch == 3
    bot.sync(state)
    assert state.head.author_device_id == browser_device
    problems.assert_none()
