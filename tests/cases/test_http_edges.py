"""HTTP at its edges: every /api/ failure is the JSON error body, hostile bodies are
refused before they cost anything, the client address behind a proxy, and replacing
the identity backup needs the password again."""

from __future__ import annotations

import json

import pytest
from django.db import OperationalError
from django.test import Client
from django.urls import reverse

from collab.accounts.models import IdentityBackup
from collab.audit.models import AuditAction, AuditEvent
from collab.audit.services import RequestMeta
from collab.cases.services.blobs import MAX_PART_BYTES
from collab.crypto.wire import b64e
from tests.support.actor import Actor
from tests.support.users import PASSWORD, make_user

pytestmark = pytest.mark.django_db

LOGIN = reverse("accounts:login")


def _error(response) -> tuple[int, str]:
    assert response["Content-Type"] == "application/json", response.content[:200]
    body = response.json()
    assert set(body) >= {"error", "detail"}
    return response.status_code, body["error"]


# --- the JSON error body for every /api/ failure -------------------------------------


def test_unknown_api_path_answers_json_404() -> None:
    pcp = Actor("pcp")
    assert _error(pcp.client.get("/api/no-such-thing")) == (404, "not_found")
    assert _error(Client().get("/api/cases/not-a-uuid")) == (404, "not_found")
    # Pages keep the HTML answer.
    assert Client().get("/no-such-page/")["Content-Type"].startswith("text/html")


@pytest.mark.server_error  # a broken service, on purpose
def test_unexpected_exception_answers_json_500(monkeypatch) -> None:
    pcp = Actor("pcp")
    pcp.client.raise_request_exception = False

    def broken(**_: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr("collab.cases.views.consults.consult_queue", broken)
    response = pcp.client.get("/api/consults/queue")
    assert _error(response) == (500, "internal_error")
    assert b"a bug" not in response.content  # nothing of the failure leaks


def test_database_failure_answers_json_503(monkeypatch) -> None:
    pcp = Actor("pcp")
    pcp.client.raise_request_exception = False

    def unreachable(**_: object) -> None:
        raise OperationalError("connection refused")

    monkeypatch.setattr("collab.cases.views.consults.consult_queue", unreachable)
    response = pcp.client.get("/api/consults/queue")
    assert _error(response) == (503, "unavailable")
    assert response["Retry-After"] == "5"


# --- hostile bodies ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 200_000 + b"]" * 200_000,  # the parser itself would recurse too deep
        b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
        b'{"version": 1, "blob": ' + b"[" * 70 + b"]" * 70 + b"}",  # past 64 levels
    ],
    ids=["arrays", "objects", "past-the-depth-limit"],
)
def test_deeply_nested_json_is_malformed_json(body) -> None:
    pcp = Actor("pcp")
    response = pcp.client.put("/api/identity/pins", data=body, content_type="application/json")
    assert _error(response) == (400, "malformed_json")


def test_json_nested_within_the_limit_is_parsed() -> None:
    pcp = Actor("pcp")
    body = b'{"version": 1, "blob": ' + b"[" * 60 + b"]" * 60 + b"}"
    response = pcp.client.put("/api/identity/pins", data=body, content_type="application/json")
    # Past parsing: refused for what it says, not for its shape.
    assert _error(response)[1] != "malformed_json"


def test_oversized_body_is_413_before_anything_reads_it(settings) -> None:
    pcp = Actor("pcp")
    big = b"{" + b" " * (2 * 1024 * 1024) + b"}"
    response = pcp.client.put("/api/identity/pins", data=big, content_type="application/json")
    assert _error(response) == (413, "body_too_large")
    assert response.json()["max_bytes"] == settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    # Before authentication, too: the body limit is the first thing checked.
    anonymous = Client().post("/api/cases", data=big, content_type="application/json")
    assert _error(anonymous) == (413, "body_too_large")
    page = Client().post(LOGIN, data=big, content_type="application/x-www-form-urlencoded")
    assert page.status_code == 413


def test_blob_parts_have_their_own_bound() -> None:
    pcp = Actor("pcp").register()
    state = pcp.open_case()
    created = pcp.call("POST", f"/api/cases/{state.case_id}/blobs", {"size": 4 * MAX_PART_BYTES})
    blob_id = created.json()["blob_id"]
    over = pcp.send("PUT", f"/api/blobs/{blob_id}/parts/0", b"\0" * (MAX_PART_BYTES + 1))
    assert _error(over) == (413, "body_too_large")
    assert over.json()["max_bytes"] == MAX_PART_BYTES
    # A whole part of 16 chunks is larger than the JSON limit would allow, and passes it.
    ok = pcp.send("PUT", f"/api/blobs/{blob_id}/parts/0", b"\0" * MAX_PART_BYTES)
    assert ok.status_code == 200, ok.content


# --- the client address behind a proxy --------------------------------------------------------


@pytest.fixture
def one_proxy(settings):
    """As COLLAB_PROXY_COUNT=1 sets it (collab/settings.py)."""
    settings.AXES_IPWARE_META_PRECEDENCE_ORDER = ("HTTP_X_FORWARDED_FOR", "REMOTE_ADDR")
    settings.AXES_IPWARE_PROXY_COUNT = 0


