"""Show or set the organisation's retention period (README "Retention and legal hold")."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from collab.errors import ServiceError
from collab.retention.schedule import policy_current
from collab.retention.services import retention_policy_set


class Command(BaseCommand):
    help = (
        "Show the retention period, or set it: --days N deletes a closed case's messages "
        "and files N days after it was closed, --never keeps them (audited as "
        "retention_policy_changed)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        group = parser.add_mutually_exclusive_group()
        group.add_argument("--days", type=int, help="days after closing (1 to 36500)")
        group.add_argument("--never", action="store_true", help="never delete")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["days"] is not None or options["never"]:
            days = None if options["never"] else options["days"]
            try:
                retention_policy_set(actor=None, lifespan_days=days)
            except ServiceError as failure:
                raise CommandError(f"{failure.code}: {failure.message}") from None
        days = policy_current().lifespan_days
        if days is None:
            self.stdout.write("retention: never (closed cases keep their messages and files)")
        else:
            self.stdout.write(f"retention: {days} day(s) after a case is closed")
