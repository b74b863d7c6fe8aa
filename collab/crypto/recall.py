"""Recall of a message: the sender's signed statement that a message is withdrawn.

A recall names one stored message by everything that fixes it (the case, its server
sequence number, the device that sent it, its client message id and the hash of its
signed header) and is signed by the recalling device's DSK: the sending device, or
another device of the same user. A server cannot make one (it holds no DSK), so a
client that finds a removed message without a valid recall knows the server removed it.

    recall = "CR1/recall\\0" || case_id(16) || seq u64 || sender_device_id(16)
             || client_msg_id(16) || H(header)(64) || recall_device_id(16)
             || recalled_ms u64
    sig    = Ed25519(DSK of recall_device_id, recall)
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import primitives as prim
from .encoding import Reader, fixed, u64, uuid_bytes
from .envelope import Header
from .errors import CryptoError
from .wire import b64e, get_b64, get_int, get_uuid

TAG = b"CR1/recall\x00"


@dataclass(frozen=True)
class Recall:
    case_id: uuid.UUID
    seq: int
    sender_device_id: uuid.UUID
    client_msg_id: bytes
    header_hash: bytes
    device_id: uuid.UUID  # the recalling device (signs the statement)
    recalled_ms: int

    def encode(self) -> bytes:
        return (
            TAG
            + uuid_bytes(self.case_id)
            + u64(self.seq)
            + uuid_bytes(self.sender_device_id)
            + fixed(self.client_msg_id, 16, "client_msg_id")
            + fixed(self.header_hash, 64, "header_hash")
            + uuid_bytes(self.device_id)
            + u64(self.recalled_ms)
        )

    @classmethod
    def decode(cls, data: bytes) -> Recall:
        r = Reader(data)
        r.tag(TAG)
        recall = cls(
            case_id=r.uuid(),
            seq=r.u64(),
            sender_device_id=r.uuid(),
            client_msg_id=r.take(16),
            header_hash=r.take(64),
            device_id=r.uuid(),
            recalled_ms=r.u64(),
        )
        r.done()
        return recall

    def to_wire(self) -> dict[str, Any]:
        return {
            "case_id": str(self.case_id),
            "seq": self.seq,
            "sender_device_id": str(self.sender_device_id),
            "client_msg_id": b64e(self.client_msg_id),
            "header_hash": b64e(self.header_hash),
            "device_id": str(self.device_id),
            "recalled_ms": self.recalled_ms,
        }

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Recall:
        return cls(
            case_id=get_uuid(d, "case_id"),
            seq=get_int(d, "seq"),
            sender_device_id=get_uuid(d, "sender_device_id"),
            client_msg_id=get_b64(d, "client_msg_id", 16),
            header_hash=get_b64(d, "header_hash", 64),
            device_id=get_uuid(d, "device_id"),
            recalled_ms=get_int(d, "recalled_ms"),
        )


def header_hash(header: Header | bytes) -> bytes:
    """H of the header's canonical bytes (what the sender signed)."""
    raw = header.encode() if isinstance(header, Header) else bytes(header)
    return prim.sha512(raw)


def recall_for(
    header: Header, *, seq: int, device_id: uuid.UUID, recalled_ms: int
) -> Recall:
    """The statement recalling the message with this header, stored at ``seq``."""
    return Recall(
        case_id=header.case_id,
        seq=seq,
        sender_device_id=header.sender_device_id,
        client_msg_id=header.client_msg_id,
        header_hash=header_hash(header),
        device_id=device_id,
        recalled_ms=recalled_ms,
    )


def sign_recall(dsk_seed: bytes, recall: Recall) -> bytes:
    return prim.sign(dsk_seed, recall.encode())


def verify_recall(dsk_pub: bytes, recall: Recall, sig: bytes) -> None:
    """Raises CryptoError (bad_signature, non_canonical_signature, low_order_key, ...)."""
    prim.verify(dsk_pub, recall.encode(), sig)


def check_recall_names(recall: Recall, header: Header, seq: int) -> None:
    """The statement names exactly this message (case, seq, sender device, client id and
    header hash), else ``recall_mismatch``: a valid recall of one message never hides
    another."""
    if (
        recall.case_id != header.case_id
        or recall.seq != seq
        or recall.sender_device_id != header.sender_device_id
        or recall.client_msg_id != header.client_msg_id
        or recall.header_hash != header_hash(header)
    ):
        raise CryptoError("recall_mismatch", "the recall names another message")
