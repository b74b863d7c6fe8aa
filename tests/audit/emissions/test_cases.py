"""Emission tests for the case, log, join, history, attachment and invitation actions.

Each test drives the real HTTP path (the Django test client, real CR1 entries and
device proofs) or the management command, and asserts exactly the events the call
wrote: every field, the exact details, and that nothing of the content (ciphertext,
keys, file names, invitation tokens, passwords, decline reasons) is in them.
"""

from __future__ import annotations

import base64
import io
import json
import os
import uuid
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.core.management import call_command
from django.db.models import Max
from django.test import Client
from django.utils import timezone

from collab.accounts.models import User
from collab.audit.models import AuditAction, AuditEvent
from collab.cases.models import Blob, Invitation, JoinRequest
from collab.cases.services.messages import message_send
from collab.client.case_state import CaseState
from collab.crypto.actions import AddUserBody
from collab.crypto.attachment import AttachmentEncryptor
from collab.crypto.roster import Role
from collab.crypto.wire import b64e
from tests.audit.emissions import emits
from tests.cases.patients import invite, patient_actor, sign_up
from tests.cases.test_invitation_binding import binding, proof_for
from tests.support.actor import Actor
from tests.support.users import PASSWORD

pytestmark = pytest.mark.django_db

UA = "emission-test/1.0"


# --- helpers ------------------------------------------------------------------------


def head_seq() -> int:
    return int(AuditEvent.objects.aggregate(top=Max("seq"))["top"] or 0)


def written(before: int) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(seq__gt=before).order_by("seq"))


def actions(before: int) -> list[str]:
    return [e.action for e in written(before)]


def only(before: int, action: str) -> AuditEvent:
    """The one event written since ``before``; it must be ``action``."""
    events = written(before)
    assert [e.action for e in events] == [action], [(e.action, e.details) for e in events]
    return events[0]


def fields(event: AuditEvent) -> dict[str, Any]:
    """The fields an emission test pins down (checked first to be metadata only)."""
    assert_metadata_only(event)
    return {
        "action": event.action,
        "outcome": event.outcome,
        "reason": event.reason,
        "actor_id": event.actor_id,
        "device_id": event.device_id,
        "case_id": event.case_id,
        "target": event.target,
        "details": event.details,
    }


def expected(
    action: str,
    *,
    actor: User | None = None,
    device: uuid.UUID | None = None,
    case: uuid.UUID | None = None,
    target: str = "",
    details: dict[str, Any] | None = None,
    outcome: str = "success",
    reason: str = "",
) -> dict[str, Any]:
    return {
        "action": action,
        "outcome": outcome,
        "reason": reason,
        "actor_id": actor.pk if actor is not None else None,
        "device_id": device,
        "case_id": case,
        "target": target,
        "details": details if details is not None else {},
    }


def _forms(secret: str | bytes) -> list[str]:
    if isinstance(secret, str):
        return [secret]
    return [
        b64e(secret),
        base64.urlsafe_b64encode(secret).rstrip(b"=").decode(),
        secret.hex(),
    ]


def assert_no_content(event: AuditEvent, *secrets: str | bytes) -> None:
    """None of ``secrets`` (raw bytes in any of their wire encodings, or text) is in the
    event's serialised details, target, reason or user agent."""
    text = " ".join(
        [json.dumps(event.details, sort_keys=True), event.target, event.reason, event.user_agent]
    )
    for secret in secrets:
        for form in _forms(secret):
            assert form and form not in text, f"{event.action} carries {form[:16]}..."
    assert_metadata_only(event)


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in (str(k), *_texts(v))]
    if isinstance(value, list):
        return [t for item in value for t in _texts(item)]
    return []


def assert_metadata_only(event: AuditEvent) -> None:
    """Details are small metadata: no text long enough to carry a key, a signature, a
    token or a ciphertext (a UUID, a timestamp or a code fits)."""
    for text in [*_texts(event.details), event.target]:
        assert len(text) <= 48, f"{event.action} carries a long value: {text[:16]}..."


def collect(response: Any) -> bytes:
    async def gather() -> bytes:
        return b"".join([part async for part in response.streaming_content])

    return async_to_sync(gather)()


