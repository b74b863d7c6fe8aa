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
    # Consult workflow: the first specialist to claim the consult (atomic, see consults.py).
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    claimed_at = models.DateTimeField(null=True, blank=True)
    status_changed_at = models.DateTimeField(null=True, blank=True)
    # Retention (collab.retention): a legal hold suspends the purge; purged_at is set once
    # the purge has deleted the case's ciphertext and blobs (tombstones and audit stay).
    legal_hold_at = models.DateTimeField(null=True, blank=True)
    legal_hold_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    purged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-opened_at"]
        indexes = [models.Index(fields=["status", "specialty"], name="consult_queue")]


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
    REJOIN = "rejoin", "Rejoin after an identity reset"


class JoinStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    COMMITTED = "committed", "Committed"
    CANCELLED = "cancelled", "Cancelled"
    DECLINED = "declined", "Declined by a case manager"
    WITHDRAWN = "withdrawn", "Withdrawn by the requester"


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
    # Who declined or withdrew the request, and when (null while pending or once committed).
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    # For kind "patient": the invitation the patient accepted.
    invitation = models.ForeignKey(
        "cases.Invitation", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["case", "user"],
                condition=models.Q(status="pending"),
                name="one_pending_join",
            ),
        ]


class RemovedReason(models.TextChoices):
    RECALLED = "recalled", "Recalled by the sender"
    PURGED = "purged", "Purged after the retention period"


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
    # Cleartext metadata set by the sender: the body is encrypted, urgency is not.
    urgent = models.BooleanField(default=False)
    # A tombstone: the ciphertext (and the attachments) are gone, the row keeps the seq.
    removed_at = models.DateTimeField(null=True, blank=True)
    removed_reason = models.CharField(max_length=16, choices=RemovedReason.choices, blank=True)
    # The sender's signed recall statement (collab.crypto recall), for clients to verify.
    recall_sig = models.BinaryField(max_length=64, null=True, blank=True)
    recall_device_id = models.UUIDField(null=True, blank=True)

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


class DeliveredMark(models.Model):
    """How far a user's devices have received a case's messages (delivered-up-to
    receipts), reported by their clients; written when they report, never per message."""

    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="delivered_marks")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    up_to = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["case", "user"], name="one_delivered_mark")
        ]


class BlobStatus(models.TextChoices):
    UPLOADING = "uploading", "Uploading"
    COMPLETE = "complete", "Complete"
    EXPIRED = "expired", "Expired (abandoned upload, file deleted)"
    REMOVED = "removed", "Removed (message recalled or case purged, file deleted)"


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


class CaseStatusChange(models.Model):
    """Who moved a consult from one status to another, and when."""

    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="status_changes")
    from_status = models.CharField(max_length=16, choices=Status.choices)
    to_status = models.CharField(max_length=16, choices=Status.choices)
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    changed_at = models.DateTimeField(auto_now_add=True)
    reason = models.CharField(max_length=32, blank=True)

    class Meta:
        ordering = ["changed_at", "pk"]


class Invitation(models.Model):
    """A single-use, expiring link for the patient; only the token's SHA-256 is stored."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="invitations")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    used_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    expiry_recorded = models.BooleanField(default=False)
    # Binding by the link (optional; see protocol-crypto): the inviting device's signed
    # statement over the invite key, and the patient's proof made with it.
    inviter_device_id = models.UUIDField(null=True, blank=True)
    invite_pub = models.BinaryField(max_length=32, null=True, blank=True)
    invite_sig = models.BinaryField(max_length=64, null=True, blank=True)
    created_ms = models.BigIntegerField(null=True, blank=True)
    proof_sig = models.BinaryField(max_length=64, null=True, blank=True)
    proof_uik = models.BinaryField(max_length=32, null=True, blank=True)
    proof_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]


class LeaveRequest(models.Model):
    """A member's signed leave request (CR1 LeaveRequest), for another member's client
    to commit as remove_user with ``leave``."""

    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="leave_requests")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    device_id = models.UUIDField()
    epoch = models.BigIntegerField()
    signature = models.BinaryField(max_length=64)
    status = models.CharField(max_length=16, choices=JoinStatus.choices, default=JoinStatus.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_epoch = models.BigIntegerField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["case", "user"],
                condition=models.Q(status="pending"),
                name="one_pending_leave",
            ),
        ]


class UrgentAck(models.Model):
    """A member's acknowledgement of an urgent message (once per member)."""

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="urgent_acks")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["message", "user"], name="one_urgent_ack"),
        ]


class NotificationKind(models.TextChoices):
    CONSULT_CLAIMED = "consult_claimed", "Consult claimed"
    JOIN_REQUEST = "join_request", "Join request"
    URGENT_MESSAGE = "urgent_message", "Urgent message"
    INVITATION_ACCEPTED = "invitation_accepted", "Invitation accepted"
    STATUS_CHANGED = "status_changed", "Status changed"
    LEAVE_REQUEST = "leave_request", "Leave request"
    JOIN_DECLINED = "join_declined", "Join request declined"
    JOIN_WITHDRAWN = "join_withdrawn", "Join request withdrawn"
    CONSULT_OFFERED = "consult_offered", "Consult offered to you as on-call"
    URGENT_REMINDER = "urgent_reminder", "Reminder: urgent message not acknowledged"
    URGENT_ESCALATED = "urgent_escalated", "Urgent message escalated to you"


class Notification(models.Model):
    """An in-app notice: an event kind and a case id, never anything about the patient."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications"
    )
    kind = models.CharField(max_length=32, choices=NotificationKind.choices)
    case_id = models.UUIDField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["user", "read_at"], name="notification_unread")]


class KeyBackupItem(models.Model):
    """One epoch key of a case, sealed on the client under the user's backup key
    (protocol-crypto.md §9d): opaque here. The first item for (user, case, epoch) is kept;
    a later one for the same epoch never replaces it."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="+")
    epoch = models.BigIntegerField()
    item = models.BinaryField(max_length=112)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "case", "epoch"], name="one_key_backup_item"
            ),
        ]
