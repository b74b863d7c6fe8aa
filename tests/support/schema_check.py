"""Every /api/ JSON response and every socket frame the suite sees, checked against
collab/schema/openapi/*.yaml and collab/schema/asyncapi.yaml.

Hooks (installed by tests/conftest.py when ``ENABLED``):
- ``SchemaCheckMiddleware``, appended to ``settings.MIDDLEWARE`` for the test session:
  each request to /api/ through Django's test client (or any server in this process)
  and its JSON answer;
- ``check_live_http`` for answers from a daphne process (tests/support/actor.py);
- ``install_socket_hooks``: Channels' ``WebsocketCommunicator`` (tests/consumers) and
  the ``websockets`` client connection (tests/support/ws.py's RoomSocket, the SDK over a
  live daphne or tests/client/socket_server.py) check each text frame both ways.

Server answers are always checked. The client's requests and frames are checked unless
the test is marked ``hostile_input`` (it sends malformed input on purpose). Violations
are recorded in ``VIOLATIONS``; the autouse fixture in tests/conftest.py fails the test
at teardown naming them. With ``COLLAB_SCHEMA_REPORT=<file>`` each one is also appended
to that file as a JSON line (for a whole-suite survey).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import os
import re
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit

import yaml
from jsonschema import Draft202012Validator, FormatChecker  # type: ignore[import-untyped]
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "collab" / "schema"
ASYNCAPI_PATH = SCHEMA_DIR / "asyncapi.yaml"
ASYNCAPI_URI = "urn:collab:asyncapi"

# The one switch: "1" checks every run; until then only COLLAB_SCHEMA_CHECK=1 runs do.
DEFAULT = "1"
ENABLED = os.environ.get("COLLAB_SCHEMA_CHECK", DEFAULT) == "1"
REPORT = os.environ.get("COLLAB_SCHEMA_REPORT", "")

SERVER = "server"  # server to client
CLIENT = "client"  # client to server


@dataclass
class State:
    violations: list[str] = field(default_factory=list)
    hostile: bool = False  # the running test sends malformed input on purpose
    server_error: bool = False  # the running test causes a 500 on purpose
    test: str = ""
    # While a list: every exchange and frame is also appended to it, in order, checked
    # or not (tests/schema/walkthrough.py records a session with it).
    tape: list[Any] | None = None


STATE = State()
VIOLATIONS = STATE.violations


def record(text: str, **detail: Any) -> None:
    STATE.violations.append(text)
    if REPORT:
        with open(REPORT, "a", encoding="utf-8") as out:
            out.write(json.dumps({"test": STATE.test, "violation": text, **detail}) + "\n")


@contextlib.contextmanager
def hostile() -> Iterator[None]:
    """Within: the client's requests and frames are not checked (answers still are)."""
    before, STATE.hostile = STATE.hostile, True
    try:
        yield
    finally:
        STATE.hostile = before


# --- sockets ------------------------------------------------------------------------


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


@dataclass
class Frames:
    """Per channel and direction: frame type -> the pointer of its payload schema."""

    doc: dict[str, Any]
    by_channel: dict[tuple[str, str], dict[str, str]]
    registry: Registry[Any]
    validators: dict[str, Draft202012Validator] = field(default_factory=dict)

    def validator(self, pointer: str) -> Draft202012Validator:
        if pointer not in self.validators:
            self.validators[pointer] = Draft202012Validator(
                {"$ref": f"{ASYNCAPI_URI}{pointer}"},
                registry=self.registry,
                format_checker=FormatChecker(),
            )
        return self.validators[pointer]


def message_pointer(doc: dict[str, Any], ref: str) -> str:
    """Follow a message $ref (an operation's, to a channel's, to a component)."""
    node = _resolve(doc, ref)
    while "$ref" in node:
        ref = node["$ref"]
        node = _resolve(doc, ref)
    return ref