@pytest.fixture
def pcp() -> Actor:
    return Actor("pcp", specialty="Family medicine").register()


@pytest.fixture
def derm() -> Actor:
    return Actor("derm", specialty="Dermatology").register()


def claim(specialist: Actor, state: CaseState) -> Any:
    response = specialist.call("POST", f"/api/consults/{state.case_id}/claim")
    assert response.status_code == 201, response.content
    return response.json()


# --- cases and the membership log -----------------------------------------------------


@emits(AuditAction.CASE_OPENED)
def test_case_opened(pcp: Actor) -> None:
    before = head_seq()
    state = pcp.open_case(specialty="Dermatology", urgency="urgent")
    event = only(before, AuditAction.CASE_OPENED)
    assert fields(event) == expected(
        AuditAction.CASE_OPENED,
        actor=pcp.user,
        device=pcp.device.device_id,
        case=state.case_id,
        target=f"case:{state.case_id}",
        details={"specialty": "Dermatology", "urgency": "urgent"},
    )
    genesis = state.chain[0]
    assert_no_content(
        event,
        genesis.encode(),
        genesis.entry_hash(),
        pcp.identity.uik_pub,
        pcp.cert.dsk_pub,
        pcp.cert.dxk_pub,
        pcp.cert.cert_sig,
    )
    # A refused open (a patient may not open cases) writes no CASE_OPENED.
    patient = Actor("patient1", role="patient").register()
    before = head_seq()
    refused = CaseState(uuid.uuid4(), patient.device).genesis(
        patient.cert, patient.identity.uik_pub
    )
    response = patient.call("POST", "/api/cases", {"genesis": b64e(refused.encode())})
    assert response.status_code == 403
    assert AuditAction.CASE_OPENED not in actions(before)


@emits(AuditAction.CASE_STATUS_CHANGED)
def test_case_status_changed(pcp: Actor, derm: Actor) -> None:
    state = pcp.open_case(specialty="Dermatology")
    assert pcp.add(state, derm).status_code == 201
    path = f"/api/cases/{state.case_id}/status"
    steps = [
        (derm, "accepted", "requested", ""),
        (pcp, "closed", "accepted", ""),
        (pcp, "requested", "closed", "reopened"),
    ]
    for actor, to, came_from, reason in steps:
        before = head_seq()
        response = actor.call("POST", path, {"status": to})
        assert response.status_code == 200, response.content
        event = only(before, AuditAction.CASE_STATUS_CHANGED)
        assert fields(event) == expected(
            AuditAction.CASE_STATUS_CHANGED,
            actor=actor.user,
            case=state.case_id,
            target=f"case:{state.case_id}",
            details={"from": came_from, "to": to, "by": str(actor.user.pk), "reason": reason},
        )
    # A refused change (only an owner closes) records nothing.
    before = head_seq()
    assert derm.call("POST", path, {"status": "closed"}).status_code == 403
    assert AuditAction.CASE_STATUS_CHANGED not in actions(before)


@emits(AuditAction.CASE_STATUS_CHANGED, AuditAction.LOG_ENTRY_COMMITTED)
def test_committing_a_claimed_specialist_accepts_the_consult(pcp: Actor, derm: Actor) -> None:
    state = pcp.open_case(specialty="Dermatology")
    claim(derm, state)
    before = head_seq()
    assert pcp.add(state, derm).status_code == 201
    status, committed = written(before)
    assert fields(status) == expected(
        AuditAction.CASE_STATUS_CHANGED,
        actor=pcp.user,
        case=state.case_id,
        target=f"case:{state.case_id}",
        details={
            "from": "requested",
            "to": "accepted",
            "by": str(derm.user.pk),
            "reason": "claim_committed",
        },
    )
    assert fields(committed) == expected(
        AuditAction.LOG_ENTRY_COMMITTED,
        actor=pcp.user,
        device=pcp.device.device_id,
        case=state.case_id,
        target="log:1",
        details={"epoch": 1, "action": "add_user"},
    )
    # Both came from the one request: the same address and user agent.
    assert (status.client_address, status.user_agent) == (
        committed.client_address,
        committed.user_agent,
    )


