"""Walk the audit chain and its checkpoints; exit non-zero on the first problem found."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from collab.audit.verify import chain_verify


class Command(BaseCommand):
    help = "Verify the hash-chained audit trail and its signed checkpoints."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--all", action="store_true", help="list every problem found")

    def handle(self, *args: Any, **options: Any) -> None:
        report = chain_verify()
        span = f"seq {report.first_seq}..{report.last_seq}" if report.events else "empty"
        if report.ok:
            self.stdout.write(
                f"OK: {report.events} events ({span}), {report.checkpoints} checkpoints verified"
            )
            return
        shown = report.problems if options["all"] else report.problems[:1]
        for problem in shown:
            self.stderr.write(f"FAILED: {problem}")
        if len(report.problems) > len(shown):
            self.stderr.write(f"({len(report.problems) - len(shown)} more; use --all)")
        raise SystemExit(1)
