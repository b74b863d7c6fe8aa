"""Reading the audit trail."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet

from collab.accounts.policy import is_admin
from collab.audit.filters import AuditFilter
from collab.audit.models import AuditCheckpoint, AuditEvent

ACCESS_LOG_PAGE_SIZE = 50


def is_audit_admin(user: Any) -> bool:
    """Admins only (the one meaning of admin: collab.accounts.policy.is_admin)."""
    return is_admin(user)


def events_matching(flt: AuditFilter) -> QuerySet[AuditEvent]:
    events = AuditEvent.objects.select_related("actor").order_by("seq")
    if flt.case_id:
        events = events.filter(case_id=flt.case_id)
    if flt.user_id:
        events = events.filter(actor_id=flt.user_id)
    if flt.actions:
        events = events.filter(action__in=[a.value for a in flt.actions])
    if flt.since:
        events = events.filter(recorded_at__gte=flt.since)
    if flt.until:
        events = events.filter(recorded_at__lte=flt.until)
    return events


@dataclass(frozen=True)
class AccessLogPage:
    entries: list[AuditEvent]
    page: int
    pages: int
    count: int


def case_access_log(*, case_id: uuid.UUID, page: int) -> AccessLogPage:
    """Who did what on a case and when, newest first."""
    events = AuditEvent.objects.filter(case_id=case_id).select_related("actor")
    count = events.count()
    pages = max(1, -(-count // ACCESS_LOG_PAGE_SIZE))
    page = min(max(1, page), pages)
    start = (page - 1) * ACCESS_LOG_PAGE_SIZE
    entries = list(events.order_by("-seq")[start : start + ACCESS_LOG_PAGE_SIZE])
    return AccessLogPage(entries=entries, page=page, pages=pages, count=count)


def checkpoints_recent(*, limit: int = 100) -> list[AuditCheckpoint]:
    return list(AuditCheckpoint.objects.order_by("-seq", "-id")[:limit])