@emits(AuditAction.LOG_ENTRY_COMMITTED)
def test_log_entry_committed(pcp: Actor, derm: Actor) -> None:
    state = pcp.open_case()
    body = AddUserBody(derm.user.pk, Role.MEMBER, derm.identity.uik_pub, (derm.cert,))
    entry = state.next_entry(body)
    payload = {"entry": b64e(entry.encode())}
    path = f"/api/cases/{state.case_id}/log"
    before = head_seq()
    response = pcp.send(
        "POST",
        path,
        json.dumps(payload).encode(),
        "application/json",
        extra={"HTTP_USER_AGENT": UA},
    )
    assert response.status_code == 201, response.content
    state.accept_entries([entry])
    event = only(before, AuditAction.LOG_ENTRY_COMMITTED)
    assert fields(event) == expected(
        AuditAction.LOG_ENTRY_COMMITTED,
        actor=pcp.user,
        device=pcp.device.device_id,
        case=state.case_id,
        target="log:1",
        details={"epoch": 1, "action": "add_user"},
    )
    assert event.user_agent == UA and event.client_address == "127.0.0.1"
    wraps = [w.ciphertext for w in entry.wraps]
    assert wraps
    assert_no_content(
        event,
        entry.encode(),
        entry.entry_hash(),
        entry.signature,
        derm.identity.uik_pub,
        derm.cert.dsk_pub,
        derm.cert.dxk_pub,
        *wraps,
    )
    # A retry of the committed entry answers as before and records nothing new.
    before = head_seq()
    assert pcp.call("POST", path, payload).status_code in (200, 201)
    assert written(before) == []
    # A stale entry (epoch 1 again, different content) is refused and records nothing.
    other = Actor("other").register()
    stale = CaseState(state.case_id, pcp.device)
    stale.accept_entries([state.chain[0]])
    rival = stale.next_entry(
        AddUserBody(other.user.pk, Role.MEMBER, other.identity.uik_pub, (other.cert,))
    )
    before = head_seq()
    response = pcp.call("POST", path, {"entry": b64e(rival.encode())})
    assert response.status_code == 409
    assert written(before) == []


# --- join requests --------------------------------------------------------------------


@emits(AuditAction.JOIN_REQUESTED)
def test_join_requested_by_a_specialists_consult_claim(pcp: Actor, derm: Actor) -> None:
    state = pcp.open_case(specialty="Dermatology")
    before = head_seq()
    claim(derm, state)
    event = only(before, AuditAction.JOIN_REQUESTED)
    assert fields(event) == expected(
        AuditAction.JOIN_REQUESTED,
        actor=derm.user,
        case=state.case_id,
        target=f"user:{derm.user.pk}",
        details={"kind": "claim"},
    )
    # A second claim is refused and records nothing.
    before = head_seq()
    response = derm.call("POST", f"/api/consults/{state.case_id}/claim")
    assert response.status_code == 409
    assert written(before) == []


@emits(AuditAction.JOIN_REQUESTED)
def test_join_requested_for_a_named_colleague(pcp: Actor, derm: Actor) -> None:
    state = pcp.open_case()
    path = f"/api/cases/{state.case_id}/join-requests"
    before = head_seq()
    response = pcp.call("POST", path, {"kind": "invite", "user": str(derm.user.pk)})
    assert response.status_code == 201, response.content
    event = only(before, AuditAction.JOIN_REQUESTED)
    assert fields(event) == expected(
        AuditAction.JOIN_REQUESTED,
        actor=pcp.user,
        case=state.case_id,
        target=f"user:{derm.user.pk}",
        details={"kind": "invite"},
    )
    # Only a case owner or admin names colleagues: an outsider's attempt files nothing.
    outsider = Actor("outsider").register()
    before = head_seq()
    refused = outsider.call("POST", path, {"kind": "invite", "user": str(outsider.user.pk)})
    assert refused.status_code == 403
    assert AuditAction.JOIN_REQUESTED not in actions(before)


