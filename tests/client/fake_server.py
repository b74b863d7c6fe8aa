"""An adversarial server in-process for SDK trust tests: CollabClient.call is answered
from dicts the test controls (log, key directory, join requests, pin book)."""

from __future__ import annotations

import uuid
from typing import Any

from collab.client.case_state import CaseState
from collab.client.errors import ServerRefusedError
from collab.client.keys import DeviceKeys, Identity
from collab.client.keystore import KeystoreState
from collab.client.sdk import CollabClient
from collab.crypto.log import LogEntry
from collab.crypto.wire import b64d, b64e


class Person:
    def __init__(self, name: str) -> None:
        self.name = name
        self.identity = Identity.generate(uuid.uuid4())
        self.id = self.identity.user_id
        self.device = DeviceKeys.generate(self.id)
        self.cert = self.identity.certify(self.device)

    def substitute(self) -> Identity:
        """A key the server makes up for this person's user id."""
        return Identity.generate(self.id)

    def keys(self, identity: Identity | None = None, role: str = "provider") -> dict[str, Any]:
        identity = identity or self.identity
        cert = self.cert if identity is self.identity else \
            identity.certify(DeviceKeys.generate(self.id))
        return {"uik_pub": b64e(identity.uik_pub), "devices": [cert.to_wire()],
                "role": role, "display_name": self.name}


class FakeServer:
    def __init__(self) -> None:
        self.logs: dict[uuid.UUID, list[LogEntry]] = {}
        self.keys: dict[uuid.UUID, dict[str, Any]] = {}
        self.joins: dict[uuid.UUID, list[Any]] = {}
        self.pins: dict[uuid.UUID, tuple[int, str, str]] = {}  # per signed-in user
        self.revoked: dict[uuid.UUID, list[str]] = {}  # per case: its revoked_devices
        # (user, case) -> epoch -> sealed item (base64), as the key-backup endpoints keep
        self.backup: dict[tuple[uuid.UUID, uuid.UUID], dict[int, str]] = {}

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             who: uuid.UUID | None = None) -> Any:
        parts = path.split("?")[0].split("/")
        if path == "/api/identity/pins":
            assert who is not None
            if method == "GET":
                if who not in self.pins:
                    raise ServerRefusedError("no pins", code="no_pins", status=404)
                version, blob, sig = self.pins[who]
                return {"version": version, "blob": blob, "sig": sig}
            assert body is not None
            self.pins[who] = (body["version"], body["blob"], body["sig"])
            return {"version": body["version"]}
        if path.startswith("/api/key-backup"):
            assert who is not None
            if method == "PUT":
                assert body is not None
                for item in body["items"]:
                    kept = self.backup.setdefault((who, uuid.UUID(item["case"])), {})
                    kept.setdefault(item["epoch"], item["item"])
                return {"stored": len(body["items"]), "kept": 0}
            query = dict(q.split("=") for q in path.split("?")[1].split("&"))
            held = self.backup.get((who, uuid.UUID(query["case"])), {})
            after = int(query["after"])
            return {"items": [{"epoch": e, "item": held[e]} for e in sorted(held) if e > after],
                    "more": False}
        if len(parts) == 4 and parts[2] == "cases" and method == "GET":
            return {"id": parts[3], "revoked_devices": self.revoked.get(uuid.UUID(parts[3]), [])}
        if path.startswith("/api/users/") and path.endswith("/keys"):
            return self.keys[uuid.UUID(parts[3])]
        if "/log?after=" in path:
            after = int(path.split("=")[1])
            return {"entries": [{"entry": b64e(e.encode())}
                                for e in self.logs[uuid.UUID(parts[3])] if e.epoch > after]}
        if path.endswith("/log") and method == "POST":
            assert body is not None
            self.logs[uuid.UUID(parts[3])].append(LogEntry.decode(b64d(body["entry"])))
            return {}
        if path.endswith("/join-requests"):
            return {"join_requests": self.joins.get(uuid.UUID(parts[3]), [])}
        raise AssertionError(f"unexpected {method} {path}")

    def client(self, person: Person) -> CollabClient:
        state = KeystoreState(server="http://fake")
        state.user_id, state.identity = person.id, person.identity
        state.device, state.cert = person.device, person.cert
        client = CollabClient(state=state)
        def call(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
            return self.call(method, path, body, person.id)

        client.call = call  # type: ignore[method-assign]
        return client

    def new_case(self, owner: Person) -> uuid.UUID:
        state = CaseState(uuid.uuid4(), owner.device)
        self.logs[state.case_id] = [state.genesis(owner.cert, owner.identity.uik_pub)]
        return state.case_id

    def request(self, case_id: uuid.UUID, person: Person, kind: str = "claim",
                role: str = "provider", request_id: int = 1) -> None:
        self.joins.setdefault(case_id, []).append({
            "id": request_id, "user": str(person.id), "kind": kind,
            "requested_by": str(person.id), "created_at": "", "display_name": person.name,
            "role": role})
