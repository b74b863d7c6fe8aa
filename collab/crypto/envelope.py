"""Message envelopes: a signed header the server can check without keys and
a secretbox ciphertext only epoch-key holders can open.

    header = "CR1/msg\\0" || version u8 || case_id || epoch u64 || log_head(64)
             || sender_user_id || sender_device_id || client_msg_id(16)
             || sender_seq u64 || sent_ms u64 || var(content_type ascii)
             || nonce(24) || ct_len u32 || H(ct)(64)
             || u32 n || (blob_id || root(64))*n
    sig    = Ed25519(DSK, header)
    inner  = "CR1/inner\\0" || case_id || epoch u64 || sender_device_id
             || client_msg_id(16) || sender_seq u64 || var(body UTF-8 JSON)
    ct     = secretbox(inner, nonce, K_e)      (MAC || ciphertext)
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import primitives as prim
from .encoding import Reader, fixed, pack_list, u8, u32, u64, uuid_bytes, var
from .errors import CryptoError
from .log import LogEntry
from .wire import b64e, get_b64, get_int, get_list, get_str, get_uuid

TAG = b"CR1/msg\x00"
INNER_TAG = b"CR1/inner\x00"
VERSION = 1
MAX_CONTENT_TYPE = 64
MAX_ATTACHMENTS = 64
DEFAULT_MAX_CT_LEN = 256 * 1024


@dataclass(frozen=True)
class AttachmentRef:
    blob_id: uuid.UUID
    root: bytes  # attachment.root of the blob's ciphertext chunks


@dataclass(frozen=True)
class Header:
    case_id: uuid.UUID
    epoch: int
    log_head: bytes
    sender_user_id: uuid.UUID
    sender_device_id: uuid.UUID
    client_msg_id: bytes
    sender_seq: int
    sent_ms: int
    content_type: str
    nonce: bytes
    ct_len: int
    ct_hash: bytes
    attachments: tuple[AttachmentRef, ...] = ()
    version: int = VERSION

    def encode(self) -> bytes:
        return (
            TAG
            + u8(self.version)
            + uuid_bytes(self.case_id)
            + u64(self.epoch)
            + fixed(self.log_head, 64, "log_head")
            + uuid_bytes(self.sender_user_id)
            + uuid_bytes(self.sender_device_id)
            + fixed(self.client_msg_id, 16, "client_msg_id")
            + u64(self.sender_seq)
            + u64(self.sent_ms)
            + var(_content_type_bytes(self.content_type))
            + fixed(self.nonce, 24, "nonce")
            + u32(self.ct_len)
            + fixed(self.ct_hash, 64, "ct_hash")
            + pack_list(self.attachments, lambda a: uuid_bytes(a.blob_id) + fixed(a.root, 64))
        )

    @classmethod
    def decode(cls, data: bytes) -> Header:
        r = Reader(data)
        r.tag(TAG)
        version = r.u8()
        if version != VERSION:
            raise CryptoError("unsupported_version", f"envelope version {version}")
        h = cls(
            case_id=r.uuid(),
            epoch=r.u64(),
            log_head=r.take(64),
            sender_user_id=r.uuid(),
            sender_device_id=r.uuid(),
            client_msg_id=r.take(16),
            sender_seq=r.u64(),
            sent_ms=r.u64(),
            content_type=_content_type_str(r.var(MAX_CONTENT_TYPE)),
            nonce=r.take(24),
            ct_len=r.u32(),
            ct_hash=r.take(64),
            attachments=tuple(
                r.list(lambda rr: AttachmentRef(rr.uuid(), rr.take(64)), MAX_ATTACHMENTS)
            ),
            version=version,
        )
        r.done()
        return h


def _content_type_bytes(value: str) -> bytes:
    if not isinstance(value, str) or not value.isascii():
        raise CryptoError("bad_field", "content_type must be printable ASCII")
    raw = value.encode("ascii")
    if not raw or len(raw) > MAX_CONTENT_TYPE or not all(0x21 <= b <= 0x7E for b in raw):
        raise CryptoError("bad_field", "content_type must be 1..64 printable ASCII bytes")
    return raw


def _content_type_str(raw: bytes) -> str:
    if not raw.isascii():
        raise CryptoError("bad_field", "content_type must be printable ASCII")
    value = raw.decode("ascii")
    _content_type_bytes(value)
    return value


@dataclass(frozen=True)
class Envelope:
    header: Header
    ct: bytes
    sig: bytes = field(repr=False)

    def to_wire(self) -> dict[str, Any]:
        h = self.header
        return {
            "v": h.version,
            "case_id": str(h.case_id),
            "epoch": h.epoch,
            "log_head": b64e(h.log_head),
            "sender_user_id": str(h.sender_user_id),
            "sender_device_id": str(h.sender_device_id),
            "client_msg_id": b64e(h.client_msg_id),
            "sender_seq": h.sender_seq,
            "sent_ms": h.sent_ms,
            "content_type": h.content_type,
            "nonce": b64e(h.nonce),
            "ct_len": h.ct_len,
            "ct_hash": b64e(h.ct_hash),
            "attachments": [
                {"blob_id": str(a.blob_id), "root": b64e(a.root)} for a in h.attachments
            ],
            "ct": b64e(self.ct),
            "sig": b64e(self.sig),
        }

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Envelope:
        version = get_int(d, "v", 255)
        if version != VERSION:
            raise CryptoError("unsupported_version", f"envelope version {version}")
        atts = get_list(d, "attachments")
        if len(atts) > MAX_ATTACHMENTS:
            raise CryptoError("bad_length", "too many attachments")
        header = Header(
            case_id=get_uuid(d, "case_id"),
            epoch=get_int(d, "epoch"),
            log_head=get_b64(d, "log_head", 64),
            sender_user_id=get_uuid(d, "sender_user_id"),
            sender_device_id=get_uuid(d, "sender_device_id"),
            client_msg_id=get_b64(d, "client_msg_id", 16),
            sender_seq=get_int(d, "sender_seq"),
            sent_ms=get_int(d, "sent_ms"),
            content_type=_content_type_str(get_str(d, "content_type").encode("utf-8")),
            nonce=get_b64(d, "nonce", 24),
            ct_len=get_int(d, "ct_len", 0xFFFFFFFF),
            ct_hash=get_b64(d, "ct_hash", 64),
            attachments=tuple(
                AttachmentRef(get_uuid(a, "blob_id"), get_b64(a, "root", 64)) for a in atts
            ),
            version=version,
        )
        return cls(header, get_b64(d, "ct"), get_b64(d, "sig", 64))


def encode_body(body: Mapping[str, Any]) -> bytes:
    """Deterministic UTF-8 JSON (sorted keys, no spaces). Receivers accept any
    JSON object: the body is encrypted, never signed or hashed on its own."""
    return json.dumps(
        body, ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False
    ).encode("utf-8")


def inner_bytes(h: Header, body: bytes) -> bytes:
    return (
        INNER_TAG
        + uuid_bytes(h.case_id)
        + u64(h.epoch)
        + uuid_bytes(h.sender_device_id)
        + fixed(h.client_msg_id, 16, "client_msg_id")
        + u64(h.sender_seq)
        + var(body)
    )


def seal_message(
    *,
    dsk_seed: bytes,
    epoch_key: bytes,
    case_id: uuid.UUID,
    epoch: int,
    log_head: bytes,
    sender_user_id: uuid.UUID,
    sender_device_id: uuid.UUID,
    sender_seq: int,
    sent_ms: int,
    content_type: str,
    body: Mapping[str, Any] | bytes,
    attachments: Sequence[AttachmentRef] = (),
    client_msg_id: bytes | None = None,
    nonce: bytes | None = None,
) -> Envelope:
    """Encrypt and sign one message. `body` is a JSON object (or its bytes)."""
    body_bytes = body if isinstance(body, bytes) else encode_body(body)
    draft = Header(
        case_id=case_id,
        epoch=epoch,
        log_head=log_head,
        sender_user_id=sender_user_id,
        sender_device_id=sender_device_id,
        client_msg_id=client_msg_id if client_msg_id is not None else prim.random_bytes(16),
        sender_seq=sender_seq,
        sent_ms=sent_ms,
        content_type=content_type,
        nonce=nonce if nonce is not None else prim.random_bytes(24),
        ct_len=0,
        ct_hash=bytes(64),
        attachments=tuple(attachments),
    )
    ct = prim.secretbox_seal(epoch_key, draft.nonce, inner_bytes(draft, body_bytes))
    header = dataclasses.replace(draft, ct_len=len(ct), ct_hash=prim.sha512(ct))
    return Envelope(header, ct, prim.sign(dsk_seed, header.encode()))


def verify_envelope(env: Envelope, dsk_pub: bytes, *, max_ct_len: int = DEFAULT_MAX_CT_LEN) -> None:
    """Checks possible without keys (server and receivers): version,
    signature, ct_len, H(ct), size limit — in that order."""
    if env.header.version != VERSION:
        raise CryptoError("unsupported_version", f"envelope version {env.header.version}")
    prim.verify(dsk_pub, env.header.encode(), env.sig)
    if env.header.ct_len != len(env.ct):
        raise CryptoError("bad_length", "ct_len does not match the ciphertext")
    if prim.sha512(env.ct) != env.header.ct_hash:
        raise CryptoError("bad_hash", "H(ct) does not match the header")
    if len(env.ct) > max_ct_len:
        raise CryptoError("too_large", "ciphertext exceeds the size limit")


def check_sender(env: Envelope, entry: LogEntry) -> bytes:
    """The sender must be a roster device of the (verified) log entry the
    header names; returns that device's DSK for verify_envelope."""
    h = env.header
    if h.case_id != entry.case_id:
        raise CryptoError("wrong_case", "message belongs to another case")
    if h.epoch != entry.epoch:
        raise CryptoError("wrong_epoch", "message epoch is not this entry's epoch")
    if h.log_head != entry.entry_hash():
        raise CryptoError("stale_head", "log_head is not this entry's hash")
    device = entry.roster.device(h.sender_device_id)
    if device is None or device.user_id != h.sender_user_id:
        raise CryptoError("unauthorized_author", "sender device is not in the roster")
    return device.dsk_pub


