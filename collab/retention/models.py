from __future__ import annotations

from django.conf import settings
from django.db import models

# The longest lifespan an admin may set (100 years): beyond it "never" says it better.
MAX_LIFESPAN_DAYS = 36500


class RetentionPolicy(models.Model):
    """The organisation's one retention policy (the row with pk 1).

    ``lifespan_days`` is how long a closed case keeps its ciphertext and attachment files
    after it was closed; null means never delete (the default). The audit trail, the
    membership log and the message tombstones are kept whatever it says."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    lifespan_days = models.PositiveIntegerField(null=True, blank=True)
    updated_at = models.DateTimeField(null=True, blank=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(id=1), name="one_retention_policy"),
            models.CheckConstraint(
                condition=models.Q(lifespan_days__isnull=True)
                | models.Q(lifespan_days__gte=1, lifespan_days__lte=MAX_LIFESPAN_DAYS),
                name="retention_lifespan_range",
            ),
        ]
