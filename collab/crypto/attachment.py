"""Chunked attachment encryption (constant memory on both ends).

    nonce_i = prefix(16) || u64(i | 2^63 if i is the last chunk else i)
    c_i     = secretbox(chunk_i, nonce_i, K_f)   (MAC || ciphertext; nonce
              not stored, it is derived from the manifest and the index)
    root    = SHA-512("CR1/att\\0" || u64 n || H(c_0) || ... || H(c_{n-1}))

Plaintext chunks are 64 KiB except the last (1..64 KiB; an empty file is one
empty chunk). The final bit makes truncation and extension detectable; the
index in the nonce makes reordering detectable.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from . import primitives as prim
from .encoding import fixed, u64
from .errors import CryptoError
from .wire import b64e, get_b64, get_int, get_str, get_uuid

TAG = b"CR1/att\x00"
CHUNK_SIZE = 65536
CT_CHUNK_SIZE = CHUNK_SIZE + prim.MAC_LEN
LAST_FLAG = 1 << 63
KEY_LEN = 32
PREFIX_LEN = 16


def chunk_count(size: int) -> int:
    return max(1, -(-size // CHUNK_SIZE))


def ciphertext_size(size: int) -> int:
    """Exact stored size of a blob whose plaintext is `size` bytes."""
    return size + prim.MAC_LEN * chunk_count(size)


def chunk_nonce(prefix: bytes, index: int, last: bool) -> bytes:
    if not 0 <= index < LAST_FLAG:
        raise CryptoError("bad_length", "chunk index out of range")
    return fixed(prefix, PREFIX_LEN, "prefix") + u64(index | LAST_FLAG if last else index)


def root_of(chunk_hashes: list[bytes]) -> bytes:
    return prim.sha512(TAG + u64(len(chunk_hashes)) + b"".join(chunk_hashes))


@dataclass(frozen=True)
class Manifest:
    """Travels inside the encrypted message body; never seen by the server."""

    blob_id: uuid.UUID
    key: bytes
    prefix: bytes
    chunk_size: int
    count: int
    size: int
    mime: str
    width: int
    height: int
    root: bytes

    def check(self) -> None:
        fixed(self.key, KEY_LEN, "key")
        fixed(self.prefix, PREFIX_LEN, "prefix")
        fixed(self.root, 64, "root")
        if self.chunk_size != CHUNK_SIZE or self.count != chunk_count(self.size):
            raise CryptoError("bad_field", "manifest chunk_size/count do not match size")

    def to_wire(self) -> dict[str, Any]:
        return {
            "blob_id": str(self.blob_id),
            "key": b64e(self.key),
            "prefix": b64e(self.prefix),
            "chunk_size": self.chunk_size,
            "count": self.count,
            "size": self.size,
            "mime": self.mime,
            "width": self.width,
            "height": self.height,
            "root": b64e(self.root),
        }

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> Manifest:
        m = cls(
            blob_id=get_uuid(d, "blob_id"),
            key=get_b64(d, "key", KEY_LEN),
            prefix=get_b64(d, "prefix", PREFIX_LEN),
            chunk_size=get_int(d, "chunk_size"),
            count=get_int(d, "count"),
            size=get_int(d, "size"),
            mime=get_str(d, "mime"),
            width=get_int(d, "width", 0xFFFFFFFF),
            height=get_int(d, "height", 0xFFFFFFFF),
            root=get_b64(d, "root", 64),
        )
        m.check()
        return m


def _read_full(f: BinaryIO, n: int) -> bytes:
    """read() may return short on pipes and sockets; loop until n or EOF."""
    parts: list[bytes] = []
    got = 0
    while got < n:
        part = f.read(n - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


class AttachmentEncryptor:
    """Iterate chunks(f) to get ciphertext chunks; then manifest() describes it."""

    def __init__(self, key: bytes | None = None, prefix: bytes | None = None) -> None:
        self.key = fixed(key, KEY_LEN, "key") if key is not None else prim.random_bytes(KEY_LEN)
        self.prefix = (
            fixed(prefix, PREFIX_LEN, "prefix")
            if prefix is not None
            else prim.random_bytes(PREFIX_LEN)
        )
        self._hashes: list[bytes] = []
        self._size = 0
        self._done = False

    def chunks(self, f: BinaryIO) -> Iterator[bytes]:
        if self._done or self._hashes:
            raise CryptoError("bad_field", "an encryptor encrypts one file once")
        current = _read_full(f, CHUNK_SIZE)
        index = 0
        while True:
            # One chunk of lookahead tells us which chunk is the last.
            following = _read_full(f, CHUNK_SIZE) if len(current) == CHUNK_SIZE else b""
            last = not following
            c = prim.secretbox_seal(self.key, chunk_nonce(self.prefix, index, last), current)
            self._hashes.append(prim.sha512(c))
            self._size += len(current)
            yield c
            if last:
                break
            current, index = following, index + 1
        self._done = True

    def manifest(
        self, blob_id: uuid.UUID, *, mime: str, width: int = 0, height: int = 0
    ) -> Manifest:
        if not self._done:
            raise CryptoError("truncated", "encryption has not finished")
        return Manifest(
            blob_id=blob_id,
            key=self.key,
            prefix=self.prefix,
            chunk_size=CHUNK_SIZE,
            count=len(self._hashes),
            size=self._size,
            mime=mime,
            width=width,
            height=height,
            root=root_of(self._hashes),
        )


@dataclass(frozen=True)
class BlobDigest:
    root: bytes
    count: int
    ct_size: int


class RootHasher:
    """Server side, no key: feed the uploaded ciphertext in any pieces and
    compare the root with the one in the signed message header. Memory is one
    chunk plus 64 bytes per chunk."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._hashes: list[bytes] = []
        self._size = 0

    def update(self, data: bytes) -> None:
        self._buf += data
        self._size += len(data)
        # Keep the final chunk buffered: only the end of input reveals it.
        while len(self._buf) > CT_CHUNK_SIZE:
            self._hashes.append(prim.sha512(bytes(self._buf[:CT_CHUNK_SIZE])))
            del self._buf[:CT_CHUNK_SIZE]

    def finalize(self) -> BlobDigest:
        if len(self._buf) < prim.MAC_LEN:
            raise CryptoError("truncated", "final chunk is missing or shorter than its MAC")
        hashes = [*self._hashes, prim.sha512(bytes(self._buf))]
        return BlobDigest(root_of(hashes), len(hashes), self._size)

    def verify(self, expected_root: bytes, expected_ct_size: int | None = None) -> BlobDigest:
        digest = self.finalize()
        if expected_ct_size is not None and digest.ct_size != expected_ct_size:
            raise CryptoError("bad_length", "blob size differs from the declared size")
        if digest.root != expected_root:
            raise CryptoError("bad_hash", "blob root differs from the signed root")
        return digest


