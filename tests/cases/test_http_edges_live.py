"""HTTP edges against a real daphne: a database that cannot be reached, a chunked body
without Content-Length, and client addresses behind a proxy."""

from __future__ import annotations

import asyncio
import http.client
import json
import secrets
import string
import subprocess
import sys
import urllib.parse
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import websockets

from collab.audit.models import AuditAction, AuditEvent
from collab.crypto.attachment import CT_CHUNK_SIZE
from collab.crypto.wire import b64e
from tests.cases.test_blobs import encrypt
from tests.support.actor import Actor, proving_session
from tests.support.live import PIDS, ROOT, Daphne, free_port, server_env
from tests.support.users import PASSWORD, make_user
from tests.support.ws import RoomSocket, prove_frame, room_path

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

CSRF = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(32))


class ProxiedDaphne(Daphne):
    """Daphne started with ``--proxy-headers`` (README says not to): at a count of 1 the
    application's own resolution still ignores the client-written entries."""

    def spawn(self) -> None:
        log = (ROOT / "test-artifacts").joinpath(f"daphne-{self.port}.log")
        log.parent.mkdir(exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daphne", "--proxy-headers", "-b", "127.0.0.1",
             "-p", str(self.port), "collab.asgi:application"],
            cwd=ROOT, env=server_env(**self.extra_env),
            stdout=log.open("ab"), stderr=subprocess.STDOUT,
        )
        PIDS[self.url] = self.proc.pid


def _request(port: int, method: str, path: str, body: bytes | Iterable[bytes] | None = None,
             headers: dict[str, str] | None = None, chunked: bool = False):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def _sign_in(port: int, username: str, password: str, forwarded: str) -> Any:
    form = urllib.parse.urlencode(
        {"username": username, "password": password, "csrfmiddlewaretoken": CSRF}
    ).encode()
    status, _, _ = _request(port, "POST", "/accounts/login/", form, {
        "Content-Type": "application/x-www-form-urlencoded",
        "Cookie": f"csrftoken={CSRF}",
        "X-Forwarded-For": forwarded,
    })
    return status


def test_api_answers_json_503_while_the_database_cannot_be_reached() -> None:
    # A real failure: every connection attempt of this process is refused.
    dead = f"postgres://postgres@127.0.0.1:{free_port()}/collab"
    server = Daphne({"DATABASE_URL": dead}).start()
    try:
        status, headers, body = _request(
            server.port, "GET", "/api/cases", headers={"Cookie": "sessionid=" + "a" * 32}
        )
        assert status == 503, body[:300]
        assert headers["Content-Type"] == "application/json"
        assert json.loads(body)["error"] == "unavailable"
        assert headers["Retry-After"] == "5"
        # A page keeps an HTML answer; it is still a failure, not a sign-in form.
        page, page_headers, _ = _request(
            server.port, "GET", "/", headers={"Cookie": "sessionid=" + "a" * 32}
        )
        assert page >= 500 and page_headers["Content-Type"].startswith("text/html")
    finally:
        server.stop()


def test_a_chunked_body_without_length_is_refused_by_what_arrived() -> None:
    server = Daphne().start()
    try:
        blocks = (b"x" * 65536 for _ in range(40))  # 2.5 MiB, no Content-Length
        status, headers, body = _request(
            server.port, "POST", "/api/cases", blocks,
            {"Content-Type": "application/json"}, chunked=True,
        )
        assert status == 413, body[:300]
        assert headers["Content-Type"] == "application/json"
        assert json.loads(body)["error"] == "body_too_large"
    finally:
        server.stop()