@emits(AuditAction.JOIN_REQUESTED)
def test_join_requested_to_rejoin_after_an_identity_reset(pcp: Actor, derm: Actor) -> None:
    cases = [pcp.open_case(), pcp.open_case()]
    for state in cases:
        assert pcp.add(state, derm).status_code == 201
    ops = User.objects.create_user(username="ops", password="x-ops-1", role="admin")
    before = head_seq()
    call_command("identity_reset", "derm", "--yes", "--by", "ops", stdout=StringIO())
    events = written(before)
    rejoins = [e for e in events if e.action == AuditAction.JOIN_REQUESTED]
    # The reset's own events (its one device revoked, the reset) and one rejoin per case.
    assert sorted(e.action for e in events if e not in rejoins) == sorted(
        [AuditAction.DEVICE_REVOKED, AuditAction.IDENTITY_RESET]
    )
    assert {e.case_id for e in rejoins} == {s.case_id for s in cases} and len(rejoins) == 2
    for event in rejoins:
        assert fields(event) == expected(
            AuditAction.JOIN_REQUESTED,
            actor=ops,
            case=event.case_id,
            target=f"user:{derm.user.pk}",
            details={"kind": "rejoin", "by": "ops"},
        )
        assert_no_content(event, derm.identity.uik_pub, derm.cert.dsk_pub, derm.session_id)


@emits(AuditAction.INVITATION_ACCEPTED, AuditAction.JOIN_REQUESTED)
def test_invitation_accepted_files_the_patients_join_request(pcp: Actor) -> None:
    state = pcp.open_case()
    token = invite(pcp, state)
    invitation = Invitation.objects.get()
    before = head_seq()
    _, response = sign_up(token, "pat")
    assert response.status_code == 302
    patient = User.objects.get(username="pat")
    accepted, requested, signed_in = written(before)
    assert fields(accepted) == expected(
        AuditAction.INVITATION_ACCEPTED,
        actor=patient,
        case=state.case_id,
        target=f"invitation:{invitation.pk}",
    )
    assert fields(requested) == expected(
        AuditAction.JOIN_REQUESTED,
        actor=patient,
        case=state.case_id,
        target=f"user:{patient.pk}",
        details={"kind": "patient"},
    )
    # The sign-up also signs the new patient in (recorded as such, not a case event).
    assert (signed_in.action, signed_in.actor_id, signed_in.case_id) == (
        AuditAction.SIGN_IN,
        patient.pk,
        None,
    )
    for event in (accepted, requested, signed_in):
        assert_no_content(event, token, PASSWORD, invitation.token_hash)
    # The link is single use: a second sign-up records a refusal, no acceptance.
    before = head_seq()
    _, again = sign_up(token, "pat2")
    assert again.status_code == 410
    assert actions(before) == [AuditAction.INVITATION_OPENED]


@emits(AuditAction.INVITATION_ACCEPTED, AuditAction.JOIN_REQUESTED)
def test_invitation_accepted_by_a_signed_in_patient(pcp: Actor) -> None:
    first = pcp.open_case()
    browser, signed_up = sign_up(invite(pcp, first), "pat")
    assert signed_up.status_code == 302
    patient = User.objects.get(username="pat")
    second = pcp.open_case()
    token = invite(pcp, second)
    invitation = Invitation.objects.get(case_id=second.case_id)
    before = head_seq()
    response = browser.post(f"/invite/{token}/")
    assert response.status_code == 302
    accepted, requested = written(before)  # already signed in: no sign-in event
    assert fields(accepted) == expected(
        AuditAction.INVITATION_ACCEPTED,
        actor=patient,
        case=second.case_id,
        target=f"invitation:{invitation.pk}",
    )
    assert fields(requested) == expected(
        AuditAction.JOIN_REQUESTED,
        actor=patient,
        case=second.case_id,
        target=f"user:{patient.pk}",
        details={"kind": "patient"},
    )
    for event in (accepted, requested):
        assert_no_content(event, token, invitation.token_hash)
    # A second link to a case they are waiting for is refused, the link stays unused,
    # and nothing is recorded as accepted or requested.
    again = invite(pcp, second)
    before = head_seq()
    assert browser.post(f"/invite/{again}/").status_code == 409
    assert written(before) == []


