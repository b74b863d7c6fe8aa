"""collab/schema/asyncapi.yaml: well formed, complete for every frame the consumers
send or accept, and true of a real exchange over daphne."""

from __future__ import annotations

import asyncio
import inspect
import json
import re
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

from collab.accounts import ws_auth
from collab.consumers import base, case_room, inbox, ping, sweep
from collab.consumers.base import AuthenticatedConsumer
from collab.consumers.case_room import CaseRoomConsumer
from collab.consumers.inbox import InboxConsumer
from collab.consumers.ping import PingConsumer
from tests.support import schema_check
from tests.support.actor import Actor
from tests.support.live import daphne_servers
from tests.support.ws import RoomSocket

ROOT = Path(__file__).resolve().parents[2]
DOC = schema_check.asyncapi_document()
FRAMES = schema_check.load_frames(DOC)
CHANNEL_OF: dict[type[AuthenticatedConsumer], str] = {
    CaseRoomConsumer: "caseRoom",
    PingConsumer: "ping",
    InboxConsumer: "inbox",
}
# "type": "<frame>" in a consumer's source: a frame it sends, a channel-layer event it
# publishes (case.*) or an ASGI message (websocket.*).
TYPE_LITERAL = re.compile(r"""["']type["']\s*:\s*["']([a-z_.]+)["']""")
NOT_A_FRAME = re.compile(r"^(case|device|session|websocket)\.")


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in refs(value)]
    return []


def test_document_is_asyncapi_3_and_every_ref_resolves() -> None:
    assert DOC["asyncapi"].startswith("3.")
    assert set(DOC["channels"]) == {"caseRoom", "ping", "inbox", "noSuchSocket"}
    found = refs(DOC)
    assert len(found) > 50
    for ref in found:
        assert ref.startswith("#/"), ref  # one self-contained document
        schema_check._resolve(DOC, ref)  # KeyError if it does not resolve


