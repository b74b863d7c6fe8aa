"""Sign the current chain head. Run from cron or a systemd timer (see docs/audit.md);
with COLLAB_AUDIT_SIGNER=external, as another user with --key-file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser
from nacl.signing import SigningKey

from collab.audit import keys
from collab.audit.models import AuditAction
from collab.audit.services import audit_record, checkpoint_sign


def key_option(parser: CommandParser) -> None:
    parser.add_argument(
        "--key-file",
        default="",
        help="sign with the base64 seed in this file (mode 0600, never generated) instead "
        "of the application's key: the external signer's way (docs/audit.md)",
    )


def key_from_options(options: dict[str, Any]) -> SigningKey | None:
    if not options["key_file"]:
        return None
    try:
        return keys.key_from_file(Path(options["key_file"]))
    except (ImproperlyConfigured, OSError) as exc:
        raise CommandError(str(exc)) from exc


class Command(BaseCommand):
    help = "Sign an Ed25519 checkpoint over the audit chain head (seq, hash, time)."

    def add_arguments(self, parser: CommandParser) -> None:
        key_option(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        key = key_from_options(options)
        try:
            checkpoint = checkpoint_sign(key=key)
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from exc
        audit_record(
            action=AuditAction.CHECKPOINT_SIGNED,
            target="audit:checkpoint",
            details={"seq": checkpoint.seq, "hash": checkpoint.event_hash},
        )
        self.stdout.write(f"signed checkpoint at seq {checkpoint.seq} hash {checkpoint.event_hash}")