def open_envelope(
    env: Envelope,
    epoch_key: bytes,
    *,
    sender_dsk_pub: bytes,
    max_ct_len: int = DEFAULT_MAX_CT_LEN,
) -> dict[str, Any]:
    """Verify, decrypt, and check `inner` against the header (fail closed)."""
    verify_envelope(env, sender_dsk_pub, max_ct_len=max_ct_len)
    h = env.header
    inner = prim.secretbox_open(epoch_key, h.nonce, env.ct)
    prefix = inner_bytes(h, b"")[:-4]
    if not inner.startswith(prefix):
        raise CryptoError("inner_mismatch", "inner fields differ from the signed header")
    r = Reader(inner[len(prefix) :])
    try:
        raw = r.var()
        r.done()
    except CryptoError as exc:
        raise CryptoError("inner_mismatch", "inner body is malformed") from exc
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CryptoError("bad_body", "body is not UTF-8 JSON") from exc
    if not isinstance(body, dict):
        raise CryptoError("bad_body", "body must be a JSON object")
    _check_manifests(body, h)
    return body


def _check_manifests(body: dict[str, Any], h: Header) -> None:
    """Manifests inside the body must name exactly the signed attachment list."""
    manifests = body.get("attachments", [])
    if not isinstance(manifests, list):
        raise CryptoError("bad_body", "attachments must be a list")
    try:
        refs = [(get_uuid(m, "blob_id"), get_b64(m, "root", 64)) for m in manifests]
    except CryptoError as exc:
        raise CryptoError("bad_body", f"bad attachment manifest: {exc.code}") from exc
    if refs != [(a.blob_id, a.root) for a in h.attachments]:
        raise CryptoError("inner_mismatch", "attachment manifests differ from the header")


@dataclass(frozen=True)
class Gap:
    """Messages from `device_id` with these sender_seq values never arrived."""

    device_id: uuid.UUID
    first_missing: int
    last_missing: int


class ReplayGuard:
    """Receiver-side replay filter, one per case: drops a seen client_msg_id
    or a non-increasing sender_seq, reports gaps as missing messages."""

    def __init__(self) -> None:
        self._seen: dict[uuid.UUID, set[bytes]] = {}
        self._last_seq: dict[uuid.UUID, int] = {}

    def check(self, header: Header) -> Gap | None:
        dev = header.sender_device_id
        if header.client_msg_id in self._seen.get(dev, set()):
            raise CryptoError("replay", "client_msg_id already seen")
        last = self._last_seq.get(dev)
        if last is not None and header.sender_seq <= last:
            raise CryptoError("replay", "sender_seq did not increase")
        if last is not None and header.sender_seq > last + 1:
            return Gap(dev, last + 1, header.sender_seq - 1)
        return None

    def accept(self, header: Header) -> Gap | None:
        """check(), then remember the message."""
        gap = self.check(header)
        self._seen.setdefault(header.sender_device_id, set()).add(header.client_msg_id)
        self._last_seq[header.sender_device_id] = header.sender_seq
        return gap