class AttachmentDecryptor:
    """Feed ciphertext chunks in order; each call returns the plaintext chunk.
    finalize() must be called: it detects truncation and checks the root."""

    def __init__(self, manifest: Manifest) -> None:
        manifest.check()
        self._m = manifest
        self._index = 0
        self._hashes: list[bytes] = []
        self._size = 0
        self._done = False

    def update(self, c: bytes) -> bytes:
        if self._done:
            raise CryptoError("extended", "data after the final chunk")
        if not prim.MAC_LEN <= len(c) <= CT_CHUNK_SIZE:
            raise CryptoError("bad_length", "chunk has an impossible size")
        plain = self._open(c)
        if not self._done and len(plain) != CHUNK_SIZE:
            raise CryptoError("bad_length", "short chunk that is not the last")
        if self._done and not plain and self._index > 0:
            raise CryptoError("bad_length", "empty final chunk")
        self._hashes.append(prim.sha512(c))
        self._size += len(plain)
        self._index += 1
        return plain

    def _open(self, c: bytes) -> bytes:
        key, prefix, i = self._m.key, self._m.prefix, self._index
        for last in (False, True):
            try:
                plain = prim.secretbox_open(key, chunk_nonce(prefix, i, last), c)
            except CryptoError:
                continue
            self._done = last
            return plain
        # Authenticates under neither nonce for this position: moved or altered.
        raise CryptoError("chunk_order", f"chunk {i} is not chunk {i} of this file")

    def finalize(self) -> None:
        if not self._done:
            raise CryptoError("truncated", "stream ended before the final chunk")
        if self._index != self._m.count or self._size != self._m.size:
            raise CryptoError("bad_length", "chunk count or size differs from the manifest")
        if root_of(self._hashes) != self._m.root:
            raise CryptoError("bad_hash", "root differs from the manifest")


def decrypt_stream(f: BinaryIO, manifest: Manifest) -> Iterator[bytes]:
    """Yield plaintext chunks read from a ciphertext file object; raises at
    the end on truncation, or as soon as a chunk is out of place."""
    dec = AttachmentDecryptor(manifest)
    while True:
        c = _read_full(f, CT_CHUNK_SIZE)
        if not c:
            break
        yield dec.update(c)
    dec.finalize()
