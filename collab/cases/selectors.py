"""Reads for cases: membership, the log head, what a device may read."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db.models import Count, Exists, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Length

from collab.accounts.models import Device, IdentityKey, User
from collab.cases.models import (
    Case,
    CaseStatusChange,
    Invitation,
    JoinRequest,
    JoinStatus,
    KeyWrap,
    LeaveRequest,
    LogEntry,
    Member,
    Message,
    Notification,
    UrgentAck,
)
from collab.cases.wire import message_wire_row
from collab.crypto.log import LogEntry as CryptoLogEntry


def cases_for_user(*, user: User) -> QuerySet[Case]:
    return Case.objects.filter(members__user=user).order_by("-opened_at")


def head_entry(case: Case) -> CryptoLogEntry:
    raw = LogEntry.objects.values_list("raw", flat=True).get(case=case, epoch=case.head_epoch)
    return CryptoLogEntry.decode(bytes(raw))


def readable_epochs(*, case_id: uuid.UUID, device_id: uuid.UUID) -> QuerySet[KeyWrap, int]:
    """Epochs the device may fetch messages of: those some device of its user was given
    a key for (a wrap). A user's new device recovers those keys from the user's key
    backup, so it reads the history its user had, never an epoch the user had no key for.
    Only devices of the user's current identity count (certified by the key registered
    now, as recorded at their registration; no clocks compared): after an identity reset
    the old devices' keys are gone with the old key, so their epochs are not served to
    the new devices. The caller has checked that the device is the caller's own and
    active."""
    user = Device.objects.filter(pk=device_id).values("user_id")
    uik = IdentityKey.objects.filter(user_id__in=user).values("uik_pub")[:1]
    current = Device.objects.filter(user_id__in=user, uik_pub=Subquery(uik))
    own_devices = current.values("pk")
    return (
        KeyWrap.objects.filter(case_id=case_id, device_id__in=own_devices)
        .values_list("epoch", flat=True)
        .distinct()
    )


@dataclass(frozen=True)
class HistoryPage:
    items: list[dict[str, Any]]  # message_wire form, in seq order
    more: bool  # at least one further readable message after the last item
    item_bytes: int  # serialized size of the items
    # Each item serialized (compact JSON), so a socket sends the page without encoding
    # it again: see items_json.
    texts: tuple[str, ...] = ()

    @property
    def seqs(self) -> tuple[int, int] | None:
        return (self.items[0]["seq"], self.items[-1]["seq"]) if self.items else None

    @property
    def items_json(self) -> str:
        """The items as a compact JSON array, the same as json.dumps(items)."""
        return "[" + ",".join(self.texts) + "]"


# The columns message_wire reads, fetched as tuples: a page builds no models.
_WIRE_COLUMNS = ("seq", "stored_at", "header", "ciphertext", "signature", "urgent",
                 "removed_at", "removed_reason", "recall_sig", "recall_device_id")


HISTORY_FETCH_CHUNK = 50


def history_page(
    *, case_id: uuid.UUID, device_id: uuid.UUID, after: int, limit: int, max_bytes: int
) -> HistoryPage:
    """Messages after ``after`` readable by the device, at most ``limit`` of them and
    ``max_bytes`` of serialized items (but always one, if one exists)."""
    rows = (
        Message.objects.filter(
            case_id=case_id,
            seq__gt=after,
            epoch__in=readable_epochs(case_id=case_id, device_id=device_id),
        )
        .order_by("seq")
        .values_list(*_WIRE_COLUMNS)[: limit + 1]
    )
    items: list[dict[str, Any]] = []
    texts: list[str] = []
    size = 0
    # Fetched in chunks, so rows past the byte cap are never read into memory: a page of
    # HISTORY_PAGE_MAX rows of the largest messages would be about 40 MiB.
    for row in rows.iterator(chunk_size=HISTORY_FETCH_CHUNK):
        if len(items) == limit:
            return HistoryPage(items, True, size, tuple(texts))  # one more exists
        item = message_wire_row(*row)
        text = _compact(item)
        # Each item's bytes plus its separator in the JSON array.
        if items and size + len(text) + 1 > max_bytes:
            return HistoryPage(items, True, size, tuple(texts))
        items.append(item)
        texts.append(text)
        size += len(text) + 1
    return HistoryPage(items, False, size, tuple(texts))


_compact = json.JSONEncoder(separators=(",", ":")).encode


def log_entries(*, case_id: uuid.UUID, after: int = -1) -> QuerySet[LogEntry]:
    return LogEntry.objects.filter(case_id=case_id, epoch__gt=after).order_by("epoch")


LOG_PAGE_MAX = 500
# Upper bound of a serialized log item's fields besides the base64 entry (epoch, hash,
# committed_at, keys and separators): ~200 bytes.
_LOG_ITEM_OVERHEAD = 256


def log_entry_size(raw_len: int) -> int:
    """What one entry of ``raw_len`` bytes adds to a log page, serialized (at most)."""
    return 4 * ((raw_len + 2) // 3) + _LOG_ITEM_OVERHEAD


def log_page(
    *, case_id: uuid.UUID, after: int, max_bytes: int, limit: int = LOG_PAGE_MAX
) -> tuple[list[LogEntry], bool]:
    """Entries after ``after`` in epoch order, at most ``limit`` and ``max_bytes``
    serialized (at least one when any exists: one entry larger than the bound still
    travels, or the client could never pass it). ``more``: a further entry exists.

    The cut is chosen from the stored lengths first, so no entry beyond it is read:
    every entry carries a whole roster, and a page of them can be large."""
    sizes = (
        log_entries(case_id=case_id, after=after)
        .annotate(raw_len=Length("raw"))
        .values_list("epoch", "raw_len")[: limit + 1]
    )
    epochs: list[int] = []
    used = 0
    more = False
    for epoch, raw_len in sizes:
        cost = log_entry_size(raw_len)
        if epochs and (len(epochs) >= limit or used + cost > max_bytes):
            more = True
            break
        epochs.append(epoch)
        used += cost
    if not epochs:
        return [], False
    page = list(log_entries(case_id=case_id, after=after).filter(epoch__lte=epochs[-1]))
    return page, more


# --- consult workflow reads -------------------------------------------------------


def invitations_for_case(*, case_id: uuid.UUID) -> QuerySet[Invitation]:
    return Invitation.objects.filter(case_id=case_id).order_by("-created_at")


def pending_joins(*, case_id: uuid.UUID) -> QuerySet[JoinRequest]:
    """A case's pending join requests, with the people and invitations they name."""
    return (
        JoinRequest.objects.filter(case_id=case_id, status=JoinStatus.PENDING)
        .select_related("user", "invitation")
        .order_by("created_at", "pk")
    )


