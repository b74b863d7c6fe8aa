from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class Urgency(models.TextChoices):
    ROUTINE = "routine", "Routine"
    SOON = "soon", "Soon"
    URGENT = "urgent", "Urgent"


class Status(models.TextChoices):
    REQUESTED = "requested", "Requested"
    ACCEPTED = "accepted", "Accepted"
    ANSWERED = "answered", "Answered"
    CLOSED = "closed", "Closed"


class Case(models.Model):
    """Only what the server needs; anything about the patient travels encrypted."""

    id = models.UUIDField(primary_key=True, editable=False)
    opened_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    opened_at = models.DateTimeField(auto_now_add=True)
    specialty = models.CharField(max_length=80, blank=True)
    urgency = models.CharField(max_length=16, choices=Urgency.choices, default=Urgency.ROUTINE)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.REQUESTED)
    # Head of the membership log (compare-and-swap target) and the last server sequence.
    head_epoch = models.BigIntegerField(default=0)
    head_hash = models.BinaryField(max_length=64)
    head_at = models.DateTimeField(auto_now_add=True)
    last_seq = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["-opened_at"]


class LogEntry(models.Model):
    """One signed membership-log entry, stored as its canonical bytes."""

    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="log")
    epoch = models.BigIntegerField()
    entry_hash = models.BinaryField(max_length=64)
    raw = models.BinaryField()
    action = models.PositiveSmallIntegerField()
    author_device_id = models.UUIDField()
    committed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["case", "epoch"], name="one_entry_per_epoch"),
        ]
        ordering = ["epoch"]


class KeyWrap(models.Model):
    """An epoch key wrapped to one device: also the record that the device may read that epoch."""

    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="wraps")
    epoch = models.BigIntegerField()
    device_id = models.UUIDField()
    ciphertext = models.BinaryField(max_length=1024)
    # For wraps given later by a share_history entry: the epoch of that entry.
    shared_in_epoch = models.BigIntegerField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["case", "device_id", "epoch"], name="one_wrap_per_device_epoch"
            ),
        ]
        indexes = [models.Index(fields=["case", "device_id"])]


class Member(models.Model):
    """The head roster's users, derived from the log for fast access checks."""

    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="members")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="case_memberships"
    )
    role = models.PositiveSmallIntegerField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["case", "user"], name="one_membership")]


class MemberDevice(models.Model):
    """The head roster's devices, derived from the log."""

    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="member_devices")
    device = models.ForeignKey("accounts.Device", on_delete=models.CASCADE, related_name="+")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["case", "device"], name="one_member_device")]


class JoinKind(models.TextChoices):
    CLAIM = "claim", "Claim of a consult"
    INVITE = "invite", "Named invitation"
    PATIENT = "patient", "Patient invitation"


class JoinStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    COMMITTED = "committed", "Committed"
    CANCELLED = "cancelled", "Cancelled"


class JoinRequest(models.Model):
    """A request to be added, for an authorised member's client to turn into a signed entry."""

    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="join_requests")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=16, choices=JoinKind.choices)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    status = models.CharField(max_length=16, choices=JoinStatus.choices, default=JoinStatus.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_epoch = models.BigIntegerField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["case", "user"],
                condition=models.Q(status="pending"),
                name="one_pending_join",
            ),
        ]


class Message(models.Model):
    """A signed, encrypted envelope and the server sequence number it was given."""

    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="messages")
    seq = models.BigIntegerField()
    epoch = models.BigIntegerField()
    sender = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    sender_device_id = models.UUIDField()
    client_msg_id = models.BinaryField(max_length=16)
    sender_seq = models.BigIntegerField()
    header = models.BinaryField()
    signature = models.BinaryField(max_length=64)
    ciphertext = models.BinaryField()
    stored_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["case", "seq"], name="gapless_case_seq"),
            models.UniqueConstraint(
                fields=["sender_device_id", "client_msg_id"], name="idempotent_client_id"
            ),
        ]
        indexes = [models.Index(fields=["case", "sender_device_id", "sender_seq"])]
        ordering = ["seq"]


class ReadMark(models.Model):
    """How far a user has read in a case (read-up-to receipts)."""

    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="read_marks")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    up_to = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["case", "user"], name="one_read_mark")]


class BlobStatus(models.TextChoices):
    UPLOADING = "uploading", "Uploading"
    COMPLETE = "complete", "Complete"


class Blob(models.Model):
    """An encrypted attachment: chunks appended in order, root checked on completion."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="blobs")
    uploader = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    uploader_device_id = models.UUIDField()
    size = models.BigIntegerField(help_text="Ciphertext bytes announced at creation.")
    chunk_count = models.PositiveIntegerField()
    received_chunks = models.PositiveIntegerField(default=0)
    received_bytes = models.BigIntegerField(default=0)
    chunk_hashes = models.BinaryField(default=b"")
    root = models.BinaryField(max_length=64, null=True)
    storage_name = models.CharField(max_length=200)
    status = models.CharField(
        max_length=16, choices=BlobStatus.choices, default=BlobStatus.UPLOADING
    )
    created_at = models.DateTimeField(auto_now_add=True)
