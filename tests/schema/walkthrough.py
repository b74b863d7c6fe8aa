"""One whole session, recorded from a real run and written as docs/walkthrough.md.

``record(server)`` drives two people through Django's test client (HTTP, in this
process, seen by SchemaCheckMiddleware) and real sockets to a live daphne (frames seen
by the websockets hook), with the tape of tests/support/schema_check.py on.
``render(tape, names)`` writes the transcript: ids replaced by stable placeholders
(``<case>``, ``<pcp>``, ...), long base64 by ``<base64 N bytes>``. Rewrite the doc with

    COLLAB_WALKTHROUGH_WRITE=1 .venv/bin/python -m pytest tests/schema/test_walkthrough.py

``placeholders_back`` turns a block of the doc into a value the descriptions can check
(tests/schema/test_walkthrough.py)."""

from __future__ import annotations

import asyncio
import io
import json
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from django.test import Client

from collab.crypto.attachment import AttachmentEncryptor
from collab.crypto.envelope import AttachmentRef, Envelope
from collab.crypto.wire import b64d, b64e
from tests.support import schema_check
from tests.support.actor import Actor
from tests.support.users import PASSWORD, totp_code
from tests.support.ws import RoomSocket

DOC = Path(__file__).resolve().parents[2] / "docs" / "walkthrough.md"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
LONG_B64 = re.compile(r"^[A-Za-z0-9+/]{100,}={0,2}$")
PLACEHOLDER_B64 = re.compile(r"^<base64 (\d+) bytes>$")
PLACEHOLDER_ID = re.compile(r"<([a-z][a-z0-9-]*)>")
SESSION = re.compile(r"sessionid=[^;\s\"]+")


@contextmanager
def taping() -> Iterator[list[Any]]:
    tape: list[Any] = []
    schema_check.install_socket_hooks()
    schema_check.STATE.tape = tape
    try:
        yield tape
    finally:
        schema_check.STATE.tape = None


def sign_in(actor: Actor) -> None:
    """The sign-in pages as a browser uses them (password, then TOTP)."""
    client = Client()
    client.get("/accounts/login/")
    signed = client.post(
        "/accounts/login/", {"username": actor.user.username, "password": PASSWORD}
    )
    assert signed.status_code == 302, signed.content
    verified = client.post("/accounts/otp/", {"code": totp_code(actor.user)})
    assert verified.status_code == 302, verified.content
    actor.client = client