def pending_joins_for_user(*, user: User) -> QuerySet[JoinRequest]:
    """Pending requests the user is named in or filed, in any case."""
    return JoinRequest.objects.filter(
        Q(user=user) | Q(requested_by=user), status=JoinStatus.PENDING
    ).order_by("created_at", "pk")


def accepted_invitations(*, user: User) -> list[tuple[Invitation, str | None]]:
    """The invitations the user accepted, each with its join request's status."""
    invitations = list(Invitation.objects.filter(used_by=user).order_by("-used_at")[:200])
    statuses: dict[uuid.UUID, str] = {}
    for invitation_id, status in (
        JoinRequest.objects.filter(invitation__in=invitations, user=user)
        .order_by("created_at")
        .values_list("invitation_id", "status")
    ):
        statuses[invitation_id] = status
    return [(i, statuses.get(i.pk)) for i in invitations]


def status_history(*, case_id: uuid.UUID) -> QuerySet[CaseStatusChange]:
    return CaseStatusChange.objects.filter(case_id=case_id).order_by("changed_at", "pk")


def pending_leaves(*, case_id: uuid.UUID) -> QuerySet[LeaveRequest]:
    return LeaveRequest.objects.filter(case_id=case_id, status=JoinStatus.PENDING)


def _readable_by_user(user_ref: Any) -> Exists:
    """The message's epoch is one some device of the user holds a key for."""
    return Exists(
        KeyWrap.objects.filter(
            case_id=OuterRef("case_id"),
            epoch=OuterRef("epoch"),
            device_id__in=Device.objects.filter(user_id=user_ref).values("pk"),
        )
    )


