"""Emission test for MESSAGE_RECALLED: the real route (Django's test client with a
device proof) writes exactly one event of ids only, and a refused recall writes none."""

from __future__ import annotations

import io
import uuid

import pytest

from collab.audit.models import AuditAction
from collab.cases.models import Message
from collab.crypto.attachment import AttachmentEncryptor
from collab.crypto.envelope import AttachmentRef
from collab.crypto.wire import b64e
from tests.audit.emissions import emits
from tests.audit.emissions.test_cases import assert_no_content, expected, fields, head_seq, only
from tests.audit.emissions.test_cases import written as written_since
from tests.cases.test_blobs import upload
from tests.cases.test_recall import recall, send, signed
from tests.support.actor import Actor

SECRET = "Biopsy result: melanoma in situ, left scapula"


@pytest.mark.django_db
@emits(AuditAction.MESSAGE_RECALLED)
def test_recall_is_recorded_with_ids_only_and_a_refused_one_is_not() -> None:
    pcp, derm = Actor("pcp").register(), Actor("derm", specialty="Dermatology").register()
    state = pcp.open_case()
    assert pcp.add(state, derm).status_code == 201
    derm.join(state.case_id)
    enc = AttachmentEncryptor()
    chunks = list(enc.chunks(io.BytesIO(b"image " * 300)))
    blob_id = uuid.UUID(upload(pcp, state.case_id, chunks))
    manifest = enc.manifest(blob_id, mime="image/png")
    assert pcp.call("POST", f"/api/blobs/{blob_id}/complete",
                    {"root": b64e(manifest.root)}).status_code == 200
    seq = send(pcp, state, SECRET, attachments=(AttachmentRef(blob_id, manifest.root),))
    ciphertext = bytes(Message.objects.get(seq=seq).ciphertext)
    body = signed(pcp, state.case_id, seq)
    # Refused (another member; then a forged signature): nothing recorded.
    before = head_seq()
    assert recall(derm, state.case_id, seq, signed(derm, state.case_id, seq)).status_code == 403
    forged = signed(pcp, state.case_id, seq, seed=derm.device.dsk_seed)
    assert recall(pcp, state.case_id, seq, forged).status_code == 400
    assert written_since(before) == []
    before = head_seq()
    response = recall(pcp, state.case_id, seq, body)
    assert response.status_code == 200, response.content
    event = only(before, AuditAction.MESSAGE_RECALLED)
    assert fields(event) == expected(
        AuditAction.MESSAGE_RECALLED,
        actor=pcp.user,
        device=pcp.device.device_id,
        case=state.case_id,
        target=f"message:{seq}",
        details={
            "seq": seq,
            "sender_device": str(pcp.device.device_id),
            "blobs": [str(blob_id)],
        },
    )
    assert_no_content(event, SECRET, ciphertext, body["sig"], manifest.key)
