"""HTTP device proofs (X-Collab-Proof) and the socket challenge: every way a proof can
be wrong is refused, a replay is refused, and a missing proof only while not required."""

from __future__ import annotations

import time
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator

from collab.accounts import proofs
from collab.accounts.models import DeviceProofUse, DeviceSession
from collab.asgi import application
from tests.support.actor import Actor
from tests.support.users import session_cookie
from tests.support.ws import prove_frame

pytestmark = pytest.mark.django_db


@pytest.fixture
def pcp_case() -> tuple[Actor, Any]:
    pcp = Actor("pcp").register()
    return pcp, pcp.open_case()


def wraps(actor: Actor, state: Any, **kwargs: Any) -> Any:
    return actor.call("GET", f"/api/cases/{state.case_id}/wraps", **kwargs)


def test_nonce_endpoint_and_proven_answers_carry_a_fresh_nonce(pcp_case: Any) -> None:
    pcp, state = pcp_case
    nonce = pcp.client.get("/api/device-nonce").json()["nonce"]
    assert proofs.nonce_valid(nonce)
    response = wraps(pcp, state)
    assert response.status_code == 200
    assert proofs.nonce_valid(response["X-Collab-Nonce"])
    assert DeviceSession.objects.filter(
        session_key=pcp.session_id, device_id=pcp.device.device_id, proven=True
    ).exists()


def test_replayed_http_proof_is_refused(pcp_case: Any) -> None:
    pcp, state = pcp_case
    path = f"/api/cases/{state.case_id}/wraps"
    header = pcp.signer.header("GET", path, b"")
    assert wraps(pcp, state, proof=header).status_code == 200
    spent = DeviceProofUse.objects.filter(device_id=pcp.device.device_id).count()
    replay = wraps(pcp, state, proof=header)
    assert (replay.status_code, replay.json()["error"]) == (401, "replayed_device_proof")
    assert proofs.nonce_valid(replay.json()["nonce"])
    assert DeviceProofUse.objects.filter(device_id=pcp.device.device_id).count() == spent


@pytest.mark.parametrize(
    "change",
    ["path", "query", "method", "body", "device", "time", "stale_nonce", "forged_nonce",
     "shape", "short_sig"],
)
def test_a_proof_for_anything_else_is_refused(pcp_case: Any, change: str) -> None:
    pcp, state = pcp_case
    path = f"/api/cases/{state.case_id}/messages?after=0"
    now = int(time.time() * 1000)
    sign = pcp.signer.header
    header = {
        "path": lambda: sign("GET", f"/api/cases/{state.case_id}/wraps", b""),
        "query": lambda: sign("GET", path + "&limit=5", b""),
        "method": lambda: sign("POST", path, b""),
        "body": lambda: sign("GET", path, b"{}"),
        "device": lambda: sign("GET", path, b"", device_id=state.case_id),
        "time": lambda: sign("GET", path, b"", time_ms=now - 121_000),
        "stale_nonce": lambda: sign("GET", path, b"", nonce=proofs.nonce_issue(now - 301_000)),
        "forged_nonce": lambda: sign("GET", path, b"", nonce="AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        "shape": lambda: sign("GET", path, b"").replace(".", ":", 1),
        "short_sig": lambda: sign("GET", path, b"").rsplit(".", 1)[0] + ".AAAA",
    }[change]()
    response = pcp.call("GET", path, proof=header)
    assert (response.status_code, response.json()["error"]) == (401, "bad_device_proof")
    assert response.json()["nonce"]


def test_missing_proof_tolerated_only_while_not_required(pcp_case: Any, settings: Any) -> None:
    pcp, state = pcp_case
    settings.DEVICE_PROOF_REQUIRED = False
    assert wraps(pcp, state, proof=False).status_code == 200
    settings.DEVICE_PROOF_REQUIRED = True
    missing = wraps(pcp, state, proof=False)
    assert (missing.status_code, missing.json()["error"]) == (401, "device_proof_required")
    no_device = pcp.call("GET", f"/api/cases/{state.case_id}/wraps", device=False)
    assert (no_device.status_code, no_device.json()["error"]) == (401, "device_proof_required")
    assert wraps(pcp, state).status_code == 200


def test_blob_parts_name_the_uploading_device(pcp_case: Any) -> None:
    pcp, state = pcp_case
    blob = pcp.call("POST", f"/api/cases/{state.case_id}/blobs", {"size": 100}).json()
    second = Actor("pcp2").register()
    other = second.call("PUT", f"/api/blobs/{blob['blob_id']}/parts/0", None)
    assert other.status_code in (403, 404)


# --- the socket ------------------------------------------------------------------------


async def _open(actor: Actor, state: Any, query: str) -> WebsocketCommunicator:
    headers = [(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1"),
               (b"cookie", session_cookie(actor.client).encode())]
    sock = WebsocketCommunicator(
        application, f"/ws/cases/{state.case_id}/?device={actor.device.device_id}{query}",
        headers=headers,
    )
    assert (await sock.connect())[0]
    return sock


@pytest.mark.django_db(transaction=True)
async def test_socket_challenge_then_hello_and_the_session_is_recorded(settings: Any) -> None:
    from asgiref.sync import sync_to_async

    settings.DEVICE_PROOF_REQUIRED = True
    pcp, state = await sync_to_async(lambda: (lambda a: (a, a.open_case()))(
        Actor("pcp").register()))()
    sock = await _open(pcp, state, "")  # no ?proof=1: required anyway
    challenge = await sock.receive_json_from(timeout=5)
    assert challenge["type"] == "challenge"
    await sock.send_json_to({**prove_frame(challenge, state.case_id, pcp.device.device_id)})
    assert (await sock.receive_json_from(timeout=5))["type"] == "hello"
    await sock.disconnect()
    assert await sync_to_async(
        lambda: DeviceSession.objects.filter(device_id=pcp.device.device_id, proven=True).exists()
    )()


@pytest.mark.django_db(transaction=True)
async def test_device_failing_the_socket_challenge_gets_nothing(settings: Any) -> None:
    from asgiref.sync import sync_to_async

    settings.WS_PROVE_TIMEOUT_SECONDS = 0.3
    pcp, state = await sync_to_async(lambda: (lambda a: (a, a.open_case()))(
        Actor("pcp").register()))()
    # Silence after the challenge.
    sock = await _open(pcp, state, "&proof=1")
    assert (await sock.receive_json_from(timeout=5))["type"] == "challenge"
    frame = await sock.receive_json_from(timeout=5)
    assert (frame["type"], frame["code"]) == ("error", "device_unproven")
    assert (await sock.receive_output(timeout=5))["code"] == 4403
    await sock.disconnect()
    # A signature over another challenge (a replayed answer).
    sock = await _open(pcp, state, "&proof=1")
    await sock.receive_json_from(timeout=5)
    stale = {"type": "challenge", "nonce": "A" * 43 + "="}
    await sock.send_json_to(prove_frame(stale, state.case_id, pcp.device.device_id))
    frame = await sock.receive_json_from(timeout=5)
    assert (frame["type"], frame["code"]) == ("error", "bad_device_proof")
    assert (await sock.receive_output(timeout=5))["code"] == 4403
    await sock.disconnect()
    # Not even the head of the case leaks before the proof.
    sock = await _open(pcp, state, "&proof=1")
    await sock.receive_json_from(timeout=5)
    await sock.send_json_to({"type": "ping"})
    frame = await sock.receive_json_from(timeout=5)
    assert (frame["type"], frame["code"]) == ("error", "device_unproven")
    await sock.disconnect()
