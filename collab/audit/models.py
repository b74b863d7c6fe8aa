"""Append-only audit rows. Only collab.audit.services creates them; nothing changes them."""

from __future__ import annotations

from typing import Any, NoReturn

from django.conf import settings
from django.db import models

GENESIS_HASH = "0" * 64


class AuditAction(models.TextChoices):
    SIGN_IN = "sign_in", "Signed in"
    SIGN_IN_FAILED = "sign_in_failed", "Sign-in failed"
    OTP_FAILED = "otp_failed", "Second-factor code refused"
    OTP_THROTTLED = "otp_throttled", "Second factor throttled"
    TOTP_ENROLLED = "totp_enrolled", "Authenticator enrolled"
    SIGN_OUT = "sign_out", "Signed out"
    AUTO_SIGN_OUT = "auto_sign_out", "Signed out automatically"
    DEVICE_REGISTERED = "device_registered", "Device registered"
    DEVICE_REVOKED = "device_revoked", "Device revoked"
    IDENTITY_REGISTERED = "identity_registered", "Identity key registered"
    CASE_OPENED = "case_opened", "Case opened"
    CASE_STATUS_CHANGED = "case_status_changed", "Case status changed"
    LOG_ENTRY_COMMITTED = "log_entry_committed", "Membership log entry committed"
    JOIN_REQUESTED = "join_requested", "Join requested"
    JOIN_DECLINED = "join_declined", "Join request declined"
    JOIN_WITHDRAWN = "join_withdrawn", "Join request withdrawn"
    MESSAGE_STORED = "message_stored", "Message stored"
    HISTORY_READ = "history_read", "History read"
    ATTACHMENT_UPLOADED = "attachment_uploaded", "Attachment uploaded"
    ATTACHMENT_DOWNLOADED = "attachment_downloaded", "Attachment downloaded"
    INVITATION_CREATED = "invitation_created", "Invitation created"
    INVITATION_OPENED = "invitation_opened", "Invitation opened"
    INVITATION_ACCEPTED = "invitation_accepted", "Invitation accepted"
    INVITATION_REVOKED = "invitation_revoked", "Invitation revoked"
    INVITATION_EXPIRED = "invitation_expired", "Invitation expired"
    INVITATION_PROOF = "invitation_proof", "Invitation proof stored"
    IDENTITY_PINS_STORED = "identity_pins_stored", "Identity pins stored"
    AUDIT_EXPORTED = "audit_exported", "Audit trail exported"
    AUDIT_VIEWED = "audit_viewed", "Audit trail viewed"
    CHECKPOINT_SIGNED = "checkpoint_signed", "Audit checkpoint signed"
    ACCESS_DENIED = "access_denied", "Access denied"
    KEY_BACKUP_STORED = "key_backup_stored", "Key backup items stored"
    KEY_BACKUP_READ = "key_backup_read", "Key backup read"
    DEVICE_SESSIONS_ENDED = "device_sessions_ended", "Sessions of a revoked device ended"
    IDENTITY_RESET = "identity_reset", "Identity reset by an operator"
    IDENTITY_BACKUP_REPLACED = "identity_backup_replaced", "Identity backup replaced"
    UPLOAD_EXPIRED = "upload_expired", "Abandoned upload expired"
    LEAVE_REQUESTED = "leave_requested", "Leave requested"
    URGENT_ACKNOWLEDGED = "urgent_acknowledged", "Urgent message acknowledged"
    WRAPS_READ = "wraps_read", "Key wraps read"
    LOG_READ = "log_read", "Membership log read"
    IDENTITY_BACKUP_READ = "identity_backup_read", "Identity backup read"
    MESSAGES_DELIVERED = "messages_delivered", "Messages delivered live"
    ONCALL_CHANGED = "oncall_changed", "On-call schedule changed"
    CONSULT_OFFERED = "consult_offered", "Consult offered to the on-call provider"
    URGENT_REMINDED = "urgent_reminded", "Urgent reminder sent"
    URGENT_ESCALATED = "urgent_escalated", "Urgent message escalated"
    ESCALATION_POLICY_CHANGED = "escalation_policy_changed", "Escalation policy changed"
    MESSAGE_RECALLED = "message_recalled", "Message recalled by its sender"
    RETENTION_POLICY_CHANGED = "retention_policy_changed", "Retention policy changed"
    LEGAL_HOLD_PLACED = "legal_hold_placed", "Legal hold placed"
    LEGAL_HOLD_RELEASED = "legal_hold_released", "Legal hold released"
    CASE_CONTENT_PURGED = "case_content_purged", "Case content purged after retention"


class Outcome(models.TextChoices):
    SUCCESS = "success", "Success"
    FAILURE = "failure", "Failure"


class AppendOnlyError(Exception):
    """Raised on any attempt to change or delete an audit row through the ORM."""


class AppendOnlyQuerySet(models.QuerySet[Any]):
    def update(self, **kwargs: Any) -> NoReturn:
        raise AppendOnlyError("audit rows are append-only")

    def delete(self) -> NoReturn:
        raise AppendOnlyError("audit rows are append-only")


class AppendOnlyModel(models.Model):
    class Meta:
        abstract = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise AppendOnlyError(f"{type(self).__name__} rows are append-only")
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AppendOnlyError(f"{type(self).__name__} rows are append-only")


class AuditHead(models.Model):
    """The single row writers lock: the last sequence number and hash of the chain."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    seq = models.BigIntegerField(default=0)
    hash = models.CharField(max_length=64, default=GENESIS_HASH)

    def __str__(self) -> str:
        return f"head {self.seq}"


class AuditEvent(AppendOnlyModel):
    seq = models.BigIntegerField(unique=True)
    recorded_at = models.DateTimeField(db_index=True)
    # No database constraint: audit rows outlive users and never block their removal.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    device_id = models.UUIDField(null=True, blank=True)
    action = models.CharField(max_length=40, choices=AuditAction.choices, db_index=True)
    outcome = models.CharField(max_length=8, choices=Outcome.choices, default=Outcome.SUCCESS)
    reason = models.CharField(max_length=255, blank=True)
    # A plain UUID, not a foreign key, so the audit app depends on no other app's tables.
    case_id = models.UUIDField(null=True, blank=True, db_index=True)
    target = models.CharField(max_length=255, blank=True)
    client_address = models.CharField(max_length=45, blank=True)
    user_agent = models.CharField(max_length=512, blank=True)
    details = models.JSONField(default=dict, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        ordering = ["seq"]
        indexes = [models.Index(fields=["actor", "recorded_at"], name="audit_actor_time")]

    def __str__(self) -> str:
        return f"#{self.seq} {self.action} {self.outcome}"


class CheckpointReason(models.TextChoices):
    MANUAL = "manual", "On demand"
    PERIODIC = "periodic", "Every N events"
    ARCHIVE = "archive", "Archive anchor"


class AuditCheckpoint(AppendOnlyModel):
    """An Ed25519 signature over (seq, hash, time, reason) of one chain position."""

    seq = models.BigIntegerField(db_index=True)
    event_hash = models.CharField(max_length=64)
    signed_at = models.DateTimeField()
    reason = models.CharField(max_length=16, choices=CheckpointReason.choices)
    public_key = models.CharField(max_length=64)
    signature = models.CharField(max_length=100)

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        ordering = ["seq", "id"]

    def __str__(self) -> str:
        return f"checkpoint at {self.seq}"
