"""Receipts per recipient and the live case list, in real headless Chromium.

The sender (the browser) sees, per own message, who it was delivered to and who read it,
live and again after a reload (the stored marks); the case list moves without a reload
when another member writes or the status changes. The other member is the Python test
client over a real socket to the same daphne process.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from collab.accounts.models import User
from collab.cases.models import DeliveredMark, Member, Message, ReadMark, UrgentAck
from collab.crypto.roster import Role
from tests.browser.conftest import ARTIFACTS, PageProblems
from tests.browser.test_case_room_browser import named, run_async, set_up_first_device, sign_in
from tests.support.actor import Actor
from tests.support.ws import RoomSocket

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def gold(server: str, username: str) -> Actor:
    bot = Actor(username, specialty="Dermatology").register().go_live(server)
    User.objects.filter(pk=bot.user.pk).update(display_name="Dr Gold")
    return bot


def frames(server: str, bot: Actor, case_id: Any, *sent: dict[str, Any],
           wait_seq: int = 0) -> None:
    """Over a socket of the bot's: wait until message ``wait_seq`` is there (resume), send
    ``sent`` in order, and check that each receipt frame came back relayed."""

    async def run() -> None:
        sock = await RoomSocket.open(server, bot.session_id, case_id, bot.device.device_id)
        hello = await sock.next("hello")
        assert hello["last_seq"] >= wait_seq, hello
        for frame in sent:
            await sock.send(frame)
            relayed = await sock.next(frame["type"], "error")
            assert relayed == {**relayed, "type": frame["type"], "user": str(bot.user.pk),
                               "up_to": frame["up_to"]}, relayed
        await sock.close()

    run_async(run).result(timeout=60)


def test_sender_sees_delivered_and_read_per_recipient_live_and_after_a_reload(
    server: str, new_page: Callable[[str], Any], problems: PageProblems
) -> None:
    gp_user = named("gp_receipts", "Dr Cora Lind", "General practice")
    page = new_page("gp")
    sign_in(page, gp_user)
    set_up_first_device(page)
    bot = gold(server, "gold_receipts")
    state = bot.open_case(specialty="General practice")
    assert bot.add(state, SimpleNamespace(user=gp_user)).status_code == 201  # type: ignore[arg-type]

    page.goto(f"/cases/{state.case_id}/")
    page.locator("#conn-state", has_text="Connected").wait_for()
    page.get_by_label("Message", exact=True).fill("First question")
    page.get_by_role("button", name="Send", exact=True).click()
    first = page.locator("li.message.own", has_text="First question").locator(".receipt")
    first.filter(has_text="Not yet delivered to Dr Gold").wait_for()

    # Delivered, then read: each moves the sender's line live.
    frames(server, bot, state.case_id, {"type": "delivered", "up_to": 1}, wait_seq=1)
    first.filter(has_text=re.compile(r"^Delivered to Dr Gold$")).wait_for()
    frames(server, bot, state.case_id, {"type": "read", "up_to": 1})
    first.filter(has_text=re.compile(r"^Read by Dr Gold$")).wait_for()

    page.get_by_label("Message", exact=True).fill("Second question")
    page.get_by_role("button", name="Send", exact=True).click()
    second = page.locator("li.message.own", has_text="Second question").locator(".receipt")
    second.filter(has_text="Not yet delivered to Dr Gold").wait_for()
    frames(server, bot, state.case_id, {"type": "delivered", "up_to": 2}, wait_seq=2)
    second.filter(has_text=re.compile(r"^Delivered to Dr Gold$")).wait_for()

    # The other way: the browser reports what it received (debounced) to the sender.
    async def from_gold() -> dict[str, Any]:
        sock = await RoomSocket.open(server, bot.session_id, state.case_id, bot.device.device_id)
        await sock.next("hello")
        ack = await sock.send_envelope(state.seal({"text": "Answer from Dr Gold"}))
        assert ack["type"] == "ack", ack
        while (frame := await sock.next("delivered", timeout=60))["user"] != str(gp_user.pk):
            pass
        await sock.close()
        return {**frame, "seq": ack["seq"]}

    report = run_async(from_gold).result(timeout=90)
    assert report["up_to"] == report["seq"] == 3
    page.locator("li.message .text", has_text="Answer from Dr Gold").wait_for()

    # After a reload the stored marks come back (nothing live was kept in the page).
    page.reload()
    page.locator("#conn-state", has_text="Connected").wait_for()
    first.filter(has_text=re.compile(r"^Read by Dr Gold$")).wait_for()
    second.filter(has_text=re.compile(r"^Delivered to Dr Gold$")).wait_for()
    page.screenshot(path=str(ARTIFACTS / "browser-receipts.png"), full_page=True)
    problems.assert_none()


def test_the_case_list_moves_live_on_a_new_message_and_a_status_change(
    server: str, new_page: Callable[[str], Any], problems: PageProblems
) -> None:
    gp_user = named("gp_inbox", "Dr Ida Moss", "General practice")
    page = new_page("gp")
    sign_in(page, gp_user)
    set_up_first_device(page)
    bot = gold(server, "gold_inbox")
    state = bot.open_case(specialty="General practice")
    assert bot.add(state, SimpleNamespace(user=gp_user)).status_code == 201  # type: ignore[arg-type]

    page.goto("/")
    row = page.locator(f"tr[data-case='{state.case_id}']")
    row.locator("td.msgs", has_text=re.compile(r"^0$")).wait_for()

    async def write() -> None:
        sock = await RoomSocket.open(server, bot.session_id, state.case_id, bot.device.device_id)
        await sock.next("hello")
        for text in ("Are you there?", "Results attached soon."):
            ack = await sock.send_envelope(state.seal({"text": text}))
            assert ack["type"] == "ack", ack
        await sock.close()

    run_async(write).result(timeout=60)
    # No reload: the inbox socket moved the row.
    row.locator("td.msgs", has_text="2 unread").wait_for()
    assert row.locator("td.msgs").inner_text().startswith("2")

    response = bot.call("POST", f"/api/cases/{state.case_id}/status", {"status": "closed"})
    assert response.status_code == 200, response.json()
    row.locator("td", has_text=re.compile(r"^Closed")).wait_for()  # (a retention line may follow)
    page.locator("#notice-list", has_text="A consult changed status").wait_for()
    page.screenshot(path=str(ARTIFACTS / "browser-live-case-list.png"), full_page=True)
    problems.assert_none()


def test_a_lying_server_cannot_show_an_outsider_as_having_read_or_acknowledged(
    server: str, new_page: Callable[[str], Any], problems: PageProblems
) -> None:
    """The server (its database written directly) lists a user who is not in the verified
    roster as a member who received, read and acknowledged an urgent message: the page
    never names them, while the real member's acknowledgement still shows, and both lines
    say they are the server's report."""
    gp_user = named("gp_lying", "Dr Nia Hart", "General practice")
    mallory = named("mallory_lying", "Dr Mallory", "General practice")
    page = new_page("gp")
    sign_in(page, gp_user)
    set_up_first_device(page)
    bot = gold(server, "gold_lying")
    state = bot.open_case(specialty="General practice")
    assert bot.add(state, SimpleNamespace(user=gp_user)).status_code == 201  # type: ignore[arg-type]

    page.goto(f"/cases/{state.case_id}/")
    page.locator("#conn-state", has_text="Connected").wait_for()
    page.get_by_label("Message", exact=True).fill("Please call back")
    page.get_by_role("button", name="Send", exact=True).click()
    own = page.locator("li.message.own", has_text="Please call back")
    own.locator(".receipt", has_text="Not yet delivered to Dr Gold").wait_for()

    Message.objects.filter(case_id=state.case_id, seq=1).update(urgent=True)
    message = Message.objects.get(case_id=state.case_id, seq=1)
    Member.objects.create(case_id=state.case_id, user=mallory, role=Role.MEMBER)
    for mark in (ReadMark, DeliveredMark):
        mark.objects.create(case_id=state.case_id, user=mallory, up_to=1)
    UrgentAck.objects.create(message=message, user=mallory)
    UrgentAck.objects.create(message=message, user=bot.user)

    page.reload()
    page.locator("#conn-state", has_text="Connected").wait_for()
    receipt = own.locator(".receipt")
    receipt.filter(has_text=re.compile(r"^Acknowledged by Dr Gold$")).wait_for()
    acks = own.locator(".acks")
    acks.filter(has_text=re.compile(r"^Acknowledged by Dr Gold \(")).wait_for()
    for line in (receipt, acks):
        assert "reported by the server" in (line.get_attribute("title") or "")
    assert "Mallory" not in page.locator("body").inner_text()
    page.screenshot(path=str(ARTIFACTS / "browser-receipts-lying-server.png"), full_page=True)
    problems.assert_none()
