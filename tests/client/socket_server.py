"""A case-room socket server in-process, for the SDK's recovery tests: it speaks the
client's side of the protocol (hello, resume pages, send/ack with the server's
client_msg_id de-duplication) and the test scripts its faults: closes with a code,
handshakes refused with an HTTP status, acks lost, pages that never arrive, resync hellos.

The log, key directory and the rest of HTTP come from tests/client/fake_server.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from collab.client.case_state import CaseState
from collab.client.sdk import CollabClient
from collab.crypto.envelope import Envelope
from tests.client.fake_server import FakeServer, Person


class RoomServer:
    def __init__(self, srv: FakeServer, owner: Person) -> None:
        self.srv = srv
        self.owner = owner
        # The owner's own sealer (another run of the same device), for messages "from
        # the room"; the case has one epoch whose key is wrapped to the owner's device.
        self.sealer = CaseState(uuid.uuid4(), owner.device)
        genesis = self.sealer.genesis(owner.cert, owner.identity.uik_pub)
        self.sealer.accept_entries([genesis])
        self.case_id = self.sealer.case_id
        srv.logs[self.case_id] = [genesis]
        self.stored: list[dict[str, Any]] = []  # {"seq", "stored_at", "envelope", "urgent"}
        self.by_msg_id: dict[str, int] = {}
        self.sends: list[dict[str, Any]] = []  # every envelope received, duplicates too
        self.resumes: list[tuple[int, int]] = []  # (after, limit)
        self.handshakes = 0
        self.refuse_next: list[int] = []  # HTTP statuses for the next handshakes
        # Per send frame: "drop_after_store", "refuse:<code>", "hold" (no answer).
        self.send_script: list[str] = []
        self.page_limit_ok: int | None = None  # resume with a larger limit: the page "never
        # arrives" (the socket closes 1011, as a frame over daphne's limit did)
        self.sockets: list[ServerConnection] = []
        self.connected = asyncio.Event()
        self._server: Server | None = None
        self.port = 0

    # --- lifecycle ----------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def running(self, port: int = 0) -> AsyncIterator[RoomServer]:
        async with serve(self._handle, "127.0.0.1", port,
                         process_request=self._process_request) as server:
            self._server = server
            self.port = int(next(iter(server.sockets)).getsockname()[1])
            yield self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> CollabClient:
        client = self.srv.client(self.owner)
        client.state.server = self.url
        client.backoff_first, client.backoff_max = 0.01, 0.05
        return client

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self.handshakes += 1
        if self.refuse_next:
            status = HTTPStatus(self.refuse_next.pop(0))
            return Response(status.value, status.phrase, Headers(), b"")
        return None

    # --- what the room holds ------------------------------------------------------------
    def post(self, text: str) -> dict[str, Any]:
        """A message stored "by someone else" (not announced: see announce)."""
        envelope = self.sealer.seal({"text": text})
        return self._store(envelope)

    def _store(self, envelope: Envelope) -> dict[str, Any]:
        # The real server's stored-message shape (collab/cases/wire.py message_wire).
        item: dict[str, Any] = {"seq": len(self.stored) + 1,
                                "stored_at": datetime.now(UTC).isoformat(),
                                "envelope": envelope.to_wire(), "urgent": False}
        self.stored.append(item)
        self.by_msg_id[envelope.to_wire()["client_msg_id"]] = item["seq"]
        return item

    def hello(self, **extra: Any) -> dict[str, Any]:
        return {"type": "hello", "case": str(self.case_id), "head_epoch": 0,
                "last_seq": len(self.stored), **extra}

    async def announce(self, item: dict[str, Any]) -> None:
        await self.broadcast({"type": "message", **item})

    async def broadcast(self, frame: dict[str, Any]) -> None:
        for ws in list(self.sockets):
            with contextlib.suppress(Exception):
                await ws.send(json.dumps(frame))

    async def close_all(self, code: int, error: str | None = None) -> None:
        for ws in list(self.sockets):
            with contextlib.suppress(Exception):
                if error:
                    await ws.send(json.dumps({"type": "error", "code": error,
                                              "message": error.replace("_", " ")}))
                await ws.close(code, error or "")

    # --- the protocol -------------------------------------------------------------------
    async def _handle(self, ws: ServerConnection) -> None:
        self.sockets.append(ws)
        self.connected.set()
        try:
            await ws.send(json.dumps(self.hello()))
            async for raw in ws:
                await self._frame(ws, json.loads(raw))
        except Exception:  # noqa: S110 - a dropped client ends its handler
            pass
        finally:
            self.sockets.remove(ws)
            if not self.sockets:
                self.connected.clear()

    async def _frame(self, ws: ServerConnection, frame: dict[str, Any]) -> None:
        ref = frame.get("ref")
        if frame.get("type") == "resume":
            after, limit = int(frame["after"]), int(frame.get("limit", 100))
            self.resumes.append((after, limit))
            if self.page_limit_ok is not None and limit > self.page_limit_ok:
                await ws.close(1011, "frame too large")
                return
            items = [i for i in self.stored if i["seq"] > after]
            await ws.send(json.dumps({"type": "messages", "ref": ref, "after": after,
                                      "items": items[:limit], "more": len(items) > limit}))
        elif frame.get("type") == "send":
            wire = frame["envelope"]
            self.sends.append(wire)
            step = self.send_script.pop(0) if self.send_script else "ack"
            if step == "hold":
                return  # no answer at all
            if step.startswith("refuse:"):
                code = step.split(":", 1)[1]
                await ws.send(json.dumps({"type": "error", "ref": ref, "code": code,
                                          "message": code}))
                return
            msg_id = wire["client_msg_id"]
            duplicate = msg_id in self.by_msg_id
            seq = self.by_msg_id[msg_id] if duplicate else \
                self._store(Envelope.from_wire(wire))["seq"]
            if step == "drop_after_store":
                ws.transport.abort()  # stored, and the ack is lost with the connection
                return
            await ws.send(json.dumps({"type": "ack", "ref": ref, "seq": seq, "epoch": 0,
                                      "client_msg_id": msg_id, "duplicate": duplicate}))
