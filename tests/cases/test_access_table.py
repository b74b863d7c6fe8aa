"""Every /api/ route, and the case socket, against every kind of caller that must be
refused: an outsider, a removed member, a patient (where patients are excluded), a
revoked device, another user's device, and an unproven device.

The table is the contract: a route added to the URL configuration without a row here
fails ``test_every_api_route_is_in_the_table``.
"""

from __future__ import annotations

import io
import json
import os
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.urls import URLPattern, URLResolver, get_resolver

from collab.accounts import devices
from collab.asgi import application
from collab.cases.models import JoinRequest, Notification
from collab.client.keys import DeviceKeys
from collab.crypto.attachment import AttachmentEncryptor
from collab.crypto.keybackup import ITEM_LEN
from collab.crypto.wire import b64e
from tests.support.actor import Actor, ProofSigner
from tests.support.users import session_cookie, verified_client
from tests.support.ws import DEVICE_SEEDS, prove_frame, room_path

OUTSIDER = "outsider"
REMOVED = "removed member"
PATIENT = "patient"
REVOKED = "revoked device"
FOREIGN = "another user's device"
UNPROVEN = "unproven device"
FORGED = "proof by another key"
EVERY_USER = (OUTSIDER, REMOVED)
EVERY_DEVICE = (REVOKED, FOREIGN, UNPROVEN, FORGED)


@dataclass
class World:
    pcp: Actor
    outsider: Actor
    removed: Actor
    nurse: Actor  # a member whose only device is revoked
    patient: Actor
    ids: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    kinds: tuple[str, ...]
    body: Any = None
    device: bool = False  # acts as a device: X-Collab-Device and X-Collab-Proof
    raw: bytes | None = None

    def url(self, world: World) -> str:
        return self.path.format(**world.ids)


def _upload(actor: Actor, case_id: uuid.UUID, data: bytes) -> tuple[str, str, bytes]:
    enc = AttachmentEncryptor()
    chunks = list(enc.chunks(io.BytesIO(data)))
    size = sum(len(c) for c in chunks)
    blob_id = actor.call("POST", f"/api/cases/{case_id}/blobs", {"size": size}).json()["blob_id"]
    return blob_id, b64e(enc.manifest(uuid.UUID(blob_id), mime="x/y").root), b"".join(chunks)


@pytest.fixture
def world() -> World:
    return build_world()


def build_world() -> World:
    pcp = Actor("pcp").register()
    outsider = Actor("out", specialty="Cardiology").register()
    removed = Actor("gone", specialty="Cardiology").register()
    nurse = Actor("nurse").register()
    patient = Actor("pat", role="patient").register()
    state = pcp.open_case(specialty="Dermatology")
    assert pcp.add(state, removed).status_code == 201
    assert pcp.add(state, nurse).status_code == 201
    assert pcp.remove(state, removed).status_code == 201
    devices.device_revoke(actor=nurse.user, device_id=nurse.device.device_id)
    nurse.client = verified_client(nurse.user)  # a session the revoked device never used
    case = state.case_id
    blob_id, root, ct = _upload(pcp, case, os.urandom(100))
    assert pcp.send("PUT", f"/api/blobs/{blob_id}/parts/0", ct).status_code == 200
    assert pcp.call("POST", f"/api/blobs/{blob_id}/complete", {"root": root}).status_code == 200
    upload_id, _, _ = _upload(pcp, case, os.urandom(100))
    colleague = Actor("col", specialty="Dermatology").register()
    join = JoinRequest.objects.create(case_id=case, user=colleague.user, kind="invite",
                                      requested_by=pcp.user)
    invitation = pcp.call("POST", f"/api/cases/{case}/invitations").json()["id"]
    notice = Notification.objects.create(user=pcp.user, kind="consult_claimed", case_id=case)
    world = World(pcp, outsider, removed, nurse, patient)
    world.ids = {
        "case": str(case), "blob": blob_id, "upload": upload_id, "join": str(join.pk),
        "invitation": invitation, "notice": str(notice.pk), "pcp": str(pcp.user.pk),
    }
    return world


BACKUP_ITEM = {"items": [{"case": "{case}", "epoch": 0, "item": b64e(bytes(ITEM_LEN))}]}
ESCALATION_POLICY = {"first_reminder_minutes": 2, "repeat_minutes": 2, "repeat_count": 1,
                     "steps": []}

