from __future__ import annotations

from django.conf import settings
from django.db import models


class OnCallService(models.Model):
    """A specialty's on-call service (e.g. "Dermatology consults" for Dermatology).

    One service per specialty, so "who is on call for Dermatology" has one answer and a
    consult's specialty routes without a second choice. Names and hours only: no PHI."""

    name = models.CharField(max_length=120, unique=True)
    specialty = models.CharField(max_length=80, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["specialty"]

    def __str__(self) -> str:
        return self.name


class Shift(models.Model):
    """Who covers a service over [starts_at, ends_at): a primary and an optional backup.

    Primary shifts of one service never overlap (checked under the service's row lock in
    collab.oncall.services.shift_add); a backup may back several shifts."""

    service = models.ForeignKey(OnCallService, on_delete=models.CASCADE, related_name="shifts")
    primary = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    backup = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["starts_at"]
        indexes = [models.Index(fields=["service", "starts_at", "ends_at"], name="oncall_shift_at")]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(ends_at__gt=models.F("starts_at")),
                name="oncall_shift_ends_after",
            ),
        ]


class ConsultOffer(models.Model):
    """A requested consult offered first to the on-call provider: others of the specialty
    see it in the queue (and may claim it) only from ``exclusive_until``."""

    case = models.OneToOneField("cases.Case", on_delete=models.CASCADE, related_name="+")
    offered_to = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    shift = models.ForeignKey(Shift, null=True, on_delete=models.SET_NULL, related_name="+")
    offered_at = models.DateTimeField()
    exclusive_until = models.DateTimeField(db_index=True)
