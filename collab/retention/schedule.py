"""When a case's content is due for deletion: one rule for the purge, the API and the
browser's retention line (frontend/static/collab/app/retention.js words it)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from collab.cases import models as m
from collab.retention.models import RetentionPolicy


def policy_current() -> RetentionPolicy:
    """The organisation's policy; before any admin set one, the default (never delete)."""
    policy = RetentionPolicy.objects.filter(pk=1).first()
    return policy if policy is not None else RetentionPolicy(pk=1, lifespan_days=None)


def closed_at(case: m.Case) -> datetime | None:
    """When a closed case was (last) closed; None while it is open. A reopened case is
    open again, so its earlier closing starts no clock."""
    if case.status != m.Status.CLOSED:
        return None
    if case.status_changed_at is not None:
        return case.status_changed_at
    last = (
        m.CaseStatusChange.objects.filter(case=case, to_status=m.Status.CLOSED)
        .order_by("-changed_at", "-pk")
        .values_list("changed_at", flat=True)
        .first()
    )
    return last if last is not None else case.opened_at


@dataclass(frozen=True)
class CaseRetention:
    lifespan_days: int | None
    closed_at: datetime | None
    delete_after: datetime | None  # None: nothing is scheduled (open, held or never)
    legal_hold_at: datetime | None
    purged_at: datetime | None

    def due(self, now: datetime) -> bool:
        return self.delete_after is not None and self.delete_after <= now

    def wire(self) -> dict[str, Any]:
        def stamp(value: datetime | None) -> str | None:
            return value.isoformat() if value is not None else None

        return {
            "lifespan_days": self.lifespan_days,
            "closed_at": stamp(self.closed_at),
            "delete_after": stamp(self.delete_after),
            "legal_hold": self.legal_hold_at is not None,
            "legal_hold_at": stamp(self.legal_hold_at),
            "purged_at": stamp(self.purged_at),
        }


def case_retention(case: m.Case, policy: RetentionPolicy) -> CaseRetention:
    closed = closed_at(case)
    delete_after = None
    if closed is not None and policy.lifespan_days is not None and case.legal_hold_at is None:
        delete_after = closed + timedelta(days=policy.lifespan_days)
    return CaseRetention(
        lifespan_days=policy.lifespan_days,
        closed_at=closed,
        delete_after=delete_after,
        legal_hold_at=case.legal_hold_at,
        purged_at=case.purged_at,
    )


def retention_wire(case: m.Case, policy: RetentionPolicy | None = None) -> dict[str, Any]:
    """The ``retention`` field of a case answer (case list, detail, the admin list)."""
    return case_retention(case, policy if policy is not None else policy_current()).wire()