ROUTES: list[Route] = [
    Route("POST", "/api/cases", (PATIENT, *EVERY_DEVICE), {"genesis": b64e(b"x")}, device=True),
    Route("GET", "/api/cases/{case}", EVERY_USER),
    Route("GET", "/api/cases/{case}/log", EVERY_USER),
    Route("POST", "/api/cases/{case}/log", (*EVERY_USER, *EVERY_DEVICE), {"entry": b64e(b"x")},
          device=True),
    Route("GET", "/api/cases/{case}/wraps", (*EVERY_USER, *EVERY_DEVICE), device=True),
    Route("GET", "/api/cases/{case}/messages", (*EVERY_USER, *EVERY_DEVICE), device=True),
    Route("POST", "/api/cases/{case}/messages/0/recall", (*EVERY_USER, *EVERY_DEVICE),
          {"recalled_ms": 1, "sig": b64e(bytes(64))}, device=True),
    Route("POST", "/api/cases/{case}/blobs", (*EVERY_USER, *EVERY_DEVICE), {"size": 100},
          device=True),
    Route("PUT", "/api/blobs/{upload}/parts/0", (*EVERY_USER, *EVERY_DEVICE), device=True,
          raw=bytes(100)),
    Route("POST", "/api/blobs/{upload}/complete", (*EVERY_USER, *EVERY_DEVICE),
          {"root": b64e(bytes(64))}, device=True),
    Route("GET", "/api/blobs/{blob}", (*EVERY_USER, *EVERY_DEVICE), device=True),
    Route("GET", "/api/blobs/{upload}/upload", (*EVERY_USER, *EVERY_DEVICE), device=True),
    Route("GET", "/api/cases/{case}/join-requests", EVERY_USER),
    Route("POST", "/api/cases/{case}/join-requests", EVERY_USER,
          {"kind": "invite", "user": "{pcp}"}),
    Route("POST", "/api/join-requests/{join}/decline", (*EVERY_USER, PATIENT), {}),
    Route("POST", "/api/join-requests/{join}/withdraw", (*EVERY_USER, PATIENT)),
    Route("GET", "/api/cases/{case}/invitations", EVERY_USER),
    Route("POST", "/api/cases/{case}/invitations", (*EVERY_USER, PATIENT)),
    Route("POST", "/api/cases/{case}/invitations", (*EVERY_DEVICE,),
          {"invite_pub": b64e(bytes(32)), "invite_sig": b64e(bytes(64)),
           "inviter_device": "{device}", "created_ms": 1}, device=True),
    Route("POST", "/api/invitations/{invitation}/revoke", (*EVERY_USER, PATIENT)),
    Route("POST", "/api/invitations/{invitation}/proof", (*EVERY_USER, PATIENT),
          {"proof_sig": b64e(bytes(64))}),
    Route("POST", "/api/cases/{case}/status", EVERY_USER, {"status": "accepted"}),
    Route("GET", "/api/cases/{case}/urgent", EVERY_USER),
    Route("GET", "/api/cases/{case}/receipts", (*EVERY_USER, *EVERY_DEVICE), device=True),
    Route("POST", "/api/cases/{case}/leave", EVERY_USER,
          {"epoch": 0, "device": "{device}", "signature": b64e(bytes(64))}),
    Route("GET", "/api/consults/queue", (PATIENT,)),
    Route("POST", "/api/consults/{case}/claim", (*EVERY_USER, PATIENT)),
    Route("POST", "/api/notifications/{notice}/read", (*EVERY_USER, PATIENT)),
    Route("GET", "/api/users/{pcp}/keys", (PATIENT,)),
    Route("GET", "/api/directory?q=pc", (PATIENT,)),
    Route("GET", "/api/cases/{case}/access-log", EVERY_USER),
    Route("GET", "/api/audit/export", (*EVERY_USER, PATIENT)),
    Route("GET", "/api/audit/checkpoints", (*EVERY_USER, PATIENT)),
    Route("GET", "/api/key-backup?case={case}", (*EVERY_USER, *EVERY_DEVICE), device=True),
    Route("PUT", "/api/key-backup", (*EVERY_USER, *EVERY_DEVICE), BACKUP_ITEM, device=True),
    # Retention (admins only; GET of the policy is open to anyone signed in).
    Route("PUT", "/api/retention/policy", (*EVERY_USER, PATIENT), {"lifespan_days": 30}),
    Route("GET", "/api/retention/cases", (*EVERY_USER, PATIENT)),
    Route("POST", "/api/retention/cases/{case}/hold", (*EVERY_USER, PATIENT)),
    Route("DELETE", "/api/retention/cases/{case}/hold", (*EVERY_USER, PATIENT)),
    # On-call (reads for providers and admins, writes for admins only).
    Route("GET", "/api/oncall/services", (PATIENT,)),
    Route("POST", "/api/oncall/services", (*EVERY_USER, PATIENT), {"specialty": "Dermatology"}),
    Route("GET", "/api/oncall/now?specialty=Dermatology", (PATIENT,)),
    Route("GET", "/api/oncall/services/0/shifts", (PATIENT,)),
    Route("POST", "/api/oncall/services/0/shifts", (*EVERY_USER, PATIENT),
          {"primary": "{pcp}", "starts_at": "2026-12-01T08:00+00:00",
           "ends_at": "2026-12-01T16:00+00:00"}),
    Route("GET", "/api/oncall/services/0/providers", (*EVERY_USER, PATIENT)),
    Route("POST", "/api/oncall/shifts/0/remove", (*EVERY_USER, PATIENT)),
    # Escalation (the default: anyone reads, admins write; a case's: members read,
    # its owners and admins write).
    Route("PUT", "/api/escalation/policy", (*EVERY_USER, PATIENT), ESCALATION_POLICY),
    Route("GET", "/api/cases/{case}/escalation-policy", EVERY_USER),
    Route("PUT", "/api/cases/{case}/escalation-policy", EVERY_USER, ESCALATION_POLICY),
    Route("DELETE", "/api/cases/{case}/escalation-policy", EVERY_USER),
]