@emits(AuditAction.JOIN_DECLINED)
def test_join_declined(pcp: Actor, derm: Actor) -> None:
    state = pcp.open_case(specialty="Dermatology")
    join_id = claim(derm, state)["id"]
    reason = "Not this one: ask the on-call team about the rash"
    path = f"/api/join-requests/{join_id}/decline"
    # Only a case owner or admin declines: the specialist's own attempt records no decline.
    before = head_seq()
    assert derm.call("POST", path, {"reason": reason}).status_code == 403
    assert AuditAction.JOIN_DECLINED not in actions(before)
    before = head_seq()
    response = pcp.call("POST", path, {"reason": reason})
    assert response.status_code == 200, response.content
    event = only(before, AuditAction.JOIN_DECLINED)
    assert fields(event) == expected(
        AuditAction.JOIN_DECLINED,
        actor=pcp.user,
        case=state.case_id,
        target=f"user:{derm.user.pk}",
        details={"kind": "claim", "reason_length": len(reason)},
    )
    assert_no_content(event, reason, "rash")


@emits(AuditAction.JOIN_WITHDRAWN)
def test_join_withdrawn(pcp: Actor, derm: Actor) -> None:
    state = pcp.open_case(specialty="Dermatology")
    join_id = claim(derm, state)["id"]
    path = f"/api/join-requests/{join_id}/withdraw"
    outsider = Actor("outsider").register()
    before = head_seq()
    assert outsider.call("POST", path).status_code == 403
    assert AuditAction.JOIN_WITHDRAWN not in actions(before)
    before = head_seq()
    response = derm.call("POST", path)
    assert response.status_code == 200, response.content
    event = only(before, AuditAction.JOIN_WITHDRAWN)
    assert fields(event) == expected(
        AuditAction.JOIN_WITHDRAWN,
        actor=derm.user,
        case=state.case_id,
        target=f"user:{derm.user.pk}",
        details={"kind": "claim"},
    )
    assert JoinRequest.objects.get(pk=join_id).status == "withdrawn"
    # Withdrawn once: again is refused and records nothing.
    before = head_seq()
    assert derm.call("POST", path).status_code == 409
    assert written(before) == []


# --- history --------------------------------------------------------------------------


@emits(AuditAction.HISTORY_READ)
def test_history_read_over_http(pcp: Actor) -> None:
    state = pcp.open_case()
    sealed = [state.seal({"text": f"private note {i}"}) for i in range(3)]
    for envelope in sealed:
        message_send(
            user=pcp.user,
            device_id=pcp.device.device_id,
            case_id=state.case_id,
            envelope=envelope,
        )
    before = head_seq()
    response = pcp.call("GET", f"/api/cases/{state.case_id}/messages?after=0&limit=2")
    assert response.status_code == 200
    assert [m["seq"] for m in response.json()["messages"]] == [1, 2]
    event = only(before, AuditAction.HISTORY_READ)
    assert fields(event) == expected(
        AuditAction.HISTORY_READ,
        actor=pcp.user,
        device=pcp.device.device_id,
        case=state.case_id,
        details={"from_seq": 1, "to_seq": 2, "count": 2},
    )
    for envelope in sealed:
        assert_no_content(event, envelope.ct, envelope.sig, "private note")
    # An empty page read nothing and records nothing.
    before = head_seq()
    response = pcp.call("GET", f"/api/cases/{state.case_id}/messages?after=3")
    assert response.status_code == 200 and response.json()["messages"] == []
    assert written(before) == []
    # An outsider is refused and records no read.
    outsider = Actor("outsider").register()
    before = head_seq()
    assert outsider.call("GET", f"/api/cases/{state.case_id}/messages").status_code in (403, 404)
    assert AuditAction.HISTORY_READ not in actions(before)


# --- attachments ----------------------------------------------------------------------


def _encrypted(size: int) -> tuple[AttachmentEncryptor, list[bytes]]:
    enc = AttachmentEncryptor()
    return enc, list(enc.chunks(io.BytesIO(os.urandom(size))))


def _start_upload(actor: Actor, case_id: uuid.UUID, chunks: list[bytes], parts: int) -> str:
    """Create the blob and send its first ``parts`` chunks (one chunk a part)."""
    size = sum(len(c) for c in chunks)
    created = actor.call("POST", f"/api/cases/{case_id}/blobs", {"size": size})
    assert created.status_code == 201, created.content
    blob_id = str(created.json()["blob_id"])
    offset = 0
    for chunk in chunks[:parts]:
        response = actor.send("PUT", f"/api/blobs/{blob_id}/parts/{offset}", chunk)
        assert response.status_code == 200, response.content
        offset += len(chunk)
    return blob_id


