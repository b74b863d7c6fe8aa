"""The room's socket recovers by itself from the server's new closes and the resync
hello (real Chromium, real daphne; the socket goes through a Playwright route that can
drop frames and close the page's side with any code): a resync hello whose last_seq
is beyond what the page holds makes it resume; closes 4507 (too_slow) and 4503
(unavailable) reconnect with backoff and resume, and their error frames are not shown
as errors. Nothing is lost or shown twice."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from collab.client.case_state import CaseState
from tests.browser.conftest import PageProblems
from tests.browser.test_case_room_browser import named, run_async, set_up_first_device, sign_in
from tests.support.actor import Actor
from tests.support.ws import RoomSocket

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


class Link:
    """The page's side of one socket and the server side behind it."""

    def __init__(self, page_side: Any, server_side: Any) -> None:
        self.page_side = page_side
        self.server_side = server_side

    def close_as_server(self, code: int, error: str) -> None:
        self.page_side.send(json.dumps({"type": "error", "code": error, "message": error}))
        self.page_side.close(code=code, reason=error)
        self.server_side.close()


class Proxy:
    """Forwards every frame, except live `message` frames while `dropping` (what a
    channel-layer outage does to a socket: the messages are stored, never pushed)."""

    def __init__(self) -> None:
        self.links: list[Link] = []
        self.hellos: list[dict[str, Any]] = []
        self.dropped: list[int] = []
        self.dropping = threading.Event()
        self.blocked = threading.Event()

    def route(self, ws: Any) -> None:
        if self.blocked.is_set():
            ws.close(code=1011, reason="network down")
            return
        server_side = ws.connect_to_server()

        def from_server(message: str | bytes) -> None:
            frame = json.loads(message) if isinstance(message, str) else {}
            if frame.get("type") == "hello":
                self.hellos.append(frame)
            if frame.get("type") == "message" and self.dropping.is_set():
                self.dropped.append(int(frame["seq"]))
                return
            ws.send(message)

        server_side.on_message(from_server)
        ws.on_message(lambda message: server_side.send(message))
        self.links.append(Link(ws, server_side))


def wait_until(page: Any, done: Callable[[], bool], what: str) -> None:
    """Let Playwright dispatch route callbacks until `done()` (bounded)."""
    deadline = time.monotonic() + 30
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        page.wait_for_timeout(50)


def bot_sends(server: str, bot: Actor, state: CaseState, text: str) -> None:
    async def send() -> dict[str, Any]:
        sock = await RoomSocket.open(server, bot.session_id, state.case_id, bot.device.device_id)
        await sock.next("hello")
        ack = await sock.send_envelope(state.seal({"text": text}))
        await sock.close()
        return ack

    ack = run_async(send).result(timeout=60)
    assert ack["type"] == "ack", ack


def test_the_room_resumes_on_a_resync_hello_and_after_closes_4507_and_4503(
    server: str, new_page: Callable[[str], Any], problems: PageProblems
) -> None:
    gp_user = named("gp_resync", "Dr Ria Sands", "General practice")
    page = new_page("resync")
    sign_in(page, gp_user)
    set_up_first_device(page)
    bot = Actor("bot_resync", specialty="Dermatology").register().go_live(server)
    state = bot.open_case(specialty="General practice")
    assert bot.add(state, SimpleNamespace(user=gp_user)).status_code == 201  # type: ignore[arg-type]

    proxy = Proxy()
    page.route_web_socket(re.compile(r"/ws/cases/"), proxy.route)
    page.goto(f"/cases/{state.case_id}/")
    connected = page.locator("#conn-state", has_text="Connected")
    connected.wait_for()
    bot_sends(server, bot, state, "Before anything went wrong")
    page.locator("li.message .text", has_text="Before anything went wrong").wait_for()

    # The channel layer is down: a message is stored but never pushed to this socket.
    proxy.dropping.set()
    bot_sends(server, bot, state, "Stored during the outage")
    wait_until(page, lambda: bool(proxy.dropped), "the dropped message frame")
    proxy.dropping.clear()
    assert page.locator("li.message .text", has_text="during the outage").count() == 0
    # The layer is back: the server's resync hello names a last_seq beyond the page's.
    hello = {**proxy.hellos[-1], "last_seq": proxy.dropped[-1], "resync": True}
    proxy.links[-1].page_side.send(json.dumps(hello))
    page.locator("li.message .text", has_text="Stored during the outage").wait_for()

    for code, error, text in (
        (4507, "too_slow", "Sent while this socket was too slow"),
        (4503, "unavailable", "Sent while the session could not be checked"),
    ):
        links = len(proxy.links)
        proxy.blocked.set()  # the first reconnection attempts fail too
        proxy.links[-1].close_as_server(code, error)
        page.locator("#conn-state", has_text="reconnecting").wait_for()
        bot_sends(server, bot, state, text)
        proxy.blocked.clear()
        page.locator("li.message .text", has_text=text).wait_for(timeout=60_000)
        connected.wait_for()
        assert len(proxy.links) > links, "a new socket was opened"
        assert error not in page.locator("#room-error").inner_text()

    for text in ("Before anything went wrong", "Stored during the outage"):
        assert page.locator("li.message .text", has_text=text).count() == 1, text
    assert page.locator("li.message.invalid, li.gap").count() == 0
    problems.assert_none()
