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


class IdentityKey(models.Model):
    """A user's identity key (UIK, Ed25519 public): registered once, never replaced."""

    user = models.OneToOneField(User, on_delete=models.CASCADE, related_name="identity")
    uik_pub = models.BinaryField(max_length=32)
    created_at = models.DateTimeField(auto_now_add=True)


class RetiredIdentityKey(models.Model):
    """A UIK an operator's identity reset retired: never registered again, for anyone.
    Whoever holds its secret could otherwise register it before the real user sets up and
    be back in every roster that still names it."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="retired_identities")
    uik_pub = models.BinaryField(max_length=32)
    retired_at = models.DateTimeField(auto_now_add=True)


class IdentityBackup(models.Model):
    """The UIK secret, encrypted on the client under a recovery key only the user holds."""

    user = models.OneToOneField(User, on_delete=models.CASCADE, related_name="identity_backup")
    ciphertext = models.BinaryField(max_length=4096)
    updated_at = models.DateTimeField(auto_now=True)


class IdentityPins(models.Model):
    """The user's pin book: sealed and signed on the client with the UIK (opaque here).

    ``version`` only moves up by one per write (compare-and-swap), so the server can
    neither accept an older book over a newer one nor, undetected, serve one."""

    user = models.OneToOneField(User, on_delete=models.CASCADE, related_name="identity_pins")
    version = models.BigIntegerField()
    blob = models.BinaryField(max_length=262_144)
    sig = models.BinaryField(max_length=64)
    updated_at = models.DateTimeField()


class Device(models.Model):
    """A device's public keys and the certificate that chains them to the user's UIK."""

    id = models.UUIDField(primary_key=True, editable=False)
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="devices")
    name = models.CharField(max_length=80, blank=True)
    dsk_pub = models.BinaryField(max_length=32)
    dxk_pub = models.BinaryField(max_length=32)
    not_before_ms = models.BigIntegerField()
    cert_sig = models.BinaryField(max_length=64)
    # The UIK that certified the device, recorded at registration: which identity of the
    # user it belongs to, without comparing clocks. None: certified by an identity that
    # was reset before this was recorded.
    uik_pub = models.BinaryField(max_length=32, null=True)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    revoke_reason = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["created_at"]

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class DeviceProofUse(models.Model):
    """A one-time id (``jti``) a device used in an HTTP proof: a replay cache shared by
    every server process. Rows past ``expires_at`` can no longer verify (the proof's time
    window has passed) and are purged opportunistically."""

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="+")
    jti = models.BinaryField(max_length=16)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["device", "jti"], name="device_proof_jti_once"),
        ]


class DeviceSession(models.Model):
    """A session a device acted in (a proof, or the device header while proofs are not
    yet required): revoking the device ends these sessions."""

    session_key = models.CharField(max_length=40)
    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="+")
    proven = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["session_key", "device"], name="device_session_once"
            ),
        ]
