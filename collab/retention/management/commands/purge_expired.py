"""Delete the messages and files of closed cases past the retention period. Run from a
timer (README "Retention and legal hold"), e.g. daily; several may run at once."""

from __future__ import annotations

import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from collab.errors import ServiceError
from collab.retention.schedule import policy_current
from collab.retention.services import PurgeResult, case_purge, held_past_due, purge_expired


class Command(BaseCommand):
    help = (
        "Turn every message of a closed case past the retention period and not on legal "
        "hold into a tombstone and delete its attachments' files (one case_content_purged "
        "event per case). The audit trail, the membership log and the tombstones stay."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="list what would be purged; change nothing"
        )
        parser.add_argument(
            "--case", type=uuid.UUID, help="this case only (refused unless it is due)"
        )

    def _line(self, result: PurgeResult) -> str:
        verb = "would purge" if result.dry_run else "purged"
        return (
            f"{verb} case {result.case_id} (closed {result.closed_at:%Y-%m-%d}): "
            f"{result.messages} message(s), {result.blobs} file(s)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        dry_run = options["dry_run"]
        if options["case"] is not None:
            try:
                results = [case_purge(case_id=options["case"], dry_run=dry_run)]
            except ServiceError as failure:
                extra = "".join(f" ({key} {value})" for key, value in failure.extra.items())
                raise CommandError(f"{failure.code}: {failure.message}{extra}") from None
        else:
            results = purge_expired(dry_run=dry_run)
        for result in results:
            self.stdout.write(self._line(result))
        if dry_run and options["case"] is None:
            for case_id in held_past_due(now=timezone.now(), policy=policy_current()):
                self.stdout.write(f"kept case {case_id}: past the retention period, on legal hold")
        verb = "would be purged" if dry_run else "purged"
        self.stdout.write(f"{len(results)} case(s) {verb}")
