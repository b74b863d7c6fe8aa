"""Delivered / read / acknowledged per recipient.

Read marks (``ReadMark``, the socket ``read`` frame) and urgent acknowledgements
(``UrgentAck``) exist already; this adds the delivered mark a recipient's client reports
with the socket ``delivered`` frame (debounced: the highest seq it has received), and the
stored marks of every member for a client that reloads. Nothing is written when a
message is stored: a recipient's mark moves only when its own client reports.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import Count, F, OuterRef, Subquery
from django.db.models.functions import Coalesce

from collab.accounts.models import User
from collab.cases import models as m
from collab.cases.access import access_case
from collab.errors import ServiceError
from collab.realtime import case_group, publish_after_commit

# The most urgent messages a receipts answer lists acknowledgements for (the newest).
URGENT_MAX = 500


@dataclass(frozen=True)
class DeliveredMark:
    user_id: uuid.UUID
    up_to: int
    at: datetime
    moved: bool  # False: the mark was already at or beyond up_to (nothing changed)


@transaction.atomic
def delivered_mark_set(*, user: User, case_id: uuid.UUID, up_to: int) -> DeliveredMark:
    """Move the user's delivered mark forward to ``up_to``. A lower or equal value
    changes nothing; one beyond the case's last seq is refused (``bad_up_to``, with
    ``last_seq``) and changes nothing: a client cannot have received what is not stored."""
    case = access_case(user, case_id)
    if up_to > case.last_seq:
        raise ServiceError(
            "bad_up_to", f"up_to is beyond the case's last seq ({case.last_seq}).",
            last_seq=case.last_seq,
        )
    mark, _ = m.DeliveredMark.objects.select_for_update().get_or_create(case_id=case_id, user=user)
    if up_to <= mark.up_to:
        return DeliveredMark(user.pk, mark.up_to, mark.updated_at, moved=False)
    mark.up_to = up_to
    mark.save(update_fields=["up_to", "updated_at"])
    publish_after_commit(
        case_group(case_id),
        {
            "type": "case.delivered",
            "user": str(user.pk),
            "up_to": up_to,
            "at": mark.updated_at.isoformat(),
        },
    )
    return DeliveredMark(user.pk, mark.up_to, mark.updated_at, moved=True)


def _mark(up_to: int, at: datetime) -> dict[str, Any]:
    return {"up_to": up_to, "at": at.isoformat()}


def case_receipts(*, case_id: uuid.UUID) -> dict[str, Any]:
    """Every current member's stored read and delivered marks (null when none yet), and
    who acknowledged each urgent message (the newest URGENT_MAX). The caller checked
    access. Four queries, whatever the room size."""
    last_seq = m.Case.objects.values_list("last_seq", flat=True).get(pk=case_id)
    members = list(
        m.Member.objects.filter(case_id=case_id)
        .order_by("user_id")
        .values_list("user_id", flat=True)
    )
    read = {
        user_id: _mark(up_to, at)
        for user_id, up_to, at in m.ReadMark.objects.filter(
            case_id=case_id, up_to__gt=0
        ).values_list("user_id", "up_to", "updated_at")
    }
    delivered = {
        user_id: _mark(up_to, at)
        for user_id, up_to, at in m.DeliveredMark.objects.filter(
            case_id=case_id, up_to__gt=0
        ).values_list("user_id", "up_to", "updated_at")
    }
    urgent_seqs = list(
        m.Message.objects.filter(case_id=case_id, urgent=True)
        .order_by("-seq")
        .values_list("seq", flat=True)[:URGENT_MAX]
    )
    acks: dict[int, list[dict[str, str]]] = {seq: [] for seq in sorted(urgent_seqs)}
    if urgent_seqs:
        for seq, user_id, at in (
            m.UrgentAck.objects.filter(message__case_id=case_id, message__seq__in=urgent_seqs)
            .order_by("at", "pk")
            .values_list("message__seq", "user_id", "at")
        ):
            acks[seq].append({"user": str(user_id), "at": at.isoformat()})
    return {
        "case": str(case_id),
        "last_seq": last_seq,
        "members": [
            {"user": str(u), "read": read.get(u), "delivered": delivered.get(u)} for u in members
        ],
        "urgent": [{"seq": seq, "acknowledged": done} for seq, done in acks.items()],
    }


def unread_counts(*, user: User, case_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    """Per case, the messages of others after the user's read mark (the case list's
    unread count): one query for the page."""
    if not case_ids:
        return {}
    mark = m.ReadMark.objects.filter(case_id=OuterRef("case_id"), user=user).values("up_to")[:1]
    rows = (
        m.Message.objects.filter(case_id__in=case_ids)
        .exclude(sender=user)
        .annotate(mark=Coalesce(Subquery(mark), 0))
        .filter(seq__gt=F("mark"))
        .values("case_id")
        .annotate(n=Count("pk"))
        .values_list("case_id", "n")
    )
    return dict(rows)