@pytest.fixture
def room(pcp: Actor, derm: Actor) -> CaseState:
    state = pcp.open_case()
    assert pcp.add(state, derm).status_code == 201
    return state


@emits(AuditAction.ATTACHMENT_UPLOADED)
def test_attachment_uploaded(pcp: Actor, room: CaseState) -> None:
    enc, chunks = _encrypted(2 * 65536 + 100)
    blob_id = _start_upload(pcp, room.case_id, chunks, len(chunks))
    manifest = enc.manifest(uuid.UUID(blob_id), mime="image/png")
    before = head_seq()
    done = pcp.call("POST", f"/api/blobs/{blob_id}/complete", {"root": b64e(manifest.root)})
    assert done.status_code == 200, done.content
    event = only(before, AuditAction.ATTACHMENT_UPLOADED)
    size = sum(len(c) for c in chunks)
    assert fields(event) == expected(
        AuditAction.ATTACHMENT_UPLOADED,
        actor=pcp.user,
        device=pcp.device.device_id,
        case=room.case_id,
        target=f"blob:{blob_id}",
        details={"size": size},
    )
    assert_no_content(event, chunks[0][:48], manifest.root, "image/png")


def _uploaded(actor: Actor, case_id: uuid.UUID) -> tuple[str, list[bytes]]:
    enc, chunks = _encrypted(65536 + 10)
    blob_id = _start_upload(actor, case_id, chunks, len(chunks))
    root = enc.manifest(uuid.UUID(blob_id), mime="image/png").root
    assert (
        actor.call("POST", f"/api/blobs/{blob_id}/complete", {"root": b64e(root)}).status_code
        == 200
    )
    return blob_id, chunks


@emits(AuditAction.ATTACHMENT_DOWNLOADED)
def test_attachment_downloaded_once_per_device_and_blob(
    pcp: Actor, derm: Actor, room: CaseState
) -> None:
    blob_id, chunks = _uploaded(pcp, room.case_id)
    size = sum(len(c) for c in chunks)
    path = f"/api/blobs/{blob_id}"
    # A range past the end delivers nothing and records nothing.
    before = head_seq()
    beyond = derm.send("GET", path, b"", extra={"HTTP_RANGE": f"bytes={size}-"})
    assert beyond.status_code == 416
    assert written(before) == []
    before = head_seq()
    first = derm.send("GET", path, b"", extra={"HTTP_RANGE": "bytes=0-99"})
    assert first.status_code == 206
    assert collect(first) == b"".join(chunks)[:100]
    event = only(before, AuditAction.ATTACHMENT_DOWNLOADED)
    assert fields(event) == expected(
        AuditAction.ATTACHMENT_DOWNLOADED,
        actor=derm.user,
        device=derm.device.device_id,
        case=room.case_id,
        target=f"blob:{blob_id}",
        details={"size": size},
    )
    assert_no_content(event, chunks[0][:48])
    # The same device again, another range or the whole blob: nothing more.
    before = head_seq()
    for headers in ({"HTTP_RANGE": "bytes=100-"}, {}):
        again = derm.send("GET", path, b"", extra=headers)
        assert again.status_code in (200, 206)
        collect(again)
    assert written(before) == []
    # Another device (the uploader's) is a first delivery of its own.
    before = head_seq()
    collect(pcp.send("GET", path, b""))
    event = only(before, AuditAction.ATTACHMENT_DOWNLOADED)
    assert (event.actor_id, event.device_id) == (pcp.user.pk, pcp.device.device_id)
    # An outsider is refused and records no download.
    outsider = Actor("outsider").register()
    before = head_seq()
    assert outsider.send("GET", path, b"").status_code in (403, 404)
    assert AuditAction.ATTACHMENT_DOWNLOADED not in actions(before)


