"""Attachments at their edges: resumable uploads, expiry of abandoned ones, ranges that
cannot be satisfied, and one download audit per (device, blob) whatever the ranges."""

from __future__ import annotations

import os
import uuid
from datetime import timedelta
from io import StringIO

import pytest
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.utils import timezone

from collab.audit.models import AuditAction, AuditEvent
from collab.cases.models import Blob, BlobStatus
from collab.cases.services.blobs import MAX_PART_BYTES
from collab.client.keys import DeviceKeys
from collab.crypto.attachment import CT_CHUNK_SIZE
from collab.crypto.wire import b64e
from tests.cases.test_blobs import collect, encrypt, upload
from tests.support.actor import Actor

pytestmark = pytest.mark.django_db


@pytest.fixture
def room():
    pcp = Actor("pcp").register()
    derm = Actor("derm", specialty="Dermatology").register()
    state = pcp.open_case()
    pcp.add(state, derm)
    return pcp, derm, state


def _complete(actor: Actor, blob_id: str, enc) -> None:
    root = enc.manifest(uuid.UUID(blob_id), mime="x").root
    done = actor.call("POST", f"/api/blobs/{blob_id}/complete", {"root": b64e(root)})
    assert done.status_code == 200, done.content


def _stored_blob(actor: Actor, case_id, chunks_of: int = 3):
    enc, chunks = encrypt(os.urandom(chunks_of * 65536))
    blob_id = upload(actor, case_id, chunks)
    _complete(actor, blob_id, enc)
    return blob_id, b"".join(chunks)


def _ranged(actor: Actor, blob_id: str, header: str):
    return actor.send("GET", f"/api/blobs/{blob_id}", b"", extra={"HTTP_RANGE": header})


def _downloads(blob_id: str) -> list[uuid.UUID | None]:
    events = AuditEvent.objects.filter(
        action=AuditAction.ATTACHMENT_DOWNLOADED, target=f"blob:{blob_id}"
    ).order_by("seq")
    return [e.device_id for e in events]


# --- resumable uploads ----------------------------------------------------------------


def test_upload_status_tells_the_uploading_device_where_to_resume(room) -> None:
    pcp, _, state = room
    enc, chunks = encrypt(os.urandom(3 * 65536))
    size = sum(len(c) for c in chunks)
    blob_id = pcp.call("POST", f"/api/cases/{state.case_id}/blobs", {"size": size}).json()[
        "blob_id"
    ]
    status = pcp.call("GET", f"/api/blobs/{blob_id}/upload")
    assert status.status_code == 200
    assert status.json() == {
        "blob_id": blob_id, "status": "uploading", "size": size, "received_bytes": 0
    }
    pcp.send("PUT", f"/api/blobs/{blob_id}/parts/0", chunks[0])
    resumed = pcp.call("GET", f"/api/blobs/{blob_id}/upload").json()["received_bytes"]
    assert resumed == CT_CHUNK_SIZE
    # Continue from there, as a client would after a dropped connection.
    rest = b"".join(chunks[1:])
    assert pcp.send("PUT", f"/api/blobs/{blob_id}/parts/{resumed}", rest).status_code == 200
    _complete(pcp, blob_id, enc)
    assert pcp.call("GET", f"/api/blobs/{blob_id}/upload").json()["status"] == "complete"


def test_upload_status_is_only_for_the_uploading_device(room) -> None:
    pcp, derm, state = room
    outsider = Actor("outsider").register()
    _, chunks = encrypt(os.urandom(1000))
    blob_id = upload(pcp, state.case_id, chunks)
    path = f"/api/blobs/{blob_id}/upload"
    for other in (derm, outsider):
        refused = other.call("GET", path)
        assert (refused.status_code, refused.json()["error"]) == (404, "no_blob")
    # Another device of the uploader's own user does not see it either.
    first = pcp.device
    second = DeviceKeys.generate(pcp.user.pk)
    cert = pcp.identity.certify(second).to_wire()
    assert pcp.call("POST", "/api/devices", {"cert": cert, "name": "second"}).status_code == 201
    pcp.device = second
    try:
        refused = pcp.call("GET", path)
        assert (refused.status_code, refused.json()["error"]) == (404, "no_blob")
    finally:
        pcp.device = first
    # No proof, no answer (proofs are required by default).
    assert pcp.call("GET", path, proof=False).status_code == 401
    assert pcp.call("GET", f"/api/blobs/{uuid.uuid4()}/upload").status_code == 404


# --- abandoned uploads ------------------------------------------------------------------


def _age(blob_id: str, hours: float) -> None:
    Blob.objects.filter(pk=blob_id).update(created_at=timezone.now() - timedelta(hours=hours))


