"""Export audit events as a FHIR R4 Bundle of AuditEvent resources (JSON)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from collab.audit.filters import FilterError, parse_filter
from collab.audit.services import audit_export


class Command(BaseCommand):
    help = "Export audit events as a FHIR R4 Bundle, filtered like /api/audit/export."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--case", default="", help="case UUID")
        parser.add_argument("--user", default="", help="user UUID (the actor)")
        parser.add_argument("--action", default="", help="action name(s), comma-separated")
        parser.add_argument("--from", dest="since", default="", help="ISO 8601 start")
        parser.add_argument("--to", dest="until", default="", help="ISO 8601 end")
        parser.add_argument("--output", "-o", default="", help="file to write (default stdout)")

    def handle(self, *args: Any, **options: Any) -> None:
        params = {
            "case": options["case"],
            "user": options["user"],
            "action": options["action"],
            "from": options["since"],
            "to": options["until"],
        }
        try:
            flt = parse_filter(params)
        except FilterError as exc:
            raise CommandError(str(exc)) from exc
        text = json.dumps(audit_export(flt=flt, actor=None), indent=1)
        if options["output"]:
            Path(options["output"]).write_text(text + "\n", encoding="utf-8")
        else:
            self.stdout.write(text)
