"""Writes the SDK makes by itself (key backup, pin sync, revoked-device removals,
enrolment) carry ``X-Collab-Background: 1`` so they do not postpone automatic logoff;
a person's own writes (adding a member, sending) do not carry it."""

from __future__ import annotations

import http.server
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from collab.client.http import BACKGROUND_HEADER, HttpSession, Response
from collab.client.keys import DeviceKeys
from collab.client.keystore import KeystoreState
from collab.client.sdk import CollabClient
from tests.client.fake_server import FakeServer, Person


class Recorder:
    """Stands in for the client's HttpSession: answers from the fake server and notes
    every write with the ``background`` flag the SDK gave it."""

    def __init__(self, server: FakeServer, who: uuid.UUID) -> None:
        self.server, self.who = server, who
        self.writes: list[tuple[str, str, bool]] = []

    def json(self, method: str, path: str, body: dict[str, Any] | None = None, *,
             background: bool = False) -> Response:
        answer = self.server.call(method, path, body, self.who)
        if method != "GET":
            self.writes.append((method, path.split("?")[0], background))
        return Response(200, answer)


def recorded(server: FakeServer, person: Person,
             device: DeviceKeys | None = None) -> tuple[CollabClient, Recorder]:
    device = device or person.device
    state = KeystoreState(server="http://fake", user_id=person.id, identity=person.identity,
                          device=device, cert=person.identity.certify(device)
                          if device is not person.device else person.cert)
    client = CollabClient(state=state)
    recorder = Recorder(server, person.id)
    client.http = recorder  # type: ignore[assignment]
    return client, recorder


def test_automatic_writes_are_marked_background_and_a_persons_are_not() -> None:
    server, pcp, derm = FakeServer(), Person("pcp"), Person("derm")
    server.keys[derm.id] = derm.keys()
    case_id = server.new_case(pcp)
    client, rec = recorded(server, pcp)
    client.add_member(case_id, derm.id)  # a person's action
    log = f"/api/cases/{case_id}/log"
    assert (("POST", log, False)) in rec.writes
    assert ("PUT", "/api/key-backup", True) in rec.writes  # the backup that follows
    assert ("PUT", "/api/identity/pins", True) in rec.writes  # derm's key pinned, synced
    assert not any(bg for m, p, bg in rec.writes if p == log)

    # A second device of pcp enrols itself: automatic.
    second, rec2 = recorded(server, pcp, DeviceKeys.generate(pcp.id))
    assert second.enrol(case_id) == "enrolled"
    assert [w for w in rec2.writes if w[1] == log] == [("POST", log, True)]

    # The first device is revoked; the second removes it from the roster by itself.
    server.revoked[case_id] = [str(pcp.device.device_id)]
    rec2.writes.clear()
    assert second.clear_revoked(case_id) == [pcp.device.device_id]
    assert [w for w in rec2.writes if w[1] == log] == [("POST", log, True)]
    assert all(bg for _m, _p, bg in rec2.writes)


class _Capture(http.server.BaseHTTPRequestHandler):
    seen: list[tuple[str, str | None]] = []

    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.seen.append((self.path, self.headers.get(BACKGROUND_HEADER)))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def capture() -> Iterator[str]:
    _Capture.seen = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Capture)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_the_http_session_sends_the_header_only_for_background_writes(capture: str) -> None:
    session = HttpSession(capture)
    session.json("PUT", "/api/key-backup", {"items": []}, background=True)
    session.json("PUT", "/api/identity/backup", {"blob": ""})
    assert _Capture.seen == [("/api/key-backup", "1"), ("/api/identity/backup", None)]