@pytest.mark.parametrize("server_class", [Daphne, ProxiedDaphne], ids=["plain", "proxy-headers"])
def test_behind_one_proxy_failures_from_one_client_do_not_lock_out_another(server_class):
    make_user("bob")
    server = server_class({"COLLAB_PROXY_COUNT": "1"}).start()
    try:
        for i in range(5):
            # The proxy appends the address it saw; this client also forges one in front.
            assert _sign_in(server.port, f"nobody{i}", "wrong", f"10.7.7.{i}, 10.1.1.1") in (
                401, 429
            )
        assert _sign_in(server.port, "bob", PASSWORD, "10.1.1.1") == 429
        assert _sign_in(server.port, "bob", PASSWORD, "10.2.2.2") == 302
    finally:
        server.stop()
    failed = AuditEvent.objects.filter(action=AuditAction.SIGN_IN_FAILED)
    assert set(failed.values_list("client_address", flat=True)) == {"10.1.1.1"}
    signed_in = AuditEvent.objects.filter(action=AuditAction.SIGN_IN)
    assert set(signed_in.values_list("client_address", flat=True)) <= {"10.2.2.2"}


def test_behind_one_proxy_a_socket_is_audited_with_the_client_address() -> None:
    server = Daphne({"COLLAB_PROXY_COUNT": "1"}).start()
    try:
        pcp = Actor("pcp").register().go_live(server.url)
        state = pcp.open_case()

        async def scenario() -> dict[str, object]:
            url = server.url.replace("http://", "ws://") + room_path(
                state.case_id, pcp.device.device_id
            )
            ws = await websockets.connect(url, open_timeout=20, additional_headers={
                "Origin": server.url,
                "Cookie": f"sessionid={pcp.session_id}",
                "X-Forwarded-For": "10.7.7.7, 10.5.5.5",  # forged, then the proxy's entry
            })
            sock = RoomSocket(ws)
            challenge = await sock.next("challenge")
            await sock.send(prove_frame(challenge, state.case_id, pcp.device.device_id))
            await sock.next("hello")
            ack = await sock.send_envelope(state.seal({"text": "seen from where?"}))
            await sock.close()
            return ack

        ack = asyncio.run(scenario())
        assert ack["type"] == "ack", ack
    finally:
        server.stop()
    stored = AuditEvent.objects.get(action=AuditAction.MESSAGE_STORED)
    assert stored.client_address == "10.5.5.5"


def test_ranges_fetched_in_parallel_record_one_download_per_device() -> None:
    servers = [Daphne().start(), Daphne().start()]
    try:
        pcp = Actor("pcp").register().go_live(servers[0].url)
        derm = Actor("derm", specialty="Dermatology").register().go_live(servers[0].url)
        state = pcp.open_case()
        pcp.add(state, derm)
        enc, chunks = encrypt(bytes(8 * 65536))
        size = sum(len(c) for c in chunks)
        blob_id = pcp.call("POST", f"/api/cases/{state.case_id}/blobs", {"size": size}).json()[
            "blob_id"
        ]
        pcp.web.put_bytes(f"/api/blobs/{blob_id}/parts/0", b"".join(chunks))
        root = enc.manifest(uuid.UUID(blob_id), mime="x").root
        done = pcp.call("POST", f"/api/blobs/{blob_id}/complete", {"root": b64e(root)})
        assert done.status_code == 200
        # The same device through both processes at once (each runs its views in turn).
        second = proving_session(servers[1].url, derm.device, derm.signer)
        second.use_session(derm.session_id)
        webs = [derm.web, second]

        def fetch(i: int) -> int:
            start = i * CT_CHUNK_SIZE
            header = {"Range": f"bytes={start}-{start + CT_CHUNK_SIZE - 1}"}
            return sum(len(b) for b in webs[i % 2].stream(f"/api/blobs/{blob_id}", header))

        with ThreadPoolExecutor(max_workers=8) as pool:
            # Every range but the first: no request starts at byte 0.
            got = list(pool.map(fetch, range(1, 8)))
        assert got == [CT_CHUNK_SIZE] * 6 + [size - 7 * CT_CHUNK_SIZE]
    finally:
        for server in servers:
            server.stop()
    events = AuditEvent.objects.filter(
        action=AuditAction.ATTACHMENT_DOWNLOADED, target=f"blob:{blob_id}"
    )
    assert list(events.values_list("device_id", flat=True)) == [derm.device.device_id]