# Routes any signed-in user may call for themselves: nothing of anyone else's to refuse.
OWN_ONLY = {
    "/api/identity", "/api/identity/backup", "/api/identity/pins", "/api/devices",
    "/api/devices/<uuid:device_id>/revoke", "/api/join-requests", "/api/invitations/mine",
    "/api/notifications", "/api/device-nonce", "/api/cases",
}
# Open to anyone, signed in or not (tests/schema/test_openapi_routes.py).
PUBLIC = {"/api/openapi.json", "/api/asyncapi.json"}

EXPECTED_DEVICE_CODES = {
    REVOKED: (403, "device_revoked"),
    FOREIGN: (403, "unknown_device"),
    UNPROVEN: (401, "bad_device_proof"),
    FORGED: (401, "bad_device_proof"),
}


def _fill(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**ids)
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, ids) for v in value]
    return value


def _attempt(world: World, route: Route, kind: str) -> Any:
    """The request as ``kind`` would make it."""
    actor = {OUTSIDER: world.outsider, REMOVED: world.removed, PATIENT: world.patient,
             REVOKED: world.nurse}.get(kind, world.pcp)
    ids = {**world.ids, "device": str(actor.device.device_id)}
    url = route.path.format(**ids)
    as_device: uuid.UUID | None = None
    proof: bool | str = True
    if kind == FOREIGN:
        as_device = world.outsider.device.device_id
        ids["device"] = str(as_device)
    elif kind == UNPROVEN:
        proof = "1.x.y.z"
    data = route.raw if route.raw is not None else (
        b"" if route.body is None else json.dumps(_fill(route.body, ids)).encode()
    )
    if kind == FORGED:
        # A well-formed proof for the right device, signed with some other key.
        stranger = DeviceKeys.generate(actor.user.pk)
        proof = ProofSigner(actor.device.device_id, stranger.dsk_seed, actor.signer.fetch_nonce
                            ).header(route.method, url, data)
    content_type = "application/octet-stream" if route.raw is not None else "application/json"
    return actor.send(route.method, url, data, content_type, as_device=as_device, proof=proof)


KINDS = (OUTSIDER, REMOVED, PATIENT, REVOKED, FOREIGN, UNPROVEN, FORGED)


@pytest.mark.django_db
@pytest.mark.parametrize("kind", KINDS)
def test_every_route_refuses(world: World, kind: str) -> None:
    """One world per kind of caller (building it is the slow part), every route tried."""
    wrong = []
    for route in (r for r in ROUTES if kind in r.kinds):
        response = _attempt(world, route, kind)
        body = response.json()
        got = (response.status_code, body.get("error"))
        if kind in EXPECTED_DEVICE_CODES:
            ok = got == EXPECTED_DEVICE_CODES[kind] and (got[0] != 401 or bool(body["nonce"]))
        else:
            ok = got[0] in (403, 404)
        if not ok:
            wrong.append((route.method, route.path, got))
    assert not wrong, wrong


