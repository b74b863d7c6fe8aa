"""Escalation policy: the organisation default and a case's override, and their checks.

A policy is timing only (minutes and step kinds), never anything about a patient. Writes
are audited ``ESCALATION_POLICY_CHANGED`` in the same transaction. Error codes (400
unless said): ``bad_first_reminder``, ``bad_interval``, ``bad_count``, ``bad_steps``,
``bad_step_kind``, ``bad_step_time``, ``admins_only`` (403), and the case's own
``not_member`` / ``not_manager`` (403, collab.cases.access).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction

from collab.accounts.models import User
from collab.accounts.policy import is_admin
from collab.audit.services import AuditAction, RequestMeta, audit_record
from collab.cases.access import access_manager
from collab.cases.services._common import locked_case
from collab.errors import Forbidden, ServiceError
from collab.escalation import models as em

STEP_KINDS = ("backup", "oncall", "owner")
MAX_FIRST_MINUTES = 1440  # a day: a "reminder" later than that is not one
MAX_REPEAT_MINUTES = 1440
MAX_REPEAT_COUNT = 50
MAX_STEPS = 5
MAX_STEP_MINUTES = 10080  # a week


@dataclass(frozen=True)
class Policy:
    first_reminder_minutes: int
    repeat_minutes: int
    repeat_count: int
    steps: tuple[tuple[str, int], ...]  # (to, after_minutes), after_minutes increasing

    def wire(self) -> dict[str, Any]:
        return {
            "first_reminder_minutes": self.first_reminder_minutes,
            "repeat_minutes": self.repeat_minutes,
            "repeat_count": self.repeat_count,
            "steps": [{"to": to, "after_minutes": after} for to, after in self.steps],
        }

    def summary(self) -> str:
        """The chain as a short string for the audit detail, e.g. ``oncall@10,owner@30``."""
        return ",".join(f"{to}@{after}" for to, after in self.steps)

    @classmethod
    def of_row(cls, row: em.PolicyFields) -> Policy:
        return cls.parse(
            {
                "first_reminder_minutes": row.first_reminder_minutes,
                "repeat_minutes": row.repeat_minutes,
                "repeat_count": row.repeat_count,
                "steps": row.steps,
            }
        )

    @classmethod
    def parse(cls, data: Any) -> Policy:
        """Check a policy as sent (or stored); every field is required."""
        if not isinstance(data, dict):
            raise ServiceError("bad_field", "The policy must be a JSON object.")
        first = _minutes(data.get("first_reminder_minutes"), 1, MAX_FIRST_MINUTES)
        if first is None:
            raise ServiceError(
                "bad_first_reminder",
                f"first_reminder_minutes must be an integer from 1 to {MAX_FIRST_MINUTES}.",
            )
        repeat = _minutes(data.get("repeat_minutes"), 1, MAX_REPEAT_MINUTES)
        if repeat is None:
            raise ServiceError(
                "bad_interval",
                f"repeat_minutes must be an integer from 1 to {MAX_REPEAT_MINUTES} (not zero).",
            )
        count = _minutes(data.get("repeat_count"), 0, MAX_REPEAT_COUNT)
        if count is None:
            raise ServiceError(
                "bad_count", f"repeat_count must be an integer from 0 to {MAX_REPEAT_COUNT}."
            )
        raw_steps = data.get("steps")
        if not isinstance(raw_steps, list) or len(raw_steps) > MAX_STEPS:
            raise ServiceError("bad_steps", f"steps must be a list of at most {MAX_STEPS} steps.")
        steps: list[tuple[str, int]] = []
        for step in raw_steps:
            if not isinstance(step, dict) or set(step) != {"to", "after_minutes"}:
                raise ServiceError("bad_steps", "Each step is {to, after_minutes}.")
            to = step["to"]
            if to not in STEP_KINDS:
                raise ServiceError(
                    "bad_step_kind", f"A step goes to one of {', '.join(STEP_KINDS)}."
                )
            after = _minutes(step["after_minutes"], 1, MAX_STEP_MINUTES)
            if after is None or (steps and after <= steps[-1][1]):
                raise ServiceError(
                    "bad_step_time",
                    f"after_minutes must be an integer from 1 to {MAX_STEP_MINUTES}, "
                    "each step later than the one before.",
                )
            steps.append((to, after))
        return cls(first, repeat, count, tuple(steps))


def _minutes(value: Any, low: int, high: int) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return None
    return int(value)


def _store(row: em.PolicyFields, policy: Policy, actor: User | None) -> None:
    row.first_reminder_minutes = policy.first_reminder_minutes
    row.repeat_minutes = policy.repeat_minutes
    row.repeat_count = policy.repeat_count
    row.steps = policy.wire()["steps"]
    row.updated_by = actor
    row.save()


def _audit(
    *, actor: User | None, scope: str, policy: Policy | None, case_id: uuid.UUID | None,
    meta: RequestMeta | None,
) -> None:
    details: dict[str, Any] = {"scope": scope}
    if policy is None:
        details["cleared"] = True
    else:
        details.update(
            first_reminder_minutes=policy.first_reminder_minutes,
            repeat_minutes=policy.repeat_minutes,
            repeat_count=policy.repeat_count,
            steps=policy.summary(),
        )
    audit_record(
        action=AuditAction.ESCALATION_POLICY_CHANGED,
        actor=actor,
        case_id=case_id,
        target=f"case:{case_id}" if case_id else "escalation_policy",
        meta=meta,
        details=details,
    )


# --- reads -------------------------------------------------------------------------


def organisation_row() -> em.OrganisationPolicy:
    """The singleton, made with the defaults on first use (concurrent first uses agree)."""
    row = em.OrganisationPolicy.objects.filter(pk=1).first()
    if row is None:
        try:
            with transaction.atomic():
                row = em.OrganisationPolicy.objects.create(pk=1)
        except IntegrityError:
            row = em.OrganisationPolicy.objects.get(pk=1)
    return row


def organisation_policy() -> Policy:
    return Policy.of_row(organisation_row())


def effective_policy(case_id: uuid.UUID) -> tuple[Policy, str]:
    """The case's override if it has one, else the organisation's: (policy, source)."""
    override = em.CasePolicy.objects.filter(case_id=case_id).first()
    if override is not None:
        return Policy.of_row(override), "case"
    return organisation_policy(), "organisation"


# --- writes ------------------------------------------------------------------------


@transaction.atomic
def organisation_policy_set(
    *, actor: User | None, data: Any, meta: RequestMeta | None = None
) -> Policy:
    """Replace the organisation default (an admin; ``actor`` None: the operator's command)."""
    if actor is not None and not is_admin(actor):
        raise Forbidden("admins_only", "Only an administrator sets the escalation policy.")
    policy = Policy.parse(data)
    organisation_row()
    row = em.OrganisationPolicy.objects.select_for_update().get(pk=1)
    _store(row, policy, actor)
    _audit(actor=actor, scope="organisation", policy=policy, case_id=None, meta=meta)
    return policy


@transaction.atomic
def case_policy_set(
    *, user: User, case_id: uuid.UUID, data: Any, meta: RequestMeta | None = None
) -> Policy:
    """Override the default for one case: a case owner or admin (roster role)."""
    access_manager(user, case_id)
    policy = Policy.parse(data)
    # The case row's lock serialises writers: two first overrides cannot both miss the
    # row and then both insert it (the one-to-one constraint's error, a 500).
    locked_case(case_id)
    row = em.CasePolicy.objects.select_for_update().filter(case_id=case_id).first()
    _store(row or em.CasePolicy(case_id=case_id), policy, user)
    _audit(actor=user, scope="case", policy=policy, case_id=case_id, meta=meta)
    return policy


@transaction.atomic
def case_policy_clear(
    *, user: User, case_id: uuid.UUID, meta: RequestMeta | None = None
) -> Policy:
    """Drop the case's override (the organisation default applies again); a case
    without one changes nothing and records nothing."""
    access_manager(user, case_id)
    deleted, _ = em.CasePolicy.objects.filter(case_id=case_id).delete()
    if deleted:
        _audit(actor=user, scope="case", policy=None, case_id=case_id, meta=meta)
    return organisation_policy()
