from __future__ import annotations

import io
import uuid

import pytest

from collab.crypto import (
    AttachmentDecryptor,
    AttachmentEncryptor,
    CryptoError,
    Manifest,
    RootHasher,
    ciphertext_size,
    decrypt_stream,
)
from collab.crypto.attachment import CHUNK_SIZE, CT_CHUNK_SIZE

BLOB = uuid.UUID("b0000000-0000-4000-8000-000000000002")


def encrypt(data: bytes) -> tuple[list[bytes], Manifest]:
    enc = AttachmentEncryptor()
    chunks = list(enc.chunks(io.BytesIO(data)))
    return chunks, enc.manifest(BLOB, mime="image/png", width=2, height=3)


def decrypt(chunks: list[bytes], manifest: Manifest) -> bytes:
    dec = AttachmentDecryptor(manifest)
    out = b"".join(dec.update(c) for c in chunks)
    dec.finalize()
    return out


def refused(chunks: list[bytes], manifest: Manifest) -> str:
    with pytest.raises(CryptoError) as e:
        decrypt(chunks, manifest)
    return e.value.code


DATA = bytes(i % 251 for i in range(2 * CHUNK_SIZE + 100))


@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE])
def test_round_trip_sizes(size: int) -> None:
    data = DATA[:size] if size <= len(DATA) else bytes(size)
    chunks, m = encrypt(data)
    assert m.count == len(chunks) and m.size == size
    assert sum(map(len, chunks)) == ciphertext_size(size)
    assert decrypt(chunks, m) == data


def test_stream_decrypt_and_server_root() -> None:
    chunks, m = encrypt(DATA)
    blob = b"".join(chunks)
    assert b"".join(decrypt_stream(io.BytesIO(blob), m)) == DATA
    hasher = RootHasher()
    for i in range(0, len(blob), 1000):  # arbitrary upload pieces
        hasher.update(blob[i : i + 1000])
    digest = hasher.verify(m.root, ciphertext_size(m.size))
    assert (digest.count, digest.ct_size) == (3, len(blob))


def test_server_detects_wrong_root() -> None:
    chunks, m = encrypt(DATA)
    hasher = RootHasher()
    hasher.update(b"".join(chunks[:2]) + chunks[2][:-1] + b"\x00")
    with pytest.raises(CryptoError) as e:
        hasher.verify(m.root)
    assert e.value.code == "bad_hash"


def test_server_detects_wrong_size() -> None:
    chunks, m = encrypt(DATA)
    hasher = RootHasher()
    hasher.update(b"".join(chunks[:2]))
    with pytest.raises(CryptoError) as e:
        hasher.verify(m.root, ciphertext_size(m.size))
    assert e.value.code == "bad_length"


def test_server_rejects_empty_upload() -> None:
    with pytest.raises(CryptoError) as e:
        RootHasher().finalize()
    assert e.value.code == "truncated"


def test_reordered_chunks_rejected() -> None:
    chunks, m = encrypt(DATA)
    assert refused([chunks[1], chunks[0], chunks[2]], m) == "chunk_order"


def test_dropped_chunk_rejected() -> None:
    chunks, m = encrypt(DATA)
    assert refused([chunks[0], chunks[2]], m) == "chunk_order"


def test_truncated_stream_rejected() -> None:
    chunks, m = encrypt(DATA)
    assert refused(chunks[:2], m) == "truncated"
    with pytest.raises(CryptoError) as e:
        list(decrypt_stream(io.BytesIO(b"".join(chunks[:2])), m))
    assert e.value.code == "truncated"


def test_extended_stream_rejected() -> None:
    chunks, m = encrypt(DATA)
    assert refused([*chunks, chunks[2]], m) == "extended"


def test_chunk_from_other_file_rejected() -> None:
    chunks, m = encrypt(DATA)
    other, _ = encrypt(DATA)
    assert refused([chunks[0], other[1], chunks[2]], m) == "chunk_order"


def test_tampered_chunk_rejected() -> None:
    chunks, m = encrypt(DATA)
    assert refused([chunks[0], chunks[1][:-1] + b"\x00", chunks[2]], m) == "chunk_order"


def test_manifest_root_checked() -> None:
    chunks, m = encrypt(DATA)
    bad = Manifest(**{**m.__dict__, "root": bytes(64)})
    assert refused(chunks, bad) == "bad_hash"


def test_manifest_wire_round_trip_and_validation() -> None:
    _, m = encrypt(DATA)
    assert Manifest.from_wire(m.to_wire()) == m
    wire = m.to_wire()
    wire["count"] = 2
    with pytest.raises(CryptoError) as e:
        Manifest.from_wire(wire)
    assert e.value.code == "bad_field"


def test_encryptor_reads_short_reads_correctly() -> None:
    class Trickle(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self.buf = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def read(self, n: int = -1) -> bytes:
            return self.buf.read(min(n, 7000) if n >= 0 else 7000)

    enc = AttachmentEncryptor()
    chunks = list(enc.chunks(Trickle(DATA)))  # type: ignore[arg-type]
    assert [len(c) for c in chunks] == [CT_CHUNK_SIZE, CT_CHUNK_SIZE, 116]
