"""Encrypted attachments over HTTP: parts, root check, limits, members-only download."""

from __future__ import annotations

import io
import os
import uuid
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.core.files.storage import default_storage

from collab.cases.models import Blob
from collab.crypto.attachment import CT_CHUNK_SIZE, AttachmentEncryptor, decrypt_stream
from collab.crypto.wire import b64e
from tests.support.actor import Actor

pytestmark = pytest.mark.django_db


@pytest.fixture
def room():
    pcp = Actor("pcp").register()
    derm = Actor("derm", specialty="Dermatology").register()
    state = pcp.open_case()
    pcp.add(state, derm)
    return pcp, derm, state


def collect(response) -> bytes:
    async def gather() -> bytes:
        return b"".join([part async for part in response.streaming_content])

    return async_to_sync(gather)()


def encrypt(data: bytes):
    enc = AttachmentEncryptor()
    chunks = list(enc.chunks(io.BytesIO(data)))
    return enc, chunks


def upload(actor: Actor, case_id, chunks: list[bytes], part_chunks: int = 2):
    size = sum(len(c) for c in chunks)
    created = actor.call("POST", f"/api/cases/{case_id}/blobs", {"size": size})
    assert created.status_code == 201, created.content
    blob_id = created.json()["blob_id"]
    offset = 0
    for i in range(0, len(chunks), part_chunks):
        part = b"".join(chunks[i : i + part_chunks])
        response = actor.send("PUT", f"/api/blobs/{blob_id}/parts/{offset}", part)
        assert response.status_code == 200, response.content
        offset += len(part)
    return blob_id


def test_three_chunk_attachment_round_trips(room) -> None:
    pcp, derm, state = room
    data = os.urandom(2 * 65536 + 100)
    enc, chunks = encrypt(data)
    blob_id = upload(pcp, state.case_id, chunks)
    manifest = enc.manifest(uuid.UUID(blob_id), mime="application/octet-stream")
    done = pcp.call("POST", f"/api/blobs/{blob_id}/complete", {"root": b64e(manifest.root)})
    assert done.status_code == 200, done.content
    response = derm.call("GET", f"/api/blobs/{blob_id}")
    assert response.status_code == 200
    ciphertext = collect(response)
    assert ciphertext == b"".join(chunks)
    assert b"".join(decrypt_stream(io.BytesIO(ciphertext), manifest)) == data


def test_wrong_root_is_refused(room) -> None:
    pcp, _, state = room
    _, chunks = encrypt(os.urandom(1000))
    blob_id = upload(pcp, state.case_id, chunks)
    response = pcp.call("POST", f"/api/blobs/{blob_id}/complete", {"root": b64e(bytes(64))})
    assert response.status_code == 400
    assert response.json()["error"] == "bad_root"
    assert Blob.objects.get(pk=blob_id).status == "uploading"


def test_oversize_attachment_is_refused_up_front(room, settings) -> None:
    pcp, _, state = room
    settings.MAX_ATTACHMENT_BYTES = 1024 * 1024
    response = pcp.call("POST", f"/api/cases/{state.case_id}/blobs", {"size": 2 * 1024 * 1024})
    assert response.status_code == 413
    assert response.json()["error"] == "too_large"
    assert not Blob.objects.exists()


def test_upload_past_announced_size_is_discarded_leaving_nothing(room) -> None:
    pcp, _, state = room
    created = pcp.call("POST", f"/api/cases/{state.case_id}/blobs", {"size": 100}).json()
    name = Blob.objects.get(pk=created["blob_id"]).storage_name
    response = pcp.send("PUT", f"/api/blobs/{created['blob_id']}/parts/0", os.urandom(200))
    assert response.status_code == 413
    assert not Blob.objects.exists()
    assert not default_storage.exists(name)


def test_parts_must_arrive_in_order_and_retries_are_idempotent(room) -> None:
    pcp, _, state = room
    _, chunks = encrypt(os.urandom(3 * 65536))
    size = sum(len(c) for c in chunks)
    blob_id = pcp.call("POST", f"/api/cases/{state.case_id}/blobs", {"size": size}).json()[
        "blob_id"
    ]

    def put(offset: int, data: bytes) -> Any:
        return pcp.send("PUT", f"/api/blobs/{blob_id}/parts/{offset}", data)

    skipped = put(CT_CHUNK_SIZE, chunks[1])
    assert (skipped.status_code, skipped.json()["error"]) == (409, "out_of_order")
    assert put(0, chunks[0]).json()["received_bytes"] == CT_CHUNK_SIZE
    assert put(0, chunks[0]).json()["received_bytes"] == CT_CHUNK_SIZE  # retry
    assert put(0, chunks[1]).json()["error"] == "part_mismatch"
    assert Blob.objects.get(pk=blob_id).received_chunks == 1


def test_non_member_cannot_upload_or_download(room) -> None:
    pcp, _, state = room
    outsider = Actor("outsider").register()
    enc, chunks = encrypt(b"secret image bytes")
    blob_id = upload(pcp, state.case_id, chunks)
    manifest_root = enc.manifest(uuid.UUID(blob_id), mime="x").root
    pcp.call("POST", f"/api/blobs/{blob_id}/complete", {"root": b64e(manifest_root)})
    assert (
        outsider.call("POST", f"/api/cases/{state.case_id}/blobs", {"size": 100}).status_code == 403
    )
    assert outsider.call("GET", f"/api/blobs/{blob_id}").status_code == 404


@pytest.mark.hostile_input  # sends input the description refuses, on purpose
def test_ranged_download_returns_the_asked_bytes(room) -> None:
    pcp, derm, state = room
    enc, chunks = encrypt(os.urandom(3 * 65536))
    blob_id = upload(pcp, state.case_id, chunks)
    pcp.call(
        "POST",
        f"/api/blobs/{blob_id}/complete",
        {"root": b64e(enc.manifest(uuid.UUID(blob_id), mime="x").root)},
    )
    whole = b"".join(chunks)
    response = derm.send("GET", f"/api/blobs/{blob_id}", b"", extra={"HTTP_RANGE": "bytes=65552-"})
    assert response.status_code == 206
    assert response["Content-Range"] == f"bytes 65552-{len(whole) - 1}/{len(whole)}"
    assert collect(response) == whole[65552:]
    beyond = derm.send(
        "GET", f"/api/blobs/{blob_id}", b"", extra={"HTTP_RANGE": "bytes=999999999-"}
    )
    assert (beyond.status_code, beyond["Content-Range"]) == (416, f"bytes */{len(whole)}")
    bad = derm.send("GET", f"/api/blobs/{blob_id}", b"", extra={"HTTP_RANGE": "items=0-5"})
    assert (bad.status_code, bad.json()["error"]) == (400, "bad_range")