def test_every_payload_and_schema_is_valid_json_schema() -> None:
    messages = DOC["components"]["messages"]
    for name, message in messages.items():
        Draft202012Validator.check_schema(message["payload"])
        assert message["payload"]["properties"]["type"]["const"] == message["name"], name
        assert message["payload"]["required"][0] == "type", name
    for schema in DOC["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)


def test_operations_name_only_their_channels_messages() -> None:
    """AsyncAPI 3: an operation's messages are a subset of its channel's."""
    for name, operation in DOC["operations"].items():
        channel = operation["channel"]["$ref"]
        for message in operation["messages"]:
            assert message["$ref"].startswith(channel + "/messages/"), name
    for (_, direction), table in FRAMES.by_channel.items():
        for pointer in table.values():
            payload = schema_check._resolve(DOC, pointer)
            if direction == schema_check.SERVER:
                # The server's frames have a fixed shape: an extra field is a change.
                assert payload["additionalProperties"] is False, pointer


def test_close_codes_are_in_the_channel_description() -> None:
    text = DOC["channels"]["caseRoom"]["description"]
    codes = {
        case_room.CLOSE_BAD_REQUEST,
        case_room.CLOSE_NOT_MEMBER,
        case_room.CLOSE_NO_CASE,
        base.CLOSE_TOO_BIG,
        base.CLOSE_RATE_LIMITED,
        base.CLOSE_TOO_SLOW,
        ws_auth.CLOSE_UNAVAILABLE,
        ws_auth.CLOSE_UNAUTHENTICATED,
    }
    for code in codes:
        assert f"| {code} |" in text, code


def handled_frames(consumer: type[AuthenticatedConsumer]) -> set[str]:
    """The client frames a consumer accepts: its handle_<type> methods (base.receive
    dispatches "handle_" + type with "." as "_"), and prove for the case room."""
    names = {n.removeprefix("handle_") for n in dir(consumer) if n.startswith("handle_")}
    if consumer is CaseRoomConsumer:
        assert '"prove"' in inspect.getsource(CaseRoomConsumer._take_proof)
        names.add("prove")
    return names


def sent_frames(consumer: type[AuthenticatedConsumer]) -> set[str]:
    """The frame types a consumer's module (and its base) write to a client."""
    own = {CaseRoomConsumer: case_room, PingConsumer: ping, InboxConsumer: inbox}
    modules = [base, own[consumer]]
    literals = {t for m in modules for t in TYPE_LITERAL.findall(inspect.getsource(m))}
    return {t for t in literals if not NOT_A_FRAME.match(t)}


@pytest.mark.parametrize("consumer", [CaseRoomConsumer, PingConsumer, InboxConsumer])
def test_every_frame_the_consumer_accepts_has_a_schema(consumer: Any) -> None:
    channel = CHANNEL_OF[consumer]
    described = {t.replace(".", "_") for t in FRAMES.by_channel[(channel, schema_check.CLIENT)]}
    assert handled_frames(consumer) == described


@pytest.mark.parametrize("consumer", [CaseRoomConsumer, PingConsumer, InboxConsumer])
def test_every_frame_the_consumer_sends_has_a_schema(consumer: Any) -> None:
    channel = CHANNEL_OF[consumer]
    found = sent_frames(consumer)
    assert {"error", "pong", "notify", "hello"} <= found  # the scan itself works
    assert found == set(FRAMES.by_channel[(channel, schema_check.SERVER)])


def test_the_socket_of_no_path_sends_only_error() -> None:
    source = (ROOT / "collab" / "routing.py").read_text()
    assert {t for t in TYPE_LITERAL.findall(source) if not NOT_A_FRAME.match(t)} == {"error"}
    assert set(FRAMES.by_channel[("noSuchSocket", schema_check.SERVER)]) == {"error"}


def test_a_frame_outside_the_description_is_named() -> None:
    path = "/ws/cases/6a0c4f8e-0000-4000-8000-000000000000/"
    assert schema_check.frame_errors(path, "server", {"type": "pong"}) == []
    assert schema_check.frame_errors(path, "server", {"type": "pong", "extra": 1})
    assert schema_check.frame_errors(path, "server", {"type": "teleport"})
    assert schema_check.frame_errors(path, "client", {"type": "resume", "after": -1})
    assert schema_check.frame_errors(path, "client", {"type": "resume", "after": 0}) == []
    assert schema_check.frame_errors("/ws/ping/", "client", {"type": "resume", "after": 0})


# --- a real exchange ----------------------------------------------------------------


@pytest.fixture(scope="module")
def server(django_db_setup: Any, django_db_blocker: Any) -> Any:
    with django_db_blocker.unblock(), daphne_servers(1) as urls:
        yield urls[0]


@pytest.mark.django_db(transaction=True)
@pytest.mark.e2e
def test_a_live_exchange_matches_the_description(server: str) -> None:
    pcp = Actor("pcp").register().go_live(server)
    derm = Actor("derm", specialty="Dermatology").register().go_live(server)
    state = pcp.open_case()
    assert pcp.add(state, derm).status_code == 201
    derm.join(state.case_id)
    seen: list[tuple[str, dict[str, Any]]] = []

    async def scenario() -> None:
        a = await RoomSocket.open(server, pcp.session_id, state.case_id, pcp.device.device_id)
        b = await RoomSocket.open(server, derm.session_id, state.case_id, derm.device.device_id)
        await a.next("hello")
        await b.next("hello")
        sent: list[dict[str, Any]] = [
            {"type": "ping", "ref": "p1"},
            {
                "type": "send",
                "ref": "m1",
                "urgent": True,
                "envelope": state.seal({"text": "urgent, please look"}).to_wire(),
            },
        ]
        for frame in sent:
            await a.send(frame)
        await a.next("ack")
        await b.next("message")
        frames_b: list[dict[str, Any]] = [
            {"type": "typing", "active": True},
            {"type": "read", "up_to": 1},
            {"type": "ack_urgent", "seq": 1, "ref": "u1"},
            {"type": "resume", "after": 0, "limit": 10, "ref": "r1"},
        ]
        for frame in frames_b:
            await b.send(frame)
        await b.send_raw(json.dumps({"type": "resume", "after": "x"}))  # refused: error
        for sock, kinds in (
            (b, ["urgent_ack", "messages", "error", "notify"]),
            (a, ["typing", "read", "urgent_ack"]),
        ):
            for kind in kinds:
                if not any(f["type"] == kind for f in sock.seen):
                    await sock.next(kind)
        sent += frames_b
        for sock in (a, b):
            await sock.close()
        seen.extend(("client", f) for f in sent)
        seen.extend(("server", f) for f in a.seen + b.seen)

    asyncio.run(scenario())
    path = f"/ws/cases/{state.case_id}/"
    types = {frame["type"] for direction, frame in seen if direction == "server"}
    assert {
        "challenge",
        "hello",
        "pong",
        "ack",
        "message",
        "typing",
        "read",
        "urgent_ack",
        "messages",
        "error",
        "notify",
    } <= types, types
    problems = {
        (direction, frame["type"]): schema_check.frame_errors(path, direction, frame)
        for direction, frame in seen
    }
    assert {key: errors for key, errors in problems.items() if errors} == {}


# Codes the consumers name themselves (the rest come from the services and the envelope
# parser, listed in ErrorCode's description): each must be in the description.
OWN_CODE = re.compile(
    r"""(?:FrameError|\.end|_refuse|send_error)\(\s*["']([a-z_]+)["']"""
    r"""|(?:return|Refusal =) \(["']([a-z_]+)["'],|["']code["']:\s*["']([a-z_]+)["']"""
)


def test_every_error_code_the_sockets_name_is_described() -> None:
    sources = [inspect.getsource(m) for m in (base, case_room, ping, inbox, sweep)]
    sources.append((ROOT / "collab" / "routing.py").read_text())
    named = {code for text in sources for match in OWN_CODE.findall(text)
             for code in match if code}
    assert {"bad_field", "too_slow", "no_such_socket", "removed", "session_ended"} <= named
    described = set(DOC["components"]["schemas"]["ErrorCode"]["enum"])
    assert named - described == set()
