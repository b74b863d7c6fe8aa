"""A case with content for the retention tests: messages from two members, an image
named by one of them, an orphaned complete upload and an unfinished one."""

from __future__ import annotations

import io
import os
import uuid
from dataclasses import dataclass, field

from django.core.files.storage import default_storage
from django.test import Client

from collab.accounts.models import User
from collab.cases import models as m
from collab.cases.services.messages import message_send
from collab.client.case_state import CaseState
from collab.crypto.attachment import AttachmentEncryptor
from collab.crypto.envelope import AttachmentRef
from collab.crypto.wire import b64e
from tests.support.actor import Actor
from tests.support.users import make_user, verified_client


@dataclass
class Content:
    state: CaseState
    ciphertexts: list[bytes] = field(default_factory=list)
    blob_ids: list[uuid.UUID] = field(default_factory=list)  # every blob of the case
    files: list[str] = field(default_factory=list)  # their storage names

    @property
    def case_id(self) -> uuid.UUID:
        return self.state.case_id


def upload(actor: Actor, case_id: uuid.UUID, *, complete: bool = True) -> tuple[uuid.UUID, bytes]:
    """An encrypted blob of ``actor``'s in the case: its id and root (complete) or the
    first part only (an unfinished upload)."""
    enc = AttachmentEncryptor()
    chunks = list(enc.chunks(io.BytesIO(os.urandom(70_000))))
    size = sum(len(c) for c in chunks)
    created = actor.call("POST", f"/api/cases/{case_id}/blobs", {"size": size})
    assert created.status_code == 201, created.content
    blob_id = uuid.UUID(created.json()["blob_id"])
    sent = chunks if complete else chunks[:1]
    offset = 0
    for chunk in sent:
        part = actor.send("PUT", f"/api/blobs/{blob_id}/parts/{offset}", chunk)
        assert part.status_code == 200, part.content
        offset += len(chunk)
    root = enc.manifest(blob_id, mime="image/png").root
    if complete:
        done = actor.call("POST", f"/api/blobs/{blob_id}/complete", {"root": b64e(root)})
        assert done.status_code == 200, done.content
    return blob_id, root


def send(actor: Actor, state: CaseState, text: str,
         attachments: tuple[AttachmentRef, ...] = ()) -> bytes:
    envelope = state.seal({"text": text}, attachments=attachments)
    message_send(user=actor.user, device_id=actor.device.device_id, case_id=state.case_id,
                 envelope=envelope)
    return bytes(envelope.ct)


def case_with_content(pcp: Actor, derm: Actor) -> Content:
    state = pcp.open_case()
    assert pcp.add(state, derm).status_code == 201
    derm_state = derm.join(state.case_id)
    content = Content(state)
    content.ciphertexts.append(send(pcp, state, "first private note"))
    image, root = upload(derm, state.case_id)
    content.ciphertexts.append(send(derm, derm_state, "an image", (AttachmentRef(image, root),)))
    content.ciphertexts.append(send(pcp, state, "second private note"))
    orphan, _ = upload(pcp, state.case_id)  # complete, named by no message
    unfinished, _ = upload(pcp, state.case_id, complete=False)
    content.blob_ids = [image, orphan, unfinished]
    content.files = [m.Blob.objects.get(pk=b).storage_name for b in content.blob_ids]
    assert all(default_storage.exists(name) for name in content.files)
    return content


def fresh(actor: Actor) -> Actor:
    """A new verified session for ``actor`` (a clock moved by days ends the old one)."""
    actor.client = verified_client(actor.user)
    return actor


def close(owner: Actor, case_id: uuid.UUID) -> None:
    fresh(owner)
    response = owner.call("POST", f"/api/cases/{case_id}/status", {"status": "closed"})
    assert response.status_code == 200, response.content


def reopen(owner: Actor, case_id: uuid.UUID) -> None:
    fresh(owner)
    response = owner.call("POST", f"/api/cases/{case_id}/status", {"status": "requested"})
    assert response.status_code == 200, response.content


def admin_client(username: str = "admin") -> tuple[User, Client]:
    admin = make_user(username, role="admin")
    return admin, verified_client(admin)
