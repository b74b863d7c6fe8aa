"""JSON shapes of stored objects, shared by views and consumers."""

from __future__ import annotations

from typing import Any

from collab.cases.models import Case, LogEntry, Message
from collab.crypto.envelope import Envelope, Header
from collab.crypto.wire import b64e


def message_wire(message: Message) -> dict[str, Any]:
    envelope = Envelope(
        Header.decode(bytes(message.header)), bytes(message.ciphertext), bytes(message.signature)
    )
    return {
        "seq": message.seq,
        "stored_at": message.stored_at.isoformat(),
        "envelope": envelope.to_wire(),
        "urgent": message.urgent,
    }


def case_wire(case: Case) -> dict[str, Any]:
    return {
        "id": str(case.pk),
        "specialty": case.specialty,
        "urgency": case.urgency,
        "status": case.status,
        "opened_by": str(case.opened_by_id),
        "opened_at": case.opened_at.isoformat(),
        "head": {"epoch": case.head_epoch, "hash": b64e(bytes(case.head_hash))},
        "last_seq": case.last_seq,
        "claimed": case.claimed_by_id is not None,
        "status_changed_at": case.status_changed_at.isoformat() if case.status_changed_at else None,
    }


def log_entry_wire(entry: LogEntry) -> dict[str, Any]:
    return {
        "epoch": entry.epoch,
        "hash": b64e(bytes(entry.entry_hash)),
        "entry": b64e(bytes(entry.raw)),
        "committed_at": entry.committed_at.isoformat(),
    }