def load_frames(doc: dict[str, Any] | None = None) -> Frames:
    doc = doc if doc is not None else asyncapi_document()
    by_channel: dict[tuple[str, str], dict[str, str]] = {}
    for operation in doc["operations"].values():
        channel = operation["channel"]["$ref"].removeprefix("#/channels/")
        direction = CLIENT if operation["action"] == "receive" else SERVER
        table = by_channel.setdefault((channel, direction), {})
        for message in operation["messages"]:
            pointer = message_pointer(doc, message["$ref"])
            kind = _resolve(doc, pointer)["payload"]["properties"]["type"]["const"]
            if kind in table and table[kind] != pointer:
                raise ValueError(f"{channel}: two {direction} messages of type {kind!r}")
            table[kind] = pointer + "/payload"
    resource = Resource.from_contents(doc, default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource(ASYNCAPI_URI, resource)
    return Frames(doc, by_channel, registry)


def asyncapi_document() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(ASYNCAPI_PATH.read_text(encoding="utf-8"))
    return loaded


@functools.cache
def frames() -> Frames:
    return load_frames()


CASE_ROOM = re.compile(r"^/ws/cases/[^/]+/$")


def channel_of(path: str) -> str:
    path = urlsplit(path).path
    if CASE_ROOM.match(path):
        return "caseRoom"
    if path == "/ws/ping/":
        return "ping"
    if path == "/ws/inbox/":
        return "inbox"
    return "noSuchSocket"


def frame_errors(path: str, direction: str, data: str | bytes | dict[str, Any],
                 table: Frames | None = None) -> list[str]:
    """What is wrong with one frame (empty when it conforms)."""
    table = table or frames()
    channel = channel_of(path)
    if isinstance(data, bytes):
        return ["a binary frame (frames are JSON text)"]
    if isinstance(data, str):
        try:
            frame = json.loads(data)
        except (ValueError, RecursionError):  # RecursionError: nested too deep
            return ["not JSON"]
    else:
        frame = data
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        return ["not an object with a string type"]
    pointer = table.by_channel.get((channel, direction), {}).get(frame["type"])
    if pointer is None:
        return [f"type {frame['type']!r} is not a {direction} frame of {channel}"]
    return [
        f"{frame['type']}: at /{'/'.join(str(p) for p in error.absolute_path)}: {error.message}"
        for error in sorted(table.validator(pointer).iter_errors(frame), key=str)
    ]


def check_frame(path: str, direction: str, data: str | bytes | dict[str, Any]) -> None:
    """Record a violation for a frame that breaks the socket description."""
    if STATE.tape is not None:
        STATE.tape.append(("frame", path, direction, data))
    if not ENABLED or (direction == CLIENT and STATE.hostile):
        return
    errors = frame_errors(path, direction, data)
    if errors:
        shown = data if isinstance(data, str) else repr(data)
        record(
            f"socket {urlsplit(path).path} {direction} frame {shown[:300]}: " + "; ".join(errors),
            kind="frame", channel=channel_of(path), direction=direction, errors=errors,
        )


def install_socket_hooks() -> None:
    """Wrap the two socket clients the suite uses so every text frame is checked."""
    from channels.testing import WebsocketCommunicator
    from websockets.asyncio.client import ClientConnection

    if getattr(WebsocketCommunicator, "_schema_checked", False):
        return
    comm_send = WebsocketCommunicator.send_to
    comm_receive = WebsocketCommunicator.receive_from

    async def send_to(self: Any, text_data: str | None = None,
                      bytes_data: bytes | None = None) -> None:
        check_frame(self.scope["path"], CLIENT, text_data if text_data is not None
                    else bytes_data or b"")
        await comm_send(self, text_data=text_data, bytes_data=bytes_data)

    async def receive_from(self: Any, timeout: float = 1) -> Any:
        data = await comm_receive(self, timeout)
        check_frame(self.scope["path"], SERVER, data)
        return data

    WebsocketCommunicator.send_to = send_to
    WebsocketCommunicator.receive_from = receive_from
    WebsocketCommunicator._schema_checked = True

    ws_send = ClientConnection.send
    ws_recv = ClientConnection.recv

    def ws_path(conn: Any) -> str:
        request = getattr(conn, "request", None)
        return str(getattr(request, "path", "") or "")

    async def send(self: Any, message: Any, text: bool | None = None) -> None:
        if isinstance(message, str | bytes):
            check_frame(ws_path(self), CLIENT, message)
        await ws_send(self, message, text=text)

    async def recv(self: Any, decode: bool | None = None) -> Any:
        data = await ws_recv(self, decode)
        check_frame(ws_path(self), SERVER, data)
        return data

    ClientConnection.send = send  # type: ignore[method-assign]
    ClientConnection.recv = recv  # type: ignore[method-assign]


# --- HTTP ---------------------------------------------------------------------------


def openapi_document() -> dict[str, Any]:
    """The merged description, as the server serves it (collab/schema/loader.py)."""
    from collab.schema.loader import openapi_document as load

    return copy.deepcopy(load())


@functools.cache
def openapi() -> Any:
    from openapi_core import Config, OpenAPI

    # The audit export answers FHIR JSON, which openapi-core does not parse by itself.
    config = Config(extra_media_type_deserializers={"application/fhir+json": json.loads})
    return OpenAPI.from_dict(cast(Mapping[Hashable, Any], openapi_document()), config=config)


@dataclass(frozen=True)
class Exchange:
    """One /api/ call as both ends saw it."""

    method: str
    path: str  # without the query
    query: list[tuple[str, str]]
    request_body: bytes
    request_type: str
    headers: dict[str, str]
    cookies: dict[str, str]
    status: int
    response_type: str
    response_body: bytes
    response_headers: dict[str, str]
    request_known: bool = True  # False: the view streamed the body away unseen


def is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def http_errors(exchange: Exchange, *, check_request: bool = True,
                api: Any = None, request_parts: tuple[str, ...] = ("parameters", "body"),
                ) -> list[str]:
    """What is wrong with one /api/ exchange (empty when it conforms)."""
    from openapi_core.templating.paths.exceptions import (
        OperationNotFound,
        PathNotFound,
        ServerNotFound,
    )
    from openapi_core.templating.responses.exceptions import ResponseNotFound
    from openapi_core.testing import MockRequest, MockResponse
    from openapi_core.validation.request.exceptions import (
        MissingRequestBody,
        MissingRequiredRequestBody,
    )
    from openapi_core.validation.request.validators import (
        V31RequestBodyValidator,
        V31RequestParametersValidator,
    )

    api = api if api is not None else openapi()
    request = MockRequest(
        "http://testserver", exchange.method, exchange.path, args=dict(exchange.query),
        headers=exchange.headers, cookies=exchange.cookies, data=exchange.request_body,
        content_type=exchange.request_type,
    )
    response = MockResponse(
        exchange.response_body, status_code=exchange.status,
        headers=exchange.response_headers, content_type=exchange.response_type,
    )
    errors: list[str] = []
    try:
        api.validate_response(request, response)
    except (PathNotFound, OperationNotFound, ServerNotFound):
        if (
            exchange.status in PRE_ROUTING_STATUSES
            and _common_answer(exchange)
            and (not _routed(exchange.path) or _error_code(exchange) in SESSION_CODES)
        ):
            # base.yaml: 404 not_found for a path no route matches, and the session
            # checks (401 session_expired, 403 second_factor_required) answer before
            # any route is looked up.
            return []
        return ["no such operation in the description"]
    except ResponseNotFound:
        if not (exchange.status in COMMON_STATUSES and _common_answer(exchange)):
            errors.append(f"response: status {exchange.status} is not described here "
                          "(nor is it one of base.yaml's answers common to every route)")
    except Exception as error:  # ResponseValidationError and its kin
        errors.append("response: " + _explain(error))
    # A request the server refused (4xx) may be outside the description: that is what
    # the refusal is for. One it accepted must be inside it.
    if check_request and exchange.status < 400:
        # Security (session, CSRF, device proof) is the server's to check: a request
        # without it is answered 401/403 as described, not a malformed request.
        validators = {"parameters": V31RequestParametersValidator,
                      "body": V31RequestBodyValidator}
        for validator_cls in (validators[part] for part in request_parts):
            try:
                validator_cls(api.spec).validate(request)
            except MissingRequiredRequestBody as error:
                errors.append("request: " + _explain(error))
            except MissingRequestBody:
                pass  # an optional body left out
            except Exception as error:
                errors.append("request: " + _explain(error))
    return errors


# base.yaml: answers of every /api/ route, not repeated per operation (an Error body).
COMMON_STATUSES = frozenset({404, 413, 500, 503})
PRE_ROUTING_STATUSES = frozenset({401, 403, 404})
# What the session middleware answers on any /api/ path, before routing.
SESSION_CODES = frozenset({"unauthenticated", "session_expired", "second_factor_required"})


def _routed(path: str) -> bool:
    from django.urls import Resolver404, resolve

    try:
        resolve(path)
    except Resolver404:
        return False
    return True


def _error_code(exchange: Exchange) -> str | None:
    try:
        body = json.loads(exchange.response_body)
    except ValueError:
        return None
    code = body.get("error") if isinstance(body, dict) else None
    return code if isinstance(code, str) else None


def _common_answer(exchange: Exchange) -> bool:
    """Is the body base.yaml's Error (the shape of the answers common to every route)?"""
    try:
        body = json.loads(exchange.response_body)
    except ValueError:
        return False
    return not list(_error_validator().iter_errors(body))


@functools.cache
def _error_validator() -> Draft202012Validator:
    doc = openapi_document()
    registry: Registry[Any] = Registry().with_resource(
        "urn:collab:openapi", Resource.from_contents(doc, default_specification=DRAFT202012)
    )
    return Draft202012Validator({"$ref": "urn:collab:openapi#/components/schemas/Error"},
                                registry=registry)


def _explain(error: BaseException) -> str:
    parts = [f"{type(error).__name__}: {error}"]
    cause = error.__cause__ or error.__context__
    for _ in range(3):
        if cause is None:
            break
        inner = getattr(cause, "schema_errors", None)
        if inner:
            parts.extend(
                f"at /{'/'.join(str(p) for p in e.absolute_path)}: {e.message}" for e in inner
            )
        else:
            parts.append(f"{type(cause).__name__}: {cause}")
        cause = cause.__cause__ or cause.__context__
    return " <- ".join(parts)[:1200]


def check_exchange(exchange: Exchange, *, check_request: bool = True) -> None:
    if not ENABLED or not exchange.path.startswith("/api/"):
        return
    problem = _server_fault(exchange)
    if problem:
        record(f"{exchange.method} {exchange.path} -> {exchange.status}: {problem}",
               kind="http", method=exchange.method, path=exchange.path,
               status=exchange.status, errors=[problem])
        return
    if not is_json(exchange.response_type):
        return  # JSON answers are checked; downloads and empty answers are not
    if STATE.hostile and not _known_path(exchange):
        return  # a probe of a path no route has, on purpose
    check_request = check_request and exchange.request_known and not STATE.hostile
    errors = http_errors(exchange, check_request=check_request)
    if errors:
        record(
            f"{exchange.method} {exchange.path} -> {exchange.status}: " + "; ".join(errors),
            kind="http", method=exchange.method, path=exchange.path, status=exchange.status,
            errors=errors,
        )


def _server_fault(exchange: Exchange) -> str | None:
    """A 500 is a server bug whatever the description allows, unless the test causes
    one on purpose (``@pytest.mark.server_error``); an /api/ route never answers HTML."""
    if exchange.status == 500 and not STATE.server_error:
        return "a server error (500): a bug, not an answer"
    if "html" in (exchange.response_type or "").lower():
        return f"an HTML answer ({exchange.response_type}) where every /api/ answer is JSON"
    return None


def _known_path(exchange: Exchange) -> bool:
    return not any("no such operation" in e
                   for e in http_errors(exchange, check_request=False))


def _django_exchange(request: Any, response: Any) -> Exchange:
    headers = {
        key[5:].replace("_", "-").title(): str(value)
        for key, value in request.META.items() if key.startswith("HTTP_")
    }
    for key, name in (("CONTENT_TYPE", "Content-Type"), ("CONTENT_LENGTH", "Content-Length")):
        if request.META.get(key):  # WSGI keeps these two without the HTTP_ prefix
            headers[name] = str(request.META[key])
    try:
        body, known = request.body, True
    except Exception:  # RawPostDataException: the view read the stream itself
        body, known = b"", False
    content = b"" if getattr(response, "streaming", False) else response.content
    return Exchange(
        method=request.method,
        path=request.path,
        query=list(parse_qsl(request.META.get("QUERY_STRING", ""), keep_blank_values=True)),
        request_body=body,
        request_type=request.META.get("CONTENT_TYPE", "") or "",
        headers=headers,
        cookies=dict(request.COOKIES),
        status=response.status_code,
        response_type=response.get("Content-Type", ""),
        response_body=content,
        response_headers={k: v for k, v in response.items()},
        request_known=known,
    )


class SchemaCheckMiddleware:
    """Test-only, outermost in MIDDLEWARE: checks each /api/ request and the answer the
    client gets (a middleware's refusal too: body limit, second factor). It reads no
    body before the view does, so streamed uploads behave as without it."""

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        response = self.get_response(request)
        if STATE.tape is not None:
            STATE.tape.append(("http", _django_exchange(request, response)))
        if ENABLED and request.path.startswith("/api/"):
            check_exchange(_django_exchange(request, response))
        return response


def check_live_http(method: str, path: str, body: Any, status: int,
                    answer: Any) -> None:
    """An /api/ call answered by a live server (another process): the JSON answer, and
    the JSON request body when there is one."""
    if not ENABLED:
        return
    split = urlsplit(path)
    data = json.dumps(body).encode() if body is not None else b""
    check_exchange(Exchange(
        method=method.upper(), path=split.path, query=parse_qsl(split.query),
        request_body=data, request_type="application/json" if data else "",
        headers={}, cookies={}, status=status, response_type="application/json",
        response_body=json.dumps(answer).encode(), response_headers={},
    ), check_request=False)  # its headers and cookies are not seen here