def test_expire_uploads_deletes_abandoned_files_and_parts_then_answer_410(room) -> None:
    pcp, _, state = room
    enc, chunks = encrypt(os.urandom(2 * 65536 + 10))
    size = sum(len(c) for c in chunks)
    old_id = pcp.call("POST", f"/api/cases/{state.case_id}/blobs", {"size": size}).json()[
        "blob_id"
    ]
    pcp.send("PUT", f"/api/blobs/{old_id}/parts/0", chunks[0])
    fresh_id = pcp.call("POST", f"/api/cases/{state.case_id}/blobs", {"size": size}).json()[
        "blob_id"
    ]
    done_id, _ = _stored_blob(pcp, state.case_id)
    for blob_id in (old_id, done_id):
        _age(blob_id, 25)
    old_name = Blob.objects.get(pk=old_id).storage_name
    assert default_storage.exists(old_name)

    out = StringIO()
    call_command("expire_uploads", stdout=out)
    assert "1 upload(s) expired" in out.getvalue()

    old = Blob.objects.get(pk=old_id)
    assert old.status == BlobStatus.EXPIRED and not default_storage.exists(old_name)
    assert Blob.objects.get(pk=fresh_id).status == BlobStatus.UPLOADING
    assert Blob.objects.get(pk=done_id).status == BlobStatus.COMPLETE
    event = AuditEvent.objects.get(action=AuditAction.UPLOAD_EXPIRED)
    assert event.target == f"blob:{old_id}" and event.case_id == state.case_id
    assert event.details == {
        "size": size, "received_bytes": CT_CHUNK_SIZE, "uploader": str(pcp.user.pk)
    }

    part = pcp.send("PUT", f"/api/blobs/{old_id}/parts/{CT_CHUNK_SIZE}", chunks[1])
    assert (part.status_code, part.json()["error"]) == (410, "upload_expired")
    root = enc.manifest(uuid.UUID(old_id), mime="x").root
    complete = pcp.call("POST", f"/api/blobs/{old_id}/complete", {"root": b64e(root)})
    assert (complete.status_code, complete.json()["error"]) == (410, "upload_expired")
    status = pcp.call("GET", f"/api/blobs/{old_id}/upload")
    assert (status.status_code, status.json()["error"]) == (410, "upload_expired")
    # Nobody downloads an expired upload.
    assert pcp.call("GET", f"/api/blobs/{old_id}").status_code == 404

    # --older-than-hours overrides the setting; a second run finds nothing more to do.
    call_command("expire_uploads", "--older-than-hours", "0", stdout=StringIO())
    assert Blob.objects.get(pk=fresh_id).status == BlobStatus.EXPIRED
    out = StringIO()
    call_command("expire_uploads", "--older-than-hours", "0", stdout=out)
    assert "0 upload(s) expired" in out.getvalue()
    assert AuditEvent.objects.filter(action=AuditAction.UPLOAD_EXPIRED).count() == 2


def test_expiry_follows_the_setting(room, settings) -> None:
    pcp, _, state = room
    blob_id = pcp.call("POST", f"/api/cases/{state.case_id}/blobs", {"size": 100}).json()[
        "blob_id"
    ]
    _age(blob_id, 3)
    settings.UPLOAD_EXPIRY_HOURS = 4
    call_command("expire_uploads", stdout=StringIO())
    assert Blob.objects.get(pk=blob_id).status == BlobStatus.UPLOADING
    settings.UPLOAD_EXPIRY_HOURS = 2
    call_command("expire_uploads", stdout=StringIO())
    assert Blob.objects.get(pk=blob_id).status == BlobStatus.EXPIRED


# --- ranges -------------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["bytes=10-5", "bytes=999999999-", "bytes=196656-"])
def test_unsatisfiable_range_is_416_with_the_size(room, header) -> None:
    pcp, derm, state = room
    blob_id, whole = _stored_blob(pcp, state.case_id)
    assert len(whole) == 196656
    refused = _ranged(derm, blob_id, header)
    assert refused.status_code == 416
    assert refused["Content-Range"] == f"bytes */{len(whole)}"
    assert refused.json()["error"] == "range_not_satisfiable"
    assert refused.json()["size"] == len(whole)
    assert _downloads(blob_id) == []  # nothing was delivered


def test_range_end_past_the_size_and_the_part_bound_is_clipped(room) -> None:
    pcp, derm, state = room
    blob_id, whole = _stored_blob(pcp, state.case_id, chunks_of=20)
    last = _ranged(derm, blob_id, f"bytes={len(whole) - 5}-{len(whole) + 100}")
    assert last.status_code == 206
    assert last["Content-Range"] == f"bytes {len(whole) - 5}-{len(whole) - 1}/{len(whole)}"
    assert collect(last) == whole[-5:]
    big = _ranged(derm, blob_id, "bytes=0-")
    assert big["Content-Length"] == str(MAX_PART_BYTES)
    assert collect(big) == whole[:MAX_PART_BYTES]


# --- one download audit per (device, blob) ----------------------------------------------------


def test_download_is_audited_once_when_the_first_range_is_not_at_zero(room) -> None:
    pcp, derm, state = room
    blob_id, whole = _stored_blob(pcp, state.case_id)
    middle = _ranged(derm, blob_id, "bytes=65552-")
    assert collect(middle) == whole[65552:]
    assert _downloads(blob_id) == [derm.device.device_id]
    assert collect(_ranged(derm, blob_id, "bytes=0-65551")) == whole[:65552]
    assert collect(derm.call("GET", f"/api/blobs/{blob_id}")) == whole
    assert _downloads(blob_id) == [derm.device.device_id]


def test_download_is_audited_once_when_the_first_range_is_at_zero(room) -> None:
    pcp, derm, state = room
    blob_id, whole = _stored_blob(pcp, state.case_id)
    collect(_ranged(derm, blob_id, "bytes=0-99"))
    collect(_ranged(derm, blob_id, "bytes=100-"))
    collect(_ranged(derm, blob_id, "bytes=0-"))
    assert _downloads(blob_id) == [derm.device.device_id]
    event = AuditEvent.objects.get(action=AuditAction.ATTACHMENT_DOWNLOADED)
    assert event.actor_id == derm.user.pk and event.case_id == state.case_id
    assert event.details == {"size": len(whole)}


def test_each_device_downloading_is_audited_once(room) -> None:
    pcp, derm, state = room
    blob_id, _ = _stored_blob(pcp, state.case_id)
    collect(_ranged(derm, blob_id, "bytes=200-300"))
    collect(pcp.call("GET", f"/api/blobs/{blob_id}"))
    collect(_ranged(pcp, blob_id, "bytes=5-"))
    collect(_ranged(derm, blob_id, "bytes=0-"))
    assert _downloads(blob_id) == [derm.device.device_id, pcp.device.device_id]
