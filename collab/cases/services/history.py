"""Reads of a case are audited here: who read which messages, key wraps, membership log
entries or access log, and which devices received messages live, from where."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from collab.accounts.models import User
from collab.audit import selectors as audit_selectors
from collab.audit.services import AuditAction, Outcome, RequestMeta, audit_record
from collab.cases import access
from collab.cases import models as m
from collab.cases.selectors import HistoryPage
from collab.errors import Forbidden

ACCESS_LOG_TARGET = "case:access-log"


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


def wraps_read(
    *, user: User, device_id: uuid.UUID, case_id: uuid.UUID, meta: RequestMeta | None
) -> list[m.KeyWrap]:
    """The device's epoch-key wraps, in epoch order, and one ``WRAPS_READ`` for them
    (epochs and count only: the wraps are key material). None stored: nothing recorded.
    The caller has checked that the device is the user's, active and in the case."""
    wraps = list(m.KeyWrap.objects.filter(case_id=case_id, device_id=device_id).order_by("epoch"))
    if wraps:
        audit_record(
            action=AuditAction.WRAPS_READ,
            actor=user,
            device_id=device_id,
            case_id=case_id,
            target=f"device:{device_id}",
            meta=meta,
            details={
                "from_epoch": wraps[0].epoch,
                "to_epoch": wraps[-1].epoch,
                "count": len(wraps),
            },
        )
    return wraps


def log_read_record(
    *,
    user: User,
    case_id: uuid.UUID,
    after: int,
    epochs: Sequence[int],
    meta: RequestMeta | None,
) -> None:
    """One ``LOG_READ`` for a page of membership-log entries that went out (the epochs
    served); an empty page reads nothing."""
    if not epochs:
        return
    audit_record(
        action=AuditAction.LOG_READ,
        actor=user,
        case_id=case_id,
        target=f"case:{case_id}",
        meta=meta,
        details={
            "after": after,
            "from_epoch": epochs[0],
            "to_epoch": epochs[-1],
            "count": len(epochs),
        },
    )


def messages_delivered_record(
    *,
    user: User,
    device_id: uuid.UUID,
    case_id: uuid.UUID,
    first_seq: int,
    meta: RequestMeta | None,
) -> None:
    """One ``MESSAGES_DELIVERED`` per case-room socket: written by the socket, off its
    relay, after the first live message from another device went to this one. Later live
    messages on the same socket are covered by it (the socket's life is the range)."""
    audit_record(
        action=AuditAction.MESSAGES_DELIVERED,
        actor=user,
        device_id=device_id,
        case_id=case_id,
        target=f"message:{first_seq}",
        meta=meta,
        details={"first_seq": first_seq},
    )


def access_log_read(
    *, user: User, case_id: uuid.UUID, page: int, meta: RequestMeta | None
) -> audit_selectors.AccessLogPage:
    """A page of the case's audit trail for a member of the case (the patient's "who
    accessed my case"), recorded as ``AUDIT_VIEWED``. A non-member is refused with
    ``403 forbidden`` and the attempt recorded as ``ACCESS_DENIED``."""
    if not access.is_case_member(user=user, case_id=case_id):
        audit_record(
            action=AuditAction.ACCESS_DENIED,
            actor=user,
            outcome=Outcome.FAILURE,
            reason="forbidden",
            case_id=case_id,
            target=ACCESS_LOG_TARGET,
            meta=meta,
        )
        raise Forbidden("forbidden", "You may not see this audit information.")
    log = audit_selectors.case_access_log(case_id=case_id, page=page)
    audit_record(
        action=AuditAction.AUDIT_VIEWED,
        actor=user,
        case_id=case_id,
        target=ACCESS_LOG_TARGET,
        meta=meta,
        details={"page": log.page},
    )
    return log