def unacknowledged_urgent_counts(*, user: User, case_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    """Per case: urgent messages from others, readable by the user, not yet acknowledged."""
    rows = (
        Message.objects.filter(case_id__in=case_ids, urgent=True)
        .exclude(sender=user)
        .exclude(urgent_acks__user=user)
        .filter(_readable_by_user(user.pk))
        .values("case_id")
        .annotate(n=Count("pk"))
    )
    return {r["case_id"]: r["n"] for r in rows}


def urgent_status(*, case_id: uuid.UUID) -> list[dict[str, Any]]:
    """Each urgent message: who acknowledged it and when, and which members still owe it.

    A member owes an acknowledgement if they are in the case now, did not send it and
    hold a key for its epoch (someone added later without history cannot read it).
    """
    messages = list(
        Message.objects.filter(case_id=case_id, urgent=True)
        .order_by("seq")
        .only("pk", "seq", "epoch", "sender_id", "stored_at")
    )
    if not messages:
        return []
    members = set(Member.objects.filter(case_id=case_id).values_list("user_id", flat=True))
    holders: dict[int, set[uuid.UUID]] = {}
    for epoch, device_id in KeyWrap.objects.filter(
        case_id=case_id, epoch__in={msg.epoch for msg in messages}
    ).values_list("epoch", "device_id"):
        holders.setdefault(epoch, set()).add(device_id)
    device_users = dict(
        Device.objects.filter(
            pk__in={d for devices in holders.values() for d in devices}
        ).values_list("pk", "user_id")
    )
    acks: dict[int, list[UrgentAck]] = {}
    for ack in UrgentAck.objects.filter(message__in=messages).order_by("at"):
        acks.setdefault(ack.message_id, []).append(ack)
    out = []
    for msg in messages:
        readers = {device_users[d] for d in holders.get(msg.epoch, set()) if d in device_users}
        done = acks.get(msg.pk, [])
        acked = {a.user_id for a in done}
        owing = sorted(str(u) for u in (readers & members) - acked - {msg.sender_id})
        out.append(
            {
                "seq": msg.seq,
                "sender": str(msg.sender_id),
                "stored_at": msg.stored_at.isoformat(),
                "acknowledged": [{"user": str(a.user_id), "at": a.at.isoformat()} for a in done],
                "unacknowledged": owing,
            }
        )
    return out


def notifications_for_user(*, user: User, unread_only: bool = False) -> QuerySet[Notification]:
    notices = Notification.objects.filter(user=user)
    if unread_only:
        notices = notices.filter(read_at__isnull=True)
    return notices.order_by("-created_at", "-pk")


# The most cases one inbox socket follows live (the newest memberships first).
INBOX_MAX_CASES = 1000


def inbox_case_ids(*, user: User) -> list[uuid.UUID]:
    """The cases whose activity the user's inbox socket follows: those they are in now."""
    return inbox_case_ids_of([user.pk])[user.pk]


def inbox_case_ids_of(user_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, list[uuid.UUID]]:
    """inbox_case_ids for many users in one query (the session sweep's, for every inbox
    socket of a process): the newest INBOX_MAX_CASES memberships of each."""
    found: dict[uuid.UUID, list[uuid.UUID]] = {user_id: [] for user_id in user_ids}
    rows = Member.objects.filter(user_id__in=list(found)).order_by("-pk")
    for user_id, case_id in rows.values_list("user_id", "case_id"):
        cases = found[user_id]
        if len(cases) < INBOX_MAX_CASES:
            cases.append(case_id)
    return found
