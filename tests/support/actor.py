"""A test participant: real CR1 keys (collab.client) over Django's test client."""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

from django.test import Client

from collab.accounts.models import User
from collab.client.case_state import CaseState
from collab.client.http import ApiError, HttpSession
from collab.client.keys import DeviceKeys, Identity
from collab.crypto.actions import AddUserBody, Body, RemoveUserBody, apply_action
from collab.crypto.devcert import DeviceCert
from collab.crypto.devproof import sign_http_proof
from collab.crypto.log import LogEntry, action_for, seal_entry
from collab.crypto.roster import Role
from collab.crypto.wire import b64d, b64e
from tests.support import schema_check
from tests.support.users import make_user, verified_client
from tests.support.ws import remember_device

NONCE_PATH = "/api/device-nonce"
NONCE_REUSE_SECONDS = 200  # nonces live 300 s; a proof's one-time id is its jti


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class ProofSigner:
    """Signs ``X-Collab-Proof`` for one device (protocol.md §2) with a cached nonce."""

    def __init__(self, device_id: uuid.UUID, dsk_seed: bytes, fetch_nonce: Callable[[], str]):
        self.device_id = device_id
        self.dsk_seed = dsk_seed
        self.fetch_nonce = fetch_nonce
        self.nonce: str | None = None
        self.nonce_at = 0.0

    def refresh(self) -> None:
        self.nonce = None

    def header(self, method: str, path: str, body: bytes, *, nonce: str | None = None,
               time_ms: int | None = None, jti: bytes | None = None,
               device_id: uuid.UUID | None = None) -> str:
        if nonce is None:
            if self.nonce is None or time.time() - self.nonce_at > NONCE_REUSE_SECONDS:
                self.nonce, self.nonce_at = self.fetch_nonce(), time.time()
            nonce = self.nonce
        time_ms = int(time.time() * 1000) if time_ms is None else time_ms
        jti = os.urandom(16) if jti is None else jti
        sig = sign_http_proof(
            self.dsk_seed, device_id=device_id or self.device_id, time_ms=time_ms,
            method=method, path=path, body=body, nonce=nonce, jti=jti,
        )
        return f"{time_ms}.{nonce}.{_b64url(jti)}.{_b64url(sig)}"


class ProvingSession(HttpSession):
    """The SDK's HTTP session with a device proof on every request that names the
    device: the SDK's own when it signs them (given ``device_key``), else this helper's."""

    signer: ProofSigner

    def _request(
        self, method: str, path: str, data: bytes | None, content_type: str | None,
        **kwargs: Any,
    ) -> urllib.request.Request:
        request = super()._request(method, path, data, content_type, **kwargs)
        signs_itself = request.has_header("X-collab-proof") or not kwargs.get("prove", True)
        if self.device_id and path != NONCE_PATH and not signs_itself:
            request.add_header("X-Collab-Proof", self.signer.header(method, path, data or b""))
        return request


def proving_session(base_url: str, device: DeviceKeys, signer: ProofSigner) -> ProvingSession:
    sdk_signs: dict[str, Any] = {"device_key": device.dsk_seed}
    try:
        http = ProvingSession(base_url, str(device.device_id), **sdk_signs)
    except TypeError:  # an SDK without device proofs
        http = ProvingSession(base_url, str(device.device_id))
    http.signer = signer
    return http


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
            answer = cls(error.status, error.body)
        else:
            answer = cls(response.status, response.body)
        # A live server's answer (another process): checked here, not by the middleware.
        schema_check.check_live_http(method, path, body, answer.status_code, answer._body)
        return answer


class Actor:
    def __init__(self, username: str, role: str = "provider", specialty: str = "") -> None:
        self.user: User = make_user(username, role=role, specialty=specialty)
        self.client: Client = verified_client(self.user)
        self.identity = Identity.generate(self.user.pk)
        self.device = DeviceKeys.generate(self.user.pk)
        self.cert: DeviceCert = self.identity.certify(self.device)
        self.cases: dict[uuid.UUID, CaseState] = {}
        self.http: HttpSession | None = None
        self._signer: ProofSigner | None = None
        remember_device(self.device.device_id, self.device.dsk_seed)

    @property
    def signer(self) -> ProofSigner:
        """Signs proofs for this actor's device (re-made when the device is replaced)."""
        signer = getattr(self, "_signer", None)
        if signer is None or signer.device_id != self.device.device_id:
            remember_device(self.device.device_id, self.device.dsk_seed)
            self._signer = ProofSigner(
                self.device.device_id, self.device.dsk_seed, self._fetch_nonce
            )
        assert self._signer is not None
        return self._signer

    def _fetch_nonce(self) -> str:
        if self.http is not None:
            return str(self.http.json("GET", NONCE_PATH).body["nonce"])
        response = self.client.get(NONCE_PATH)
        assert response.status_code == 200, response.content
        return str(response.json()["nonce"])

    # --- HTTP -------------------------------------------------------------------
    def go_live(self, base_url: str) -> Actor:
        """Send further calls to a running server (same database and session)."""
        http = proving_session(base_url, self.device, self.signer)
        http.use_session(self.client.cookies["sessionid"].value)
        self.http = http
        return self

    @property
    def web(self) -> HttpSession:
        assert self.http is not None, "call go_live() first"
        return self.http

    @property
    def session_id(self) -> str:
        return str(self.client.cookies["sessionid"].value)

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        device: bool = True,
        *,
        as_device: uuid.UUID | None = None,
        proof: bool | str = True,
    ) -> Any:
        """A request as this actor's device, with a device proof. ``as_device`` names
        another device in X-Collab-Device (the proof is still signed with this actor's
        key, as an attacker would); ``proof=False`` sends none, a string sends that."""
        if self.http is not None:
            return _LiveResponse.of(self.http, method, path, body)
        data = json.dumps(body).encode() if body is not None else b""
        return self.send(method, path, data, "application/json", device=device,
                         as_device=as_device, proof=proof)

    def send(
        self,
        method: str,
        path: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        *,
        device: bool = True,
        as_device: uuid.UUID | None = None,
        proof: bool | str = True,
        extra: dict[str, str] | None = None,
    ) -> Any:
        """Raw bytes through Django's test client, with the device headers."""
        headers: dict[str, str] = dict(extra or {})
        if device:
            named = as_device or self.device.device_id
            headers["HTTP_X_COLLAB_DEVICE"] = str(named)
            if isinstance(proof, str):
                headers["HTTP_X_COLLAB_PROOF"] = proof
            elif proof:
                headers["HTTP_X_COLLAB_PROOF"] = self.signer.header(
                    method, path, data, device_id=named
                )
        fn = getattr(self.client, method.lower())
        if not data and method in ("GET", "HEAD", "DELETE"):
            return fn(path, **headers)
        return fn(path, data=data, content_type=content_type, **headers)

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
