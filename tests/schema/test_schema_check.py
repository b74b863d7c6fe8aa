"""The harness of tests/support/schema_check.py catches what breaks the descriptions
and passes what conforms: HTTP through the middleware, frames through both socket
clients' hooks."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from collab.asgi import application
from tests.consumers.test_batched_delivery import open_room
from tests.support import schema_check
from tests.support.actor import Actor
from tests.support.rooms import build_room
from tests.support.users import make_user, session_cookie, verified_client

pytestmark = pytest.mark.django_db(transaction=True)

HOOK = "tests.support.schema_check.SchemaCheckMiddleware"


@pytest.fixture
def checking(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The harness on for this test (whatever COLLAB_SCHEMA_CHECK says); yields what it
    recorded and clears it, so the suite's own teardown check sees none of it."""
    monkeypatch.setattr(schema_check, "ENABLED", True)
    if HOOK not in settings.MIDDLEWARE:
        settings.MIDDLEWARE = [HOOK, *settings.MIDDLEWARE]
    schema_check.install_socket_hooks()
    schema_check.VIOLATIONS.clear()
    monkeypatch.setattr(schema_check.STATE, "hostile", False)
    recorded: list[str] = []
    yield recorded
    schema_check.VIOLATIONS.clear()


def drain() -> list[str]:
    found = list(schema_check.VIOLATIONS)
    schema_check.VIOLATIONS.clear()
    return found


def exchange(**changes: Any) -> schema_check.Exchange:
    """GET /api/device-nonce answered as described (base.yaml / accounts.yaml)."""
    base: dict[str, Any] = {
        "method": "GET",
        "path": "/api/device-nonce",
        "query": [],
        "request_body": b"",
        "request_type": "",
        "headers": {},
        "cookies": {"sessionid": "x"},
        "status": 200,
        "response_type": "application/json",
        "response_body": json.dumps({"nonce": "AAABojMaJwkWQyWCs_Op9V0Q9bAyMYZo"}).encode(),
        "response_headers": {},
    }
    base.update(changes)
    return schema_check.Exchange(**base)


def test_an_http_answer_outside_the_description_is_caught() -> None:
    assert schema_check.http_errors(exchange()) == []
    assert schema_check.http_errors(exchange(path="/api/no-such-route")) == [
        "no such operation in the description"
    ]
    assert schema_check.http_errors(exchange(status=299))
    wrong_body = exchange(status=401, response_body=json.dumps({"error": 5}).encode())
    assert schema_check.http_errors(wrong_body)
    extra = exchange(response_body=json.dumps({"nonce": "x", "debug": 1}).encode())
    assert schema_check.http_errors(extra)


def test_answers_common_to_every_route_are_allowed_with_the_error_body() -> None:
    """base.yaml: 404 for no route, 413, 500 and 503 are not repeated per operation."""
    error = json.dumps({"error": "internal_error", "detail": "x"}).encode()
    assert schema_check.http_errors(exchange(status=500, response_body=error)) == []
    assert schema_check.http_errors(exchange(path="/api/nothing-here", status=404,
                                             response_body=error)) == []
    assert schema_check.http_errors(exchange(status=500, response_body=b'{"oops": 1}'))


@pytest.mark.django_db
def test_pre_routing_answers_pass_only_where_no_route_is_or_from_the_session_checks(
    checking: list[str],
) -> None:
    """An undescribed path may answer 401/403/404 when no route has it, or with the
    session middleware's codes; a routed path that is not described may not."""
    refused = json.dumps({"error": "forbidden", "detail": "x"}).encode()
    factor = json.dumps({"error": "second_factor_required", "detail": "x"}).encode()
    assert schema_check.http_errors(exchange(path="/api/nothing-here", status=403,
                                             response_body=refused)) == []
    assert schema_check.http_errors(exchange(path="/api/cases", method="PUT", status=403,
                                             response_body=factor)) == []
    assert schema_check.http_errors(exchange(path="/api/cases", method="PUT", status=403,
                                             response_body=refused))


