"""Reads for cases: membership, the log head, what a device may read."""

from __future__ import annotations

import uuid

from django.db.models import QuerySet

from collab.accounts.models import User
from collab.cases.models import Case, KeyWrap, LogEntry, Member, MemberDevice, Message
from collab.crypto.log import LogEntry as CryptoLogEntry


def is_case_member(*, user: User, case_id: uuid.UUID) -> bool:
    return Member.objects.filter(case_id=case_id, user=user).exists()


def device_in_roster(*, case_id: uuid.UUID, device_id: uuid.UUID) -> bool:
    return MemberDevice.objects.filter(
        case_id=case_id, device_id=device_id, device__revoked_at__isnull=True
    ).exists()


def cases_for_user(*, user: User) -> QuerySet[Case]:
    return Case.objects.filter(members__user=user).order_by("-opened_at")


def head_entry(case: Case) -> CryptoLogEntry:
    raw = LogEntry.objects.values_list("raw", flat=True).get(case=case, epoch=case.head_epoch)
    return CryptoLogEntry.decode(bytes(raw))


def readable_epochs(*, case_id: uuid.UUID, device_id: uuid.UUID) -> QuerySet[KeyWrap, int]:
    """Epochs a device holds a key for: it may fetch messages of exactly these."""
    return KeyWrap.objects.filter(case_id=case_id, device_id=device_id).values_list(
        "epoch", flat=True
    )


def messages_for_device(
    *, case_id: uuid.UUID, device_id: uuid.UUID, after: int, limit: int
) -> list[Message]:
    return list(
        Message.objects.filter(
            case_id=case_id,
            seq__gt=after,
            epoch__in=readable_epochs(case_id=case_id, device_id=device_id),
        ).order_by("seq")[:limit]
    )


def log_entries(*, case_id: uuid.UUID, after: int = -1) -> QuerySet[LogEntry]:
    return LogEntry.objects.filter(case_id=case_id, epoch__gt=after).order_by("epoch")
