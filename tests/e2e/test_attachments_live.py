"""A 25 MB encrypted attachment through a real server, with bounded server memory."""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from collections.abc import Iterator

import pytest

from collab.crypto.attachment import CT_CHUNK_SIZE, AttachmentDecryptor, AttachmentEncryptor
from collab.crypto.wire import b64e
from tests.support.actor import Actor
from tests.support.live import PIDS, daphne_servers, peak_rss_kib

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

SIZE = 25 * 1024 * 1024


def test_25_mb_attachment_round_trips_with_bounded_server_memory() -> None:
    with daphne_servers(1) as (base,):
        pcp = Actor("pcp").register().go_live(base)
        derm = Actor("derm", specialty="Dermatology").register().go_live(base)
        state = pcp.open_case()
        pcp.add(state, derm)
        pid = PIDS[base]
        pcp.call("GET", "/api/cases")  # warm the process up before the baseline
        baseline = peak_rss_kib(pid)

        plaintext = os.urandom(SIZE)
        encryptor = AttachmentEncryptor()
        size = SIZE + 16 * (-(-SIZE // 65536))
        blob_id = pcp.call("POST", f"/api/cases/{state.case_id}/blobs", {"size": size}).json()[
            "blob_id"
        ]
        offset, part = 0, bytearray()
        for chunk in encryptor.chunks(io.BytesIO(plaintext)):
            part += chunk
            if len(part) == 16 * CT_CHUNK_SIZE:
                pcp.web.put_bytes(f"/api/blobs/{blob_id}/parts/{offset}", bytes(part))
                offset += len(part)
                part = bytearray()
        if part:
            pcp.web.put_bytes(f"/api/blobs/{blob_id}/parts/{offset}", bytes(part))
        manifest = encryptor.manifest(uuid.UUID(blob_id), mime="image/jpeg")
        done = pcp.call("POST", f"/api/blobs/{blob_id}/complete", {"root": b64e(manifest.root)})
        assert done.status_code == 200, done.content

        decryptor = AttachmentDecryptor(manifest)
        digest = hashlib.sha256()
        pending = bytearray()
        for block in ranged_download(derm, blob_id, size):
            # The network hands over arbitrary pieces; the decryptor takes whole chunks.
            pending += block
            while len(pending) > CT_CHUNK_SIZE:
                digest.update(decryptor.update(bytes(pending[:CT_CHUNK_SIZE])))
                del pending[:CT_CHUNK_SIZE]
        digest.update(decryptor.update(bytes(pending)))
        decryptor.finalize()
        assert digest.hexdigest() == hashlib.sha256(plaintext).hexdigest()

        growth_mib = (peak_rss_kib(pid) - baseline) / 1024
        print(f"\nserver peak RSS growth for a 25 MiB round trip: {growth_mib:.1f} MiB")
        # Holding the file would cost at least its size; streaming costs a few parts.
        assert growth_mib < 12, growth_mib


def ranged_download(actor: Actor, blob_id: str, size: int) -> Iterator[bytes]:
    """Fetch the blob a range at a time, as clients do to keep server memory bounded."""
    assert actor.http is not None
    start = 0
    while start < size:
        end = min(size, start + 16 * CT_CHUNK_SIZE) - 1
        got = 0
        for block in actor.http.stream(f"/api/blobs/{blob_id}", {"Range": f"bytes={start}-{end}"}):
            got += len(block)
            yield block
        assert got == end - start + 1
        start = end + 1
