"""A test participant: real CR1 keys (collab.client) over Django's test client."""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.test import Client

from collab.accounts.models import User
from collab.client.case_state import CaseState
from collab.client.http import ApiError, HttpSession
from collab.client.keys import DeviceKeys, Identity
from collab.crypto.actions import AddUserBody, Body, RemoveUserBody, apply_action
from collab.crypto.devcert import DeviceCert
from collab.crypto.log import LogEntry, action_for, seal_entry
from collab.crypto.roster import Role
from collab.crypto.wire import b64d, b64e
from tests.support.users import make_user, verified_client


class _LiveResponse:
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status_code = status
        self._body = body
        self.content = json.dumps(body).encode()

    def json(self) -> dict[str, Any]:
        return self._body

    @classmethod
    def of(cls, http: HttpSession, method: str, path: str, body: Any) -> _LiveResponse:
        try:
            response = http.json(method, path, body)
        except ApiError as error:
            return cls(error.status, error.body)
        return cls(response.status, response.body)


class Actor:
    def __init__(self, username: str, role: str = "provider", specialty: str = "") -> None:
        self.user: User = make_user(username, role=role, specialty=specialty)
        self.client: Client = verified_client(self.user)
        self.identity = Identity.generate(self.user.pk)
        self.device = DeviceKeys.generate(self.user.pk)
        self.cert: DeviceCert = self.identity.certify(self.device)
        self.cases: dict[uuid.UUID, CaseState] = {}
        self.http: HttpSession | None = None

    # --- HTTP -------------------------------------------------------------------
    def go_live(self, base_url: str) -> Actor:
        """Send further calls to a running server (same database and session)."""
        self.http = HttpSession(base_url, str(self.device.device_id))
        self.http.use_session(self.client.cookies["sessionid"].value)
        return self

    @property
    def web(self) -> HttpSession:
        assert self.http is not None, "call go_live() first"
        return self.http

    @property
    def session_id(self) -> str:
        return str(self.client.cookies["sessionid"].value)

    def call(self, method: str, path: str, body: Any = None, device: bool = True) -> Any:
        if self.http is not None:
            return _LiveResponse.of(self.http, method, path, body)
        headers = {"HTTP_X_COLLAB_DEVICE": str(self.device.device_id)} if device else {}
        fn = getattr(self.client, method.lower())
        if body is None:
            return fn(path, **headers)
        return fn(path, data=json.dumps(body), content_type="application/json", **headers)

    def register(self) -> Actor:
        assert (
            self.call("POST", "/api/identity", {"uik_pub": b64e(self.identity.uik_pub)}).status_code
            == 200
        )
        response = self.call("POST", "/api/devices", {"cert": self.cert.to_wire(), "name": "test"})
        assert response.status_code == 201, response.content
        return self

    # --- cases --------------------------------------------------------------------
    def open_case(self, specialty: str = "Dermatology", urgency: str = "routine") -> CaseState:
        state = CaseState(uuid.uuid4(), self.device)
        genesis = state.genesis(self.cert, self.identity.uik_pub)
        response = self.call(
            "POST",
            "/api/cases",
            {
                "genesis": b64e(genesis.encode()),
                "specialty": specialty,
                "urgency": urgency,
            },
        )
        assert response.status_code == 201, response.content
        state.accept_entries([genesis])
        self.cases[state.case_id] = state
        return state

    def join(self, case_id: uuid.UUID) -> CaseState:
        state = CaseState(case_id, self.device)
        self.cases[case_id] = state
        self.sync(state)
        return state

    def sync(self, state: CaseState) -> None:
        response = self.call("GET", f"/api/cases/{state.case_id}/log")
        assert response.status_code == 200, response.content
        entries = [LogEntry.decode(b64d(e["entry"])) for e in response.json()["entries"]]
        state.accept_entries(entries)

    def forge(self, state: CaseState, body: Body) -> LogEntry:
        """A correctly signed entry that skips the client's own policy checks."""
        head = state.head
        return seal_entry(
            author_seed=self.device.dsk_seed,
            case_id=state.case_id,
            epoch=head.epoch + 1,
            prev_hash=head.entry_hash(),
            author_user_id=self.user.pk,
            author_device_id=self.device.device_id,
            created_ms=1,
            action=action_for(body),
            action_body=body.encode(),
            roster=apply_action(
                head.roster, epoch=head.epoch + 1, author_user_id=self.user.pk, body=body
            ),
            epoch_key=bytes(32),
            epk_secret=bytes(range(32)),
        )

    def submit(self, state: CaseState, body: Body, forged: bool = False) -> Any:
        entry = self.forge(state, body) if forged else state.next_entry(body)
        response = self.call(
            "POST", f"/api/cases/{state.case_id}/log", {"entry": b64e(entry.encode())}
        )
        if response.status_code == 201:
            state.accept_entries([entry])
        return response

    def add(
        self, state: CaseState, other: Actor, role: Role = Role.MEMBER, forged: bool = False
    ) -> Any:
        keys = self.call("GET", f"/api/users/{other.user.pk}/keys").json()
        devices = tuple(DeviceCert.from_wire(d) for d in keys["devices"])
        body = AddUserBody(other.user.pk, role, b64d(keys["uik_pub"], 32), devices)
        return self.submit(state, body, forged)

    def remove(self, state: CaseState, other: Actor) -> Any:
        return self.submit(state, RemoveUserBody(other.user.pk))
