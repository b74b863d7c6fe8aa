"""docs/walkthrough.md: every JSON block in it is allowed by the descriptions, and it is
what the current server does (recorded again here from a real run)."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from tests.schema import walkthrough
from tests.support import schema_check
from tests.support.live import daphne_servers

HOOK = "tests.support.schema_check.SchemaCheckMiddleware"
WRITE = os.environ.get("COLLAB_WALKTHROUGH_WRITE", "") == "1"


def block_errors(blocks: list[tuple[str, list[str], Any]]) -> list[str]:
    """What the descriptions refuse in the doc's blocks; a request is checked with the
    answer that follows it (the operation is found from the pair)."""
    errors: list[str] = []
    request: tuple[str, str, Any] | None = None
    for kind, info, value in blocks:
        value = walkthrough.placeholders_back(value)
        if kind == "frame":
            direction, path = info
            problems = schema_check.frame_errors(
                walkthrough.placeholder_text(path), direction, value
            )
            errors += [f"frame {value.get('type')}: {p}" for p in problems]
        elif kind == "request":
            request = (info[0], info[1], value)
        else:
            status, method, path = info
            body = b""
            if request is not None and request[:2] == (method, path):
                body = json.dumps(request[2]).encode()
            request = None
            exchange = schema_check.Exchange(
                method=method,
                path=walkthrough.placeholder_text(path),
                query=[],
                request_body=body,
                request_type="application/json" if body else "",
                headers={},
                cookies={},
                status=int(status),
                response_type="application/json",
                response_body=json.dumps(value).encode(),
                response_headers={},
            )
            problems = schema_check.http_errors(
                exchange, check_request=bool(body), request_parts=("body",)
            )
            errors += [f"{method} {path} -> {status}: {p}" for p in problems]
    return errors


def test_every_block_of_the_walkthrough_is_allowed_by_the_descriptions() -> None:
    blocks = walkthrough.doc_blocks(walkthrough.DOC.read_text(encoding="utf-8"))
    frames = {(info[0], value["type"]) for kind, info, value in blocks if kind == "frame"}
    assert {
        ("client", "prove"),
        ("client", "send"),
        ("client", "resume"),
        ("client", "read"),
        ("server", "challenge"),
        ("server", "hello"),
        ("server", "ack"),
        ("server", "message"),
        ("server", "messages"),
    } <= frames
    operations = {(info[1], info[2]) for kind, info, _ in blocks if kind == "response"}
    assert ("POST", "/api/cases") in operations
    assert ("POST", "/api/cases/<case>/log") in operations
    assert ("POST", "/api/cases/<case>/blobs") in operations
    assert block_errors(blocks) == []


def test_a_block_the_descriptions_refuse_is_named() -> None:
    bad = [
        ("frame", ["server", "/ws/cases/<case>/"], {"type": "ack", "seq": "one"}),
        ("response", ["201", "POST", "/api/cases"], {"surprise": True}),
    ]
    errors = block_errors(bad)
    assert any(e.startswith("frame ack") for e in errors), errors
    assert any(e.startswith("POST /api/cases -> 201") for e in errors), errors


@pytest.fixture(scope="module")
def server(django_db_setup: Any, django_db_blocker: Any) -> Any:
    with django_db_blocker.unblock(), daphne_servers(1) as urls:
        yield urls[0]


@pytest.mark.django_db(transaction=True)
@pytest.mark.e2e
def test_the_walkthrough_is_what_the_server_does_now(server: str, settings: Any) -> None:
    if HOOK not in settings.MIDDLEWARE:
        settings.MIDDLEWARE = [HOOK, *settings.MIDDLEWARE]
    tape, names = walkthrough.record(server)
    # The real values, unmasked, against the descriptions.
    errors: list[str] = []
    for entry in tape:
        if entry[0] == "frame":
            _, path, direction, data = entry
            errors += schema_check.frame_errors(path, direction, data)
        elif (
            entry[0] == "http"
            and entry[1].path.startswith("/api/")
            and (schema_check.is_json(entry[1].response_type))
        ):
            ex = entry[1]
            errors += [f"{ex.method} {ex.path} -> {ex.status}: {p}" for p in
                       schema_check.http_errors(ex, check_request=ex.request_known)]
    assert errors == []
    rendered = walkthrough.render(tape, names)
    if WRITE:
        walkthrough.DOC.write_text(rendered, encoding="utf-8")

    # Frames of two sockets interleave differently from run to run: the doc holds the
    # same kinds of blocks, not necessarily in the same order.
    def shape(text: str) -> set[tuple[str, ...]]:
        return {
            (kind, *info, str(value.get("type", "")))
            for kind, info, value in walkthrough.doc_blocks(text)
        }

    assert shape(rendered) == shape(walkthrough.DOC.read_text(encoding="utf-8"))
