"""Sign the current chain head. Run from cron or a systemd timer (see docs/audit.md)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from collab.audit.models import AuditAction
from collab.audit.services import audit_record, checkpoint_sign


class Command(BaseCommand):
    help = "Sign an Ed25519 checkpoint over the audit chain head (seq, hash, time)."

    def handle(self, *args: Any, **options: Any) -> None:
        checkpoint = checkpoint_sign()
        audit_record(
            action=AuditAction.CHECKPOINT_SIGNED,
            target="audit:checkpoint",
            details={"seq": checkpoint.seq, "hash": checkpoint.event_hash},
        )
        self.stdout.write(f"signed checkpoint at seq {checkpoint.seq} hash {checkpoint.event_hash}")
