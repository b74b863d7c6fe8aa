"""In-app notifications: an event kind and a case id, never anything about the patient.

Each notice is stored, then pushed to the user's channel group after commit as
``{"type": "notify", "id", "kind", "case"}``. A push or e-mail gateway added later
must carry the same thing (the event id), so the person signs in to see more.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from django.db import transaction
from django.utils import timezone

from collab.accounts.models import User
from collab.cases import models as m
from collab.errors import NotFound
from collab.realtime import publish_after_commit, user_group


def notify(
    *, user_ids: Iterable[uuid.UUID], kind: str, case_id: uuid.UUID | None
) -> list[m.Notification]:
    """Store one notice per user and ring each user's group after commit."""
    unique = list(dict.fromkeys(user_ids))
    if not unique:
        return []
    if kind not in m.NotificationKind.values:
        raise ValueError(f"unknown notification kind {kind!r}")
    created = [m.Notification.objects.create(user_id=u, kind=kind, case_id=case_id) for u in unique]
    for notice in created:
        publish_after_commit(user_group(notice.user_id), notify_event(notice))
    return created


def notify_event(notice: m.Notification) -> dict[str, object]:
    return {
        "type": "notify",
        "id": notice.pk,
        "kind": notice.kind,
        "case": str(notice.case_id) if notice.case_id else None,
    }


def case_member_ids(
    case_id: uuid.UUID, *, exclude: uuid.UUID | None = None, roles: Iterable[int] | None = None
) -> list[uuid.UUID]:
    members = m.Member.objects.filter(case_id=case_id)
    if roles is not None:
        members = members.filter(role__in=list(roles))
    if exclude is not None:
        members = members.exclude(user_id=exclude)
    return list(members.values_list("user_id", flat=True))


@transaction.atomic
def notification_read(*, user: User, notification_id: int) -> m.Notification:
    notice = (
        m.Notification.objects.select_for_update().filter(pk=notification_id, user=user).first()
    )
    if notice is None:
        raise NotFound("no_notification", "No such notification.")
    if notice.read_at is None:
        notice.read_at = timezone.now()
        notice.save(update_fields=["read_at"])
    return notice
