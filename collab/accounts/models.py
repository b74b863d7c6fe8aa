from __future__ import annotations

import uuid

from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.db import models


class Role(models.TextChoices):
    PROVIDER = "provider", "Provider"
    PATIENT = "patient", "Patient"
    ADMIN = "admin", "Administrator"


class User(AbstractUser):
    """A person who signs in. The UUID is the id the end-to-end protocol signs over."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.PROVIDER)
    display_name = models.CharField(max_length=150)
    specialty = models.CharField(max_length=80, blank=True, help_text="Providers only.")
    organisation = models.CharField(max_length=150, blank=True)

    REQUIRED_FIELDS = ["email", "display_name"]

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(role="provider") | models.Q(specialty=""),
                name="specialty_only_for_providers",
            ),
        ]

    def __str__(self) -> str:
        return self.display_name or self.username

    def clean(self) -> None:
        super().clean()
        if self.role != Role.PROVIDER and self.specialty:
            raise ValidationError({"specialty": "Only providers have a specialty."})

    @property
    def is_provider(self) -> bool:
        return self.role == Role.PROVIDER

    @property
    def is_patient(self) -> bool:
        return self.role == Role.PATIENT
