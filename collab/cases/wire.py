"""JSON shapes of stored objects, shared by views and consumers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from collab.cases.models import Case, Invitation, JoinKind, JoinRequest, LogEntry, Message
from collab.crypto.envelope import Envelope, Header
from collab.crypto.recall import recall_for
from collab.crypto.wire import b64e


def message_wire(message: Message) -> dict[str, Any]:
    return message_wire_row(message.seq, message.stored_at, message.header,
                            message.ciphertext, message.signature, message.urgent,
                            message.removed_at, message.removed_reason, message.recall_sig,
                            message.recall_device_id)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ms_datetime(ms: int) -> datetime:
    """A Unix time in milliseconds as an exact aware datetime (no float rounding)."""
    return _EPOCH + timedelta(milliseconds=ms)


def datetime_ms(at: datetime) -> int:
    return (at - _EPOCH) // timedelta(milliseconds=1)


def tombstone_wire(seq: int, stored_at: Any, header: Any, urgent: bool, removed_at: datetime,
                   reason: str, recall_sig: Any, recall_device_id: Any) -> dict[str, Any]:
    """A removed message (protocol.md §5): who sent it, when and why it went, and the
    sender's signed recall for clients to verify; no envelope, no ciphertext."""
    h = Header.decode(bytes(header))
    recall = None
    if recall_sig is not None and recall_device_id is not None:
        statement = recall_for(h, seq=seq, device_id=recall_device_id,
                               recalled_ms=datetime_ms(removed_at))
        recall = {**statement.to_wire(), "sig": b64e(bytes(recall_sig))}
    return {
        "seq": seq,
        "stored_at": stored_at.isoformat(),
        "urgent": urgent,
        "removed": {
            "reason": reason,
            "at": removed_at.isoformat(),
            "sender_user_id": str(h.sender_user_id),
            "sender_device_id": str(h.sender_device_id),
            "recall": recall,
        },
    }


def message_wire_row(seq: int, stored_at: Any, header: Any, ct: Any, sig: Any,
                     urgent: bool, removed_at: datetime | None = None, removed_reason: str = "",
                     recall_sig: Any = None, recall_device_id: Any = None) -> dict[str, Any]:
    """message_wire of a message given as its columns (a history page reads tuples)."""
    if removed_at is not None:
        return tombstone_wire(seq, stored_at, header, urgent, removed_at, removed_reason,
                              recall_sig, recall_device_id)
    envelope = Envelope(Header.decode(bytes(header)), bytes(ct), bytes(sig))
    return {
        "seq": seq,
        "stored_at": stored_at.isoformat(),
        "envelope": envelope.to_wire(),
        "urgent": urgent,
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


def b64_or_none(value: bytes | memoryview | None) -> str | None:
    return b64e(bytes(value)) if value is not None else None


def _str_or_none(value: object) -> str | None:
    return str(value) if value is not None else None


def invitation_binding_wire(invitation: Invitation) -> dict[str, Any]:
    """What a member's client checks before admitting the patient (protocol-crypto:
    the inviter's statement and the patient's proof); missing values are null."""
    return {
        "id": str(invitation.pk),
        "created_by": str(invitation.created_by_id),
        "inviter_device": _str_or_none(invitation.inviter_device_id),
        "invite_pub": b64_or_none(invitation.invite_pub),
        "invite_sig": b64_or_none(invitation.invite_sig),
        "created_ms": invitation.created_ms,
        "proof_sig": b64_or_none(invitation.proof_sig),
    }


def join_request_wire(join: JoinRequest) -> dict[str, Any]:
    """A pending join request with who it names (select_related user and invitation)."""
    person = join.user
    invitation = None
    if join.kind == JoinKind.PATIENT and join.invitation is not None:
        invitation = invitation_binding_wire(join.invitation)
    return {
        "id": join.pk,
        "user": str(join.user_id),
        "kind": join.kind,
        "requested_by": str(join.requested_by_id),
        "created_at": join.created_at.isoformat(),
        "display_name": person.display_name or person.username,
        "role": person.role,
        "organisation": person.organisation,
        "specialty": person.specialty,
        "invitation": invitation,
    }
