"""CLI error lines and exit codes (in process, against a stub server where needed)."""

from __future__ import annotations

import io
import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from collab.client import cli
from collab.client.errors import IdentityChange, IdentityChangedError, UnreachableError
from collab.client.keys import DeviceKeys, Identity
from collab.client.keystore import Keystore
from collab.client.sdk import CollabClient
from collab.crypto.errors import CryptoError
from collab.crypto.invite import short_code
from tests.support.live import free_port

PASS = "correct horse battery staple"


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def one_error_line(err: str, code_name: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("collab-client: ") and f"({code_name})" in lines[0], lines[0]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("COLLAB_HOME", str(tmp_path))
    monkeypatch.setenv("COLLAB_PASSPHRASE", PASS)
    monkeypatch.delenv("COLLAB_SERVER", raising=False)
    return tmp_path


def make_keystore(home: Path, server: str) -> None:
    store = Keystore.create(home / "keystore.json", PASS)
    user_id = uuid.uuid4()
    identity = Identity.generate(user_id)
    device = DeviceKeys.generate(user_id)
    st = store.state
    st.server, st.username, st.user_id, st.session = server, "pcp", user_id, "sess"
    st.identity, st.device, st.cert = identity, device, identity.certify(device)
    store.save()


class _Stub(BaseHTTPRequestHandler):
    status = 403
    body: dict[str, str] = {"error": "not_member", "detail": "You are not a member of this case."}

    def _answer(self) -> None:
        data = json.dumps(self.body).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = _answer  # noqa: N815 - http.server's handler names

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stub() -> Iterator[tuple[str, type[_Stub]]]:
    handler = type("Handler", (_Stub,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_usage_errors_exit_1_with_one_line(home: Path) -> None:
    code, _, err = run()
    assert code == 1
    one_error_line(err, "usage")
    code, _, err = run("send", "not-a-uuid", "hi")
    assert code == 1 and "not a UUID" in err
    one_error_line(err, "usage")
    code, _, err = run("frobnicate")
    assert code == 1
    one_error_line(err, "usage")


def test_missing_keystore_exits_1(home: Path) -> None:
    code, _, err = run("--server", "http://127.0.0.1:9", "cases")
    assert code == 1
    one_error_line(err, "no_keystore")


def test_wrong_passphrase_exits_2(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_keystore(home, "http://127.0.0.1:9")
    monkeypatch.setenv("COLLAB_PASSPHRASE", "not the passphrase")
    code, _, err = run("cases")
    assert code == 2
    one_error_line(err, "wrong_passphrase")


def test_exposed_keystore_exits_1(home: Path) -> None:
    make_keystore(home, "http://127.0.0.1:9")
    (home / "keystore.json").chmod(0o640)
    code, _, err = run("cases")
    assert code == 1
    one_error_line(err, "keystore_permissions")


def test_unreachable_server_exits_5(home: Path) -> None:
    make_keystore(home, f"http://127.0.0.1:{free_port()}")
    code, _, err = run("cases")
    assert code == 5
    one_error_line(err, "unreachable")


def test_server_refusal_exits_3(home: Path, stub: tuple[str, type[_Stub]]) -> None:
    url, _ = stub
    make_keystore(home, url)
    code, _, err = run("history", str(uuid.uuid4()))
    assert code == 3
    one_error_line(err, "not_member")
    assert "You are not a member of this case." in err


def test_expired_session_exits_2(home: Path, stub: tuple[str, type[_Stub]]) -> None:
    url, handler = stub
    handler.status, handler.body = 401, {"error": "session_expired"}
    make_keystore(home, url)
    code, _, err = run("cases")
    assert code == 2
    one_error_line(err, "session_expired")


def test_wrong_password_at_login_exits_2(home: Path, stub: tuple[str, type[_Stub]],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    url, handler = stub
    handler.status, handler.body = 401, {"error": "http_401"}
    monkeypatch.setenv("COLLAB_PASSWORD", "wrong")
    code, _, err = run("--server", url, "login", "--username", "pcp", "--code", "123456")
    assert code == 2
    one_error_line(err, "bad_credentials")
    assert (home / "keystore.json").exists()


def test_verification_failure_exits_4(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_keystore(home, "http://127.0.0.1:9")

    def forged(self: CollabClient, *args: object, **kwargs: object) -> None:
        raise CryptoError("bad_signature", "entry 3 is not signed by its author")

    monkeypatch.setattr(CollabClient, "history", forged)
    monkeypatch.setattr(CollabClient, "timeline", forged)  # what `history` prints from
    code, _, err = run("history", str(uuid.uuid4()))
    assert code == 4
    one_error_line(err, "bad_signature")
    assert "verification failed" in err


def test_send_image_refuses_a_non_image_before_any_upload(home: Path, tmp_path: Path) -> None:
    make_keystore(home, f"http://127.0.0.1:{free_port()}")
    fake = tmp_path / "scan.jpg"
    fake.write_bytes(b"MZ\x90\x00 this is an executable, not a photo" * 20)
    code, _, err = run("send-image", str(uuid.uuid4()), str(fake))
    assert code == 1
    one_error_line(err, "not_an_image")
    code, _, err = run("send-image", str(uuid.uuid4()), str(tmp_path / "missing.jpg"))
    assert code == 1
    one_error_line(err, "no_file")


def test_identity_change_names_who_both_numbers_and_cases_and_exits_4(
        home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_keystore(home, "http://127.0.0.1:9")
    who, case = uuid.uuid4(), uuid.uuid4()
    old, new = [f"{i:05d}" for i in range(12)], [f"{i + 50:05d}" for i in range(12)]

    def changed(self: CollabClient, *args: object, **kwargs: object) -> None:
        assert kwargs.get("accept_changed") is None
        raise IdentityChangedError([IdentityChange(who, b"\x01" * 32, b"\x02" * 32,
                                                   tuple(old), tuple(new), (case,), True)])

    monkeypatch.setattr(CollabClient, "add_member", changed)
    monkeypatch.setattr(cli._Names, "__call__", lambda self, user: "Dr Derm")
    code, out, err = run("add", str(case), str(who))
    assert code == 4 and out == ""
    assert err.startswith("collab-client: error (identity_changed): Dr Derm's identity key "
                          "changed (it was verified)\n")
    assert " ".join(old[:6]) in err and " ".join(new[6:]) in err and str(case) in err
    assert "accept-identity USER CODE" in err
    assert "new key code: " + " ".join(short_code(who, b"\x02" * 32)) in err


def test_join_requests_are_reviewed_not_bulk_committed(home: Path) -> None:
    make_keystore(home, "http://127.0.0.1:9")
    code, _, err = run("joins", str(uuid.uuid4()))
    assert code == 1
    one_error_line(err, "usage")
    code, _, err = run("admit", str(uuid.uuid4()))
    assert code == 1
    one_error_line(err, "usage")


def test_a_send_that_failed_in_passing_says_the_message_waits(
        home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_keystore(home, "http://127.0.0.1:9")
    case = uuid.uuid4()

    retries: list[object] = []

    async def lost(self: CollabClient, case_id: uuid.UUID, text: str, **kwargs: object) -> None:
        retries.append(kwargs.get("retry"))
        error = UnreachableError("cannot reach http://127.0.0.1:9: connection refused")
        error.pending_id = "bXNnLWlk"
        raise error

    monkeypatch.setattr(CollabClient, "send_text", lost)
    code, out, err = run("send", str(case), "biopsy booked")
    assert code == 5 and out == ""
    one_error_line(err, "unreachable")
    assert "waits in the outbox as bXNnLWlk: run the same command with --retry bXNnLWlk" in err
    # The retry the message names reaches the SDK as that id; a plain send, none.
    run("send", str(case), "biopsy booked", "--retry", "bXNnLWlk")
    assert retries == [None, "bXNnLWlk"]
