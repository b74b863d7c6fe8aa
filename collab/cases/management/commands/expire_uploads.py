"""Expire abandoned uploads. Run from a timer (README "Production"), e.g. hourly."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from collab.cases.services.blobs import expire_uploads


class Command(BaseCommand):
    help = (
        "Delete the partial file of every upload still unfinished N hours after it "
        "started and mark it expired (audited as upload_expired)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than-hours",
            type=float,
            default=None,
            help=f"default: UPLOAD_EXPIRY_HOURS ({settings.UPLOAD_EXPIRY_HOURS})",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        hours = options["older_than_hours"]
        if hours is None:
            hours = settings.UPLOAD_EXPIRY_HOURS
        if hours < 0:
            self.stderr.write("--older-than-hours must not be negative")
            raise SystemExit(2)
        expired = expire_uploads(older_than=timedelta(hours=hours))
        for blob in expired:
            self.stdout.write(
                f"expired upload {blob.pk} ({blob.received_bytes} of {blob.size} bytes)"
            )
        self.stdout.write(f"{len(expired)} upload(s) expired (older than {hours:g} h)")
