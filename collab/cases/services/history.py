"""Reads of a case's history are audited: who read which messages, from where."""

from __future__ import annotations

import uuid

from collab.accounts.models import User
from collab.audit.services import AuditAction, RequestMeta, audit_record
from collab.cases.selectors import HistoryPage


def history_read_record(
    *,
    user: User,
    device_id: uuid.UUID,
    case_id: uuid.UUID,
    page: HistoryPage,
    meta: RequestMeta | None,
) -> None:
    """One history_read event for a page that went out; an empty page reads nothing."""
    if page.seqs is None:
        return
    audit_record(
        action=AuditAction.HISTORY_READ,
        actor=user,
        device_id=device_id,
        case_id=case_id,
        meta=meta,
        details={"from_seq": page.seqs[0], "to_seq": page.seqs[1], "count": len(page.items)},
    )