def _sign_in(username: str, password: str, forwarded: str) -> int:
    response = Client().post(
        LOGIN,
        {"username": username, "password": password},
        REMOTE_ADDR="127.0.0.1",  # every request arrives from the proxy
        HTTP_X_FORWARDED_FOR=forwarded,
    )
    return response.status_code


def test_behind_a_proxy_failures_from_one_client_do_not_lock_out_another(one_proxy) -> None:
    for name in ("alice", "bob"):
        make_user(name)
    for i in range(5):  # five failures, each for a different account, from one client
        assert _sign_in(f"nobody{i}", "wrong", "10.1.1.1") in (401, 429)
    # That client is locked out, whatever it claims further left in the header...
    assert _sign_in("alice", PASSWORD, "10.1.1.1") == 429
    assert _sign_in("alice", PASSWORD, "10.2.2.2, 10.1.1.1") == 429
    # ...and another client behind the same proxy signs in.
    assert _sign_in("bob", PASSWORD, "10.2.2.2") == 302
    failed = AuditEvent.objects.filter(action=AuditAction.SIGN_IN_FAILED)
    assert set(failed.values_list("client_address", flat=True)) == {"10.1.1.1"}


def test_without_a_proxy_a_forwarded_header_is_not_believed() -> None:
    make_user("bob")
    for i in range(5):
        _sign_in(f"nobody{i}", "wrong", f"10.3.3.{i}")  # forged, a new "client" each time
    # All five came from 127.0.0.1, which is now locked out.
    assert _sign_in("bob", PASSWORD, "10.4.4.4") == 429
    failed = AuditEvent.objects.filter(action=AuditAction.SIGN_IN_FAILED)
    assert set(failed.values_list("client_address", flat=True)) == {"127.0.0.1"}


def test_socket_audit_address_is_resolved_like_http(one_proxy) -> None:
    scope = {
        "client": ["127.0.0.1", 50000],
        "headers": [(b"x-forwarded-for", b"10.9.9.9, 10.1.2.3"), (b"user-agent", b"ua")],
    }
    assert RequestMeta.from_scope(scope) == RequestMeta(address="10.1.2.3", user_agent="ua")
    assert RequestMeta.from_scope({"client": ["127.0.0.1", 1], "headers": []}).address == (
        "127.0.0.1"
    )


def test_socket_audit_address_ignores_forwarded_header_without_a_proxy() -> None:
    scope = {"client": ["127.0.0.1", 50000], "headers": [(b"x-forwarded-for", b"10.1.2.3")]}
    assert RequestMeta.from_scope(scope).address == "127.0.0.1"


# --- replacing the identity backup --------------------------------------------------------------


def _put_backup(actor: Actor, ciphertext: bytes, **extra: object):
    return actor.call(
        "PUT", "/api/identity/backup", {"ciphertext": b64e(ciphertext), **extra}, device=False
    )


def _stored(actor: Actor) -> bytes:
    return bytes(IdentityBackup.objects.get(user=actor.user).ciphertext)


def test_first_identity_backup_needs_nothing_more_and_a_retry_is_accepted() -> None:
    pcp = Actor("pcp")
    assert _put_backup(pcp, b"first").status_code == 200
    assert _put_backup(pcp, b"first").status_code == 200  # the same bytes again
    assert _stored(pcp) == b"first"
    assert not AuditEvent.objects.filter(action=AuditAction.IDENTITY_BACKUP_REPLACED).exists()


def test_replacing_the_identity_backup_needs_the_password_and_is_audited() -> None:
    pcp = Actor("pcp")
    _put_backup(pcp, b"first")
    # A stolen session cannot swap the backup for one sealed under the thief's key.
    missing = _put_backup(pcp, b"attacker's")
    assert _error(missing) == (403, "reauth_required")
    wrong = _put_backup(pcp, b"attacker's", password="guess")
    assert _error(wrong) == (403, "reauth_failed")
    assert _stored(pcp) == b"first"
    refused = AuditEvent.objects.get(action=AuditAction.IDENTITY_BACKUP_REPLACED)
    assert (refused.outcome, refused.reason, refused.actor_id) == (
        "failure", "reauth_failed", pcp.user.pk
    )

    replaced = _put_backup(pcp, b"second", password=PASSWORD)
    assert replaced.status_code == 200 and replaced.json()["ciphertext"] == b64e(b"second")
    assert _stored(pcp) == b"second"
    events = AuditEvent.objects.filter(action=AuditAction.IDENTITY_BACKUP_REPLACED)
    done = events.get(outcome="success")
    assert done.actor_id == pcp.user.pk and done.details == {"size": 6}
    assert "password" not in json.dumps(done.details) and PASSWORD not in done.reason


def test_guessing_the_password_to_replace_the_backup_locks_out() -> None:
    pcp = Actor("pcp")
    _put_backup(pcp, b"first")
    for i in range(4):
        assert _error(_put_backup(pcp, b"x", password=f"guess{i}")) == (403, "reauth_failed")
    # Counted like sign-in failures: the fifth locks out, then even the right password.
    assert _error(_put_backup(pcp, b"x", password="guess4")) == (429, "locked_out")
    locked = _put_backup(pcp, b"x", password=PASSWORD)
    assert _error(locked) == (429, "locked_out")
    assert _stored(pcp) == b"first"
    # The lockout page for people signing in is still the page.
    page = Client().post(LOGIN, {"username": "pcp", "password": PASSWORD})
    assert page.status_code == 429 and page["Content-Type"].startswith("text/html")