@emits(AuditAction.UPLOAD_EXPIRED)
def test_upload_expired_by_the_command(pcp: Actor, room: CaseState) -> None:
    _, chunks = _encrypted(2 * 65536 + 100)
    blob_id = _start_upload(pcp, room.case_id, chunks, 1)
    finished, _ = _uploaded(pcp, room.case_id)  # complete: never expired
    before = head_seq()
    call_command("expire_uploads", "--older-than-hours", "0", stdout=StringIO())
    event = only(before, AuditAction.UPLOAD_EXPIRED)
    assert fields(event) == expected(
        AuditAction.UPLOAD_EXPIRED,
        device=pcp.device.device_id,
        case=room.case_id,
        target=f"blob:{blob_id}",
        details={
            "size": sum(len(c) for c in chunks),
            "received_bytes": len(chunks[0]),
            "uploader": str(pcp.user.pk),
        },
    )
    assert_no_content(event, chunks[0][:48])
    assert Blob.objects.get(pk=blob_id).status == "expired"
    assert Blob.objects.get(pk=finished).status == "complete"
    # Expired once: the next run records nothing.
    before = head_seq()
    call_command("expire_uploads", "--older-than-hours", "0", stdout=StringIO())
    assert written(before) == []


# --- invitations ----------------------------------------------------------------------


@emits(AuditAction.INVITATION_CREATED)
def test_invitation_created(pcp: Actor) -> None:
    state = pcp.open_case()
    path = f"/api/cases/{state.case_id}/invitations"
    secret = os.urandom(32)
    bound = binding(pcp, state, secret)
    for body, is_bound in ((None, False), (bound, True)):
        before = head_seq()
        response = pcp.call("POST", path, body)
        assert response.status_code == 201, response.content
        invitation = Invitation.objects.get(pk=response.json()["id"])
        event = only(before, AuditAction.INVITATION_CREATED)
        assert fields(event) == expected(
            AuditAction.INVITATION_CREATED,
            actor=pcp.user,
            # Only a bound invitation's request is made as (and proven by) a device.
            device=pcp.device.device_id if is_bound else None,
            case=state.case_id,
            target=f"invitation:{invitation.pk}",
            details={"expires_at": invitation.expires_at.isoformat(), "bound": is_bound},
        )
        token = str(response.json()["link"]).rstrip("/").rsplit("/", 1)[1]
        assert_no_content(event, token, invitation.token_hash, secret)
        if is_bound:
            assert_no_content(event, bound["invite_pub"], bound["invite_sig"])
    # Not a provider member: refused, nothing created or recorded as created.
    outsider = Actor("outsider").register()
    before = head_seq()
    assert outsider.call("POST", path).status_code == 403
    assert AuditAction.INVITATION_CREATED not in actions(before)


@emits(AuditAction.INVITATION_OPENED)
def test_invitation_opened(pcp: Actor) -> None:
    state = pcp.open_case()
    token = invite(pcp, state)
    invitation = Invitation.objects.get()
    before = head_seq()
    page = Client().get(f"/invite/{token}/", HTTP_USER_AGENT=UA)
    assert page.status_code == 200
    event = only(before, AuditAction.INVITATION_OPENED)
    assert fields(event) == expected(
        AuditAction.INVITATION_OPENED,
        case=state.case_id,
        target=f"invitation:{invitation.pk}",
    )
    assert event.user_agent == UA
    assert_no_content(event, token, invitation.token_hash)
    # Once used, opening the link is a recorded refusal.
    _, accepted = sign_up(token)
    assert accepted.status_code == 302
    before = head_seq()
    assert Client().get(f"/invite/{token}/").status_code == 410
    event = only(before, AuditAction.INVITATION_OPENED)
    assert fields(event) == expected(
        AuditAction.INVITATION_OPENED,
        outcome="failure",
        reason="used",
        case=state.case_id,
        target=f"invitation:{invitation.pk}",
    )
    assert_no_content(event, token, invitation.token_hash)
    # An unknown token names no invitation: nothing on the trail.
    before = head_seq()
    assert Client().get("/invite/" + "A" * 43 + "/").status_code == 404
    assert written(before) == []