def record(server: str) -> tuple[list[Any], dict[str, str]]:
    """The session; returns the tape and the names of the ids it met."""
    pcp = Actor("pcp")
    derm = Actor("derm", specialty="Dermatology")
    names: dict[str, str] = {}
    with taping() as tape:
        tape.append(("step", "Sign in (password, then the second factor)"))
        sign_in(pcp)
        sign_in(derm)
        tape.append(("step", "Register the identity key and the device"))
        pcp.register()
        derm.register()
        tape.append(("step", "Open a case"))
        state = pcp.open_case()
        tape.append(("step", "Add a member (a signed membership-log entry)"))
        assert pcp.add(state, derm).status_code == 201
        tape.append(("step", "The new member reads the log"))
        derm.join(state.case_id)
        derm_state = derm.cases[state.case_id]

        async def live() -> None:
            tape.append(("step", "Both open the case socket: challenge, prove, hello"))
            a = await RoomSocket.open(server, pcp.session_id, state.case_id, pcp.device.device_id)
            await a.next("hello")
            b = await RoomSocket.open(server, derm.session_id, state.case_id, derm.device.device_id)
            await b.next("hello")
            tape.append(("step", "Send a message; the other member receives it"))
            ack = await a.send_envelope(
                state.seal({"text": "Rash on left forearm, 3 weeks"}), ref="m1"
            )
            assert ack["type"] == "ack", ack
            message = await b.next("message")
            opened = derm_state.open(Envelope.from_wire(message["envelope"]))
            assert opened.body == {"text": "Rash on left forearm, 3 weeks"}
            await b.send({"type": "read", "up_to": message["seq"], "ref": "r1"})
            await a.next("read")
            await a.close()
            await b.close()

        asyncio.run(live())
        tape.append(("step", "Upload an image (encrypted attachment in parts)"))
        image = b"\x89PNG\r\n\x1a\n" + bytes(3000)
        encryptor = AttachmentEncryptor()
        chunks = list(encryptor.chunks(io.BytesIO(image)))
        size = sum(len(c) for c in chunks)
        created = pcp.call("POST", f"/api/cases/{state.case_id}/blobs", {"size": size})
        assert created.status_code == 201, created.content
        blob_id = created.json()["blob_id"]
        put = pcp.send("PUT", f"/api/blobs/{blob_id}/parts/0", b"".join(chunks))
        assert put.status_code == 200, put.content
        manifest = encryptor.manifest(uuid.UUID(blob_id), mime="image/png")
        done = pcp.call("POST", f"/api/blobs/{blob_id}/complete", {"root": b64e(manifest.root)})
        assert done.status_code == 200, done.content
        with_image = state.seal(  # the manifest (with the file key) travels encrypted
            {"text": "Photo attached", "attachments": [manifest.to_wire()]},
            attachments=[AttachmentRef(uuid.UUID(blob_id), manifest.root)],
        )

        async def resume() -> None:
            tape.append(("step", "Send the message that carries the image"))
            a = await RoomSocket.open(server, pcp.session_id, state.case_id, pcp.device.device_id)
            await a.next("hello")
            answer = await a.send_envelope(with_image, ref="m2")
            assert answer["type"] == "ack", answer
            await a.close()
            tape.append(("step", "Reconnect and resume from the last seq held"))
            b = await RoomSocket.open(server, derm.session_id, state.case_id, derm.device.device_id)
            await b.next("hello")
            await b.send({"type": "resume", "after": 1, "ref": "catch-up"})
            page = await b.next("messages")
            assert [item["seq"] for item in page["items"]] == [2], page
            await b.close()

        asyncio.run(resume())
        tape.append(("step", "Download the image"))
        downloaded = derm.call("GET", f"/api/blobs/{blob_id}")
        assert downloaded.status_code == 200
    names.update(
        {
            str(state.case_id): "case",
            str(pcp.user.pk): "pcp",
            str(derm.user.pk): "derm",
            str(pcp.device.device_id): "pcp-device",
            str(derm.device.device_id): "derm-device",
            blob_id: "image-blob",
        }
    )
    return tape, names


# --- rendering ----------------------------------------------------------------------


def _mask(value: Any, names: dict[str, str], extra: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _mask(v, names, extra) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v, names, extra) for v in value]
    if isinstance(value, str):
        if LONG_B64.match(value):
            try:
                return f"<base64 {len(b64d(value))} bytes>"
            except Exception:
                return value
        return _mask_text(value, names, extra)
    return value


def _mask_text(text: str, names: dict[str, str], extra: dict[str, str]) -> str:
    def name(match: re.Match[str]) -> str:
        found = match.group(0)
        if found not in names and found not in extra:
            extra[found] = f"id-{len(extra) + 1}"
        return f"<{names.get(found) or extra[found]}>"

    return SESSION.sub("sessionid=<session>", UUID.sub(name, text))


def _json(data: bytes | str) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return None


def _block(info: str, value: Any) -> str:
    return f"```json {info}\n{json.dumps(value, indent=2)}\n```\n"


def render(tape: list[Any], names: dict[str, str]) -> str:
    extra: dict[str, str] = {}
    out = [HEADER]
    for entry in tape:
        kind = entry[0]
        if kind == "step":
            out.append(f"\n## {entry[1]}\n")
        elif kind == "http":
            out.append(_render_http(entry[1], names, extra))
        else:
            _, path, direction, data = entry
            frame = _json(data) if isinstance(data, str) else None
            if frame is None:
                continue
            where = _mask_text(path.split("?")[0], names, extra)
            arrow = "client → server" if direction == schema_check.CLIENT else "server → client"
            out.append(f"\n{arrow} on `{_mask_text(path, names, extra)}`:\n\n")
            out.append(_block(f"frame {direction} {where}", _mask(frame, names, extra)))
    return re.sub(r"\n{3,}", "\n\n", "".join(out))


