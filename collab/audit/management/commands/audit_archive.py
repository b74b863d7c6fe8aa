"""Copy audit events older than a date to a JSON-lines file with a signed anchor.

Nothing is deleted: removing archived rows needs the append-only trigger disabled
by a DBA (docs/audit.md); audit_verify then starts from the anchor checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from collab.audit import conf, keys
from collab.audit.filters import FilterError, parse_filter
from collab.audit.management.commands.audit_checkpoint import key_from_options, key_option
from collab.audit.services import audit_archive
from collab.audit.verify import chain_verify


class Command(BaseCommand):
    help = "Archive audit events older than --before to a new JSON-lines file."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--before", required=True, help="ISO 8601 date or date-time")
        parser.add_argument("--output", "-o", required=True, help="new file to write")
        key_option(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            before = parse_filter({"to": options["before"]}).until
        except FilterError as exc:
            raise CommandError(str(exc).replace("to ", "--before ", 1)) from exc
        assert before is not None  # noqa: S101 - parse_filter returns what it was given
        output = Path(options["output"])
        if output.exists():
            raise CommandError(f"{output} exists; archives are never overwritten")
        key = key_from_options(options)
        trusted = None if key is None else [*conf.trusted_public_keys(), keys.public_key_b64(key)]
        report = chain_verify(trusted=trusted)
        if not report.ok:
            raise CommandError(f"the chain does not verify, not archiving: {report.problems[0]}")
        try:
            result = audit_archive(before=before, output=output, key=key)
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"archived {result.count} events up to seq {result.last_seq} "
            f"(hash {result.last_hash}) to {output}"
        )