@pytest.mark.django_db
@pytest.mark.hostile_input  # leaves out the device headers the description requires
def test_missing_proof_is_refused_when_required(world: World, settings: Any) -> None:
    settings.DEVICE_PROOF_REQUIRED = True
    for route in ROUTES:
        if not route.device:
            continue
        ids = {**world.ids, "device": str(world.pcp.device.device_id)}
        data = route.raw if route.raw is not None else (
            b"" if route.body is None
            else json.dumps(_fill(route.body, ids)).encode()
        )
        for device in (True, False):
            response = world.pcp.send(
                route.method, route.path.format(**ids), data,
                "application/octet-stream" if route.raw is not None else "application/json",
                device=device, proof=False,
            )
            assert (response.status_code, response.json()["error"]) == (
                401, "device_proof_required"
            ), route


def _patterns(resolver: URLResolver, prefix: str = "") -> list[str]:
    out: list[str] = []
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver):
            out += _patterns(entry, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            out.append("/" + prefix + str(entry.pattern))
    return out


def _shape(path: str) -> str:
    """``/api/cases/{case}/log`` -> ``/api/cases/*/log`` (and the same for URL patterns)."""
    path = path.split("?", 1)[0]
    return re.sub(r"\{[a-z_]+\}|<[a-z]+:[a-z_]+>|\b0\b", "*", path)


def test_every_api_route_is_in_the_table() -> None:
    routes = {p for p in _patterns(get_resolver()) if p.startswith("/api/")}
    covered = {_shape(r.path) for r in ROUTES} | {_shape(p) for p in OWN_ONLY | PUBLIC}
    missing = {p for p in routes if _shape(p) not in covered}
    assert not missing, f"routes without an access row: {sorted(missing)}"


# --- the case socket -------------------------------------------------------------------


async def _socket(actor: Actor, case_id: str, device_id: uuid.UUID) -> WebsocketCommunicator:
    headers = [
        (b"origin", b"http://127.0.0.1"),
        (b"host", b"127.0.0.1"),
        (b"cookie", session_cookie(actor.client).encode()),
    ]
    communicator = WebsocketCommunicator(
        application, room_path(case_id, device_id), headers=headers
    )
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def _refused(communicator: WebsocketCommunicator) -> tuple[str, int]:
    frame = await communicator.receive_json_from(timeout=5)
    assert frame["type"] == "error", frame
    closed = await communicator.receive_output(timeout=5)
    assert closed["type"] == "websocket.close"
    await communicator.disconnect()
    return frame["code"], closed["code"]


async def _prove_and_read(
    communicator: WebsocketCommunicator, case_id: str, device_id: uuid.UUID
) -> tuple[str, int]:
    challenge = await communicator.receive_json_from(timeout=5)
    assert challenge["type"] == "challenge"
    await communicator.send_json_to(prove_frame(challenge, case_id, device_id))
    return await _refused(communicator)


@pytest.mark.django_db(transaction=True)
async def test_case_socket_refuses_every_kind_of_caller() -> None:
    from asgiref.sync import sync_to_async

    world = await sync_to_async(build_world)()
    case = world.ids["case"]
    # Outsider and removed member: proven devices, not in the roster.
    for actor in (world.outsider, world.removed):
        sock = await _socket(actor, case, actor.device.device_id)
        assert await _prove_and_read(sock, case, actor.device.device_id) == ("not_member", 4403)
    # The revoked device, whatever session it uses.
    sock = await _socket(world.nurse, case, world.nurse.device.device_id)
    assert await _prove_and_read(sock, case, world.nurse.device.device_id) == (
        "device_revoked", 4403
    )
    # Another user's device named by pcp (signed with pcp's key, as an attacker would).
    foreign = world.outsider.device.device_id
    sock = await _socket(world.pcp, case, foreign)
    challenge = await sock.receive_json_from(timeout=5)
    await sock.send_json_to(prove_frame(challenge, case, world.pcp.device.device_id))
    assert await _refused(sock) == ("unknown_device", 4403)
    # A signature by another key over the right challenge.
    sock = await _socket(world.pcp, case, world.pcp.device.device_id)
    challenge = await sock.receive_json_from(timeout=5)
    seed = DEVICE_SEEDS[world.pcp.device.device_id]
    DEVICE_SEEDS[world.pcp.device.device_id] = DeviceKeys.generate(world.pcp.user.pk).dsk_seed
    try:
        await sock.send_json_to(prove_frame(challenge, case, world.pcp.device.device_id))
    finally:
        DEVICE_SEEDS[world.pcp.device.device_id] = seed
    assert await _refused(sock) == ("bad_device_proof", 4403)
    # Any frame but prove first gets nothing.
    sock = await _socket(world.pcp, case, world.pcp.device.device_id)
    assert (await sock.receive_json_from(timeout=5))["type"] == "challenge"
    await sock.send_json_to({"type": "resume", "after": 0})
    assert await _refused(sock) == ("device_unproven", 4403)


