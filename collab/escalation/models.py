from __future__ import annotations

from django.conf import settings
from django.db import models

# TigerConnect's anchors: first reminder after 2 minutes, then every 2 minutes, 10 times.
DEFAULT_FIRST_REMINDER_MINUTES = 2
DEFAULT_REPEAT_MINUTES = 2
DEFAULT_REPEAT_COUNT = 10


def default_steps() -> list[dict[str, object]]:
    """The on-call provider, then their backup, then the case owner."""
    return [
        {"to": "oncall", "after_minutes": 10},
        {"to": "backup", "after_minutes": 20},
        {"to": "owner", "after_minutes": 30},
    ]


class PolicyFields(models.Model):
    """The timing of one policy (all minutes counted from the message's storing, except
    the reminders, which repeat from the first one)."""

    first_reminder_minutes = models.PositiveIntegerField(default=DEFAULT_FIRST_REMINDER_MINUTES)
    repeat_minutes = models.PositiveIntegerField(default=DEFAULT_REPEAT_MINUTES)
    repeat_count = models.PositiveIntegerField(default=DEFAULT_REPEAT_COUNT)
    # [{"to": "backup" | "oncall" | "owner", "after_minutes": N}], N strictly increasing.
    steps = models.JSONField(default=default_steps)
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        abstract = True


class OrganisationPolicy(PolicyFields):
    """The organisation's default: a single row (pk 1), made with the defaults on first use."""

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(pk=1), name="escalation_policy_singleton")
        ]


class CasePolicy(PolicyFields):
    """A case's override of the organisation default (set by a case owner or admin)."""

    case = models.OneToOneField("cases.Case", on_delete=models.CASCADE, related_name="+")


class DoneReason(models.TextChoices):
    ACKNOWLEDGED = "acknowledged", "Every recipient acknowledged"
    EXHAUSTED = "exhausted", "Reminders and escalation chain exhausted"
    REMOVED = "removed", "The message was recalled or purged"
    CLOSED = "closed", "The case was closed"


class Escalation(models.Model):
    """The timer of one urgent message: what was done so far and when the next step is due.

    ``policy`` is the effective policy copied when the message was stored, so a later
    policy change does not move timers already running."""

    message = models.OneToOneField("cases.Message", on_delete=models.CASCADE, related_name="+")
    case = models.ForeignKey("cases.Case", on_delete=models.CASCADE, related_name="+")
    started_at = models.DateTimeField()
    policy = models.JSONField()
    next_due = models.DateTimeField(null=True, blank=True)
    reminders_sent = models.PositiveIntegerField(default=0)
    step_index = models.PositiveIntegerField(default=0)
    done_at = models.DateTimeField(null=True, blank=True)
    done_reason = models.CharField(max_length=16, choices=DoneReason.choices, blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["next_due"],
                condition=models.Q(done_at__isnull=True),
                name="escalation_due",
            )
        ]


class StepOutcome(models.TextChoices):
    NOTIFIED = "notified", "The target was notified"
    NO_TARGET = "no_target", "Nobody to escalate to (no on-call shift or no backup)"


class EscalationStep(models.Model):
    """One escalation step taken: to whom (a user id and name; never anything else)."""

    escalation = models.ForeignKey(Escalation, on_delete=models.CASCADE, related_name="taken")
    index = models.PositiveIntegerField()
    to_kind = models.CharField(max_length=16)
    target = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    target_was_member = models.BooleanField(default=False)
    outcome = models.CharField(max_length=16, choices=StepOutcome.choices)
    at = models.DateTimeField()

    class Meta:
        ordering = ["index"]
        constraints = [
            models.UniqueConstraint(fields=["escalation", "index"], name="one_escalation_step")
        ]