def test_a_500_and_an_html_api_answer_are_violations(
    checking: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    error = json.dumps({"error": "internal_error", "detail": "x"}).encode()
    schema_check.check_exchange(exchange(status=500, response_body=error))
    schema_check.check_exchange(exchange(status=405, response_type="text/html; charset=utf-8",
                                         response_body=b""))
    found = drain()
    assert len(found) == 2 and "server error" in found[0] and "HTML" in found[1]
    monkeypatch.setattr(schema_check.STATE, "server_error", True)  # @mark.server_error
    schema_check.check_exchange(exchange(status=500, response_body=error))
    assert drain() == []


def test_a_request_outside_the_description_is_caught_when_accepted() -> None:
    """A refused request (4xx) may break the description; an accepted one may not."""
    bad = exchange(query=[("unexpected", "1")], path="/api/device-nonce")
    assert schema_check.http_errors(bad) == []  # query parameters beyond: not an error
    body = exchange(method="POST", path="/api/identity", request_body=b'{"uik_pub": 17}',
                    request_type="application/json", status=200,
                    response_body=json.dumps({"user_id": str(uuid.uuid4()),
                                              "uik_pub": "A" * 43 + "="}).encode())
    assert any(e.startswith("request:") for e in schema_check.http_errors(body))
    refused = exchange(method="POST", path="/api/identity", request_body=b'{"uik_pub": 17}',
                       request_type="application/json", status=400,
                       response_body=json.dumps({"error": "bad_field", "detail": "x"}).encode())
    assert schema_check.http_errors(refused) == []


def test_the_middleware_checks_real_answers_and_names_them(
    checking: list[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    actor = Actor("alice")
    ok = actor.client.get("/api/devices")
    assert ok.status_code == 200
    assert drain() == []
    # The same answer against a description that wants one more field: caught, with
    # method, path and status named.
    from openapi_core import OpenAPI

    doc = schema_check.openapi_document()
    listing = doc["paths"]["/api/devices"]["get"]["responses"]["200"]["content"]
    listing["application/json"]["schema"] = {"type": "object", "required": ["surprise"]}
    monkeypatch.setattr(schema_check, "openapi", lambda: OpenAPI.from_dict(doc))  # type: ignore[arg-type]
    assert actor.client.get("/api/devices").status_code == 200
    found = drain()
    assert len(found) == 1 and found[0].startswith("GET /api/devices -> 200: response"), found


def test_a_request_body_outside_the_description_is_not_blamed_when_refused(
    checking: list[str],
) -> None:
    actor = Actor("bob")
    refused = actor.call("POST", "/api/identity", {"uik_pub": 17})
    assert refused.status_code == 400
    assert drain() == []  # the request is outside, the refusal (Error body) inside


@pytest.mark.parametrize(
    ("direction", "frame", "ok"),
    [
        ("server", {"type": "pong"}, True),
        ("server", {"type": "pong", "ref": "r"}, True),
        ("server", {"type": "pong", "debug": True}, False),
        (
            "server",
            {"type": "hello", "case": str(uuid.uuid4()), "head_epoch": 1, "last_seq": 0},
            True,
        ),
        ("server", {"type": "hello", "case": "not-a-uuid", "head_epoch": 1, "last_seq": 0}, False),
        ("server", {"type": "error", "code": "bad_field", "message": "x"}, True),
        ("server", {"type": "error", "code": "made_up", "message": "x"}, False),
        (
            "server",
            {
                "type": "error",
                "code": "sender_seq_not_increasing",
                "message": "x",
                "last_sender_seq": "4",
            },
            False,
        ),
        ("server", {"type": "resume", "after": 0}, False),  # a client frame
        ("client", {"type": "resume", "after": 0, "limit": 1000}, True),
        ("client", {"type": "resume", "after": 0, "limit": 1001}, False),
        ("client", {"type": "typing", "active": "yes"}, False),
        ("client", "{not json", False),
    ],
)
def test_frames_are_checked_both_ways(direction: str, frame: Any, ok: bool) -> None:
    path = f"/ws/cases/{uuid.uuid4()}/"
    assert (schema_check.frame_errors(path, direction, frame) == []) is ok


async def test_the_communicator_hook_records_bad_client_frames_and_not_hostile_ones(
    checking: list[str],
    settings: Any,
) -> None:
    settings.SESSION_CHECK_SECONDS = 3600
    _, member = await database_sync_to_async(build_room)(2)
    communicator = await open_room(member)  # challenge, prove and hello pass the hooks
    await communicator.send_json_to({"type": "ping", "ref": "p"})
    assert await communicator.receive_json_from(timeout=5) == {"type": "pong", "ref": "p"}
    assert drain() == []
    await communicator.send_json_to({"type": "typing", "active": "yes"})
    answer = await communicator.receive_json_from(timeout=5)
    assert answer["code"] == "bad_field"
    found = drain()
    assert len(found) == 1 and "client frame" in found[0] and "typing" in found[0], found
    with schema_check.hostile():
        await communicator.send_json_to({"type": "typing", "active": "yes"})
        assert (await communicator.receive_json_from(timeout=5))["code"] == "bad_field"
    assert drain() == []  # the frame was exempt, and the error answer conforms
    await communicator.disconnect()


async def test_the_communicator_hook_records_a_bad_server_frame(checking: list[str]) -> None:
    """A server frame that breaks the description (here injected as the consumer's own
    send, as a regression in a handler would) is recorded even in a hostile test."""

    def signed_in() -> str:
        return session_cookie(verified_client(make_user("pinger")))

    cookie = await database_sync_to_async(signed_in)()
    headers = [
        (b"origin", b"http://127.0.0.1"),
        (b"host", b"127.0.0.1"),
        (b"cookie", cookie.encode()),
    ]
    communicator = WebsocketCommunicator(application, "/ws/ping/", headers=headers)
    assert (await communicator.connect(timeout=10))[0]
    assert (await communicator.receive_json_from(timeout=10))["type"] == "hello"
    assert drain() == []
    with schema_check.hostile():
        await communicator.output_queue.put(
            {"type": "websocket.send", "text": '{"type":"pong","debug":1}'}
        )
        await communicator.receive_json_from(timeout=5)
    found = drain()
    assert len(found) == 1 and "/ws/ping/ server frame" in found[0], found
    await communicator.disconnect()


def test_a_violation_fails_the_test_at_teardown(monkeypatch: pytest.MonkeyPatch) -> None:
    """The autouse fixture of tests/conftest.py: a recorded violation fails the test at
    teardown, naming it; none recorded, it passes."""
    from tests import conftest

    fixture = conftest._schema_conformance._get_wrapped_function()
    monkeypatch.setattr(schema_check, "ENABLED", True)

    class Node:
        nodeid = "tests/x.py::test_x"

        def get_closest_marker(self, name: str) -> None:
            return None

    class Request:
        node = Node()

    clean = fixture(Request())
    next(clean)
    with pytest.raises(StopIteration):
        next(clean)
    dirty = fixture(Request())
    next(dirty)
    schema_check.check_frame("/ws/ping/", "server", '{"type": "pong", "x": 1}')
    with pytest.raises(pytest.fail.Exception, match=r"socket /ws/ping/ server frame"):
        next(dirty)
    assert schema_check.VIOLATIONS == []