def _render_http(ex: schema_check.Exchange, names: dict[str, str], extra: dict[str, str]) -> str:
    path = _mask_text(ex.path, names, extra)
    query = "?" + "&".join(f"{k}={v}" for k, v in ex.query) if ex.query else ""
    lines = [f"\n`{ex.method} {path}{_mask_text(query, names, extra)}`"]
    sent = [h for h in ("X-Collab-Device", "X-Collab-Proof") if h in ex.headers]
    if sent:
        lines.append(" with " + ", ".join(f"`{h}`" for h in sent))
    if ex.path.startswith("/accounts/"):
        lines.append(" (a form)" if ex.method == "POST" else "")
        where = ex.response_headers.get("Location", "")
        lines.append(f" → `{ex.status}`" + (f" to `{where}`" if where else "") + "\n")
        return "".join(lines)
    lines.append("\n\n")
    body = _json(ex.request_body) if ex.request_body else None
    if body is not None and schema_check.is_json(ex.request_type):
        lines.append(_block(f"request {ex.method} {path}", _mask(body, names, extra)))
    elif ex.request_body:
        lines.append(f"({len(ex.request_body)} bytes of `{ex.request_type}`)\n")
    if schema_check.is_json(ex.response_type) and ex.response_body:
        lines.append(f"\n→ `{ex.status}`\n\n")
        answer = _mask(_json(ex.response_body), names, extra)
        lines.append(_block(f"response {ex.status} {ex.method} {path}", answer))
    else:
        lines.append(f"\n→ `{ex.status}` (`{ex.response_type or 'no body'}`)\n")
    return "".join(lines)


HEADER = """# Walkthrough: one session, request by request

A transcript of a real run (`tests/schema/walkthrough.py`, against a live daphne and
the test database): two providers sign in, register their identity keys and devices,
one opens a case and adds the other, they talk over the case socket, an image is
uploaded and sent, and the second reconnects and resumes. Every JSON request, answer
and frame is shown in order; ids are replaced by placeholders (`<case>`, `<pcp>`,
`<derm>`, `<pcp-device>`, `<derm-device>`, `<image-blob>`, `<id-N>` for others) and
base64 longer than 100 characters by `<base64 N bytes>`. Every block is checked against
/api/openapi.json and /api/asyncapi.json by `tests/schema/test_walkthrough.py`. Headers
are named, not shown: the session cookie and `X-CSRFToken` on every call, and
`X-Collab-Device` with a fresh `X-Collab-Proof` (docs/protocol.md §2) where listed.
The protocol itself is in docs/protocol.md and docs/protocol-crypto.md.
"""


def placeholders_back(value: Any) -> Any:
    """A doc block as a checkable value: ``<name>`` -> a UUID fixed by the name,
    ``<base64 N bytes>`` -> base64 of N zero bytes."""
    if isinstance(value, dict):
        return {k: placeholders_back(v) for k, v in value.items()}
    if isinstance(value, list):
        return [placeholders_back(v) for v in value]
    if isinstance(value, str):
        sized = PLACEHOLDER_B64.match(value)
        if sized:
            return b64e(bytes(int(sized.group(1))))
        return placeholder_text(value)
    return value


def placeholder_text(text: str) -> str:
    return PLACEHOLDER_ID.sub(
        lambda m: (
            str(uuid.uuid5(uuid.NAMESPACE_URL, m.group(1))) if m.group(1) != "session" else "x"
        ),
        text,
    )


BLOCK = re.compile(r"^```json (request|response|frame) ([^\n]*)\n(.*?)\n```$", re.M | re.S)


def doc_blocks(text: str) -> list[tuple[str, list[str], Any]]:
    """(kind, info words, value) of every JSON block in the doc."""
    return [(kind, info.split(), json.loads(body)) for kind, info, body in BLOCK.findall(text)]