@emits(AuditAction.INVITATION_REVOKED)
def test_invitation_revoked(pcp: Actor) -> None:
    state = pcp.open_case()
    token = invite(pcp, state)
    invitation = Invitation.objects.get()
    path = f"/api/invitations/{invitation.pk}/revoke"
    outsider = Actor("outsider").register()
    before = head_seq()
    assert outsider.call("POST", path).status_code == 403
    assert AuditAction.INVITATION_REVOKED not in actions(before)
    before = head_seq()
    response = pcp.call("POST", path)
    assert response.status_code == 200 and response.json()["state"] == "revoked"
    event = only(before, AuditAction.INVITATION_REVOKED)
    assert fields(event) == expected(
        AuditAction.INVITATION_REVOKED,
        actor=pcp.user,
        case=state.case_id,
        target=f"invitation:{invitation.pk}",
    )
    assert_no_content(event, token, invitation.token_hash)
    # Revoked already: answered as revoked, recorded once.
    before = head_seq()
    assert pcp.call("POST", path).status_code == 200
    assert written(before) == []
    # Opening the revoked link is a refusal with that reason.
    before = head_seq()
    assert Client().get(f"/invite/{token}/").status_code == 410
    event = only(before, AuditAction.INVITATION_OPENED)
    assert (event.outcome, event.reason) == ("failure", "revoked")


@emits(AuditAction.INVITATION_EXPIRED)
def test_invitation_expired_is_recorded_once(pcp: Actor) -> None:
    state = pcp.open_case()
    token = invite(pcp, state)
    invitation = Invitation.objects.get()
    Invitation.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    before = head_seq()
    assert Client().get(f"/invite/{token}/").status_code == 410
    event = only(before, AuditAction.INVITATION_EXPIRED)
    assert fields(event) == expected(
        AuditAction.INVITATION_EXPIRED,
        outcome="failure",
        reason="expired",
        case=state.case_id,
        target=f"invitation:{invitation.pk}",
    )
    assert_no_content(event, token, invitation.token_hash)
    # Later attempts, opening or signing up, add nothing.
    before = head_seq()
    assert Client().get(f"/invite/{token}/").status_code == 410
    _, refused = sign_up(token)
    assert refused.status_code == 410
    assert written(before) == []
    assert not User.objects.filter(username="pat").exists()


@emits(AuditAction.INVITATION_EXPIRED)
def test_invitation_expired_first_met_by_a_sign_up(pcp: Actor) -> None:
    state = pcp.open_case()
    token = invite(pcp, state)
    invitation = Invitation.objects.get()
    Invitation.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    before = head_seq()
    _, refused = sign_up(token)
    assert refused.status_code == 410
    event = only(before, AuditAction.INVITATION_EXPIRED)
    assert fields(event) == expected(
        AuditAction.INVITATION_EXPIRED,
        outcome="failure",
        reason="expired",
        case=state.case_id,
        target=f"invitation:{invitation.pk}",
    )
    assert_no_content(event, token, invitation.token_hash, PASSWORD)
    assert not User.objects.filter(username="pat").exists()


@emits(AuditAction.INVITATION_PROOF)
def test_invitation_proof(pcp: Actor) -> None:
    state = pcp.open_case()
    secret = os.urandom(32)
    created = pcp.call(
        "POST", f"/api/cases/{state.case_id}/invitations", binding(pcp, state, secret)
    )
    assert created.status_code == 201, created.content
    invitation = Invitation.objects.get(pk=created.json()["id"])
    token = str(created.json()["link"]).rstrip("/").rsplit("/", 1)[1]
    browser, page = sign_up(token)
    assert page.status_code == 302
    patient = patient_actor(User.objects.get(username="pat"), browser)
    path = f"/api/invitations/{invitation.pk}/proof"
    # A proof over another identity key is refused and records nothing.
    wrong = proof_for(patient, state, secret, uik=os.urandom(32))
    before = head_seq()
    assert patient.call("POST", path, {"proof_sig": wrong}).status_code == 400
    assert written(before) == []
    proof = proof_for(patient, state, secret)
    before = head_seq()
    response = patient.call("POST", path, {"proof_sig": proof})
    assert response.status_code == 200, response.content
    event = only(before, AuditAction.INVITATION_PROOF)
    assert fields(event) == expected(
        AuditAction.INVITATION_PROOF,
        actor=patient.user,
        case=state.case_id,
        target=f"invitation:{invitation.pk}",
    )
    assert_no_content(event, proof, secret, token, patient.identity.uik_pub)
    # The same proof again is stored already: nothing new.
    before = head_seq()
    assert patient.call("POST", path, {"proof_sig": proof}).status_code == 200
    assert written(before) == []
