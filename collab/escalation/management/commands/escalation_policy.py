"""Show or set the organisation's escalation policy (README "Escalation")."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from collab.errors import ServiceError
from collab.escalation import policy as policies


class Command(BaseCommand):
    help = (
        "Print the organisation's escalation policy, or set it: "
        "--first 2 --every 2 --count 10 --step oncall:10 --step backup:20 --step owner:30"
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--first", type=int, help="minutes before the first reminder")
        parser.add_argument("--every", type=int, help="minutes between reminders")
        parser.add_argument("--count", type=int, help="how many reminders")
        parser.add_argument(
            "--step", action="append", default=None, metavar="TO:MINUTES",
            help="an escalation step (backup, oncall or owner), minutes after the message; "
            "repeat in order. --no-steps for none",
        )
        parser.add_argument("--no-steps", action="store_true", help="no escalation chain")

    def handle(self, *args: Any, **options: Any) -> None:
        current = policies.organisation_policy().wire()
        changes = {
            "first_reminder_minutes": options["first"],
            "repeat_minutes": options["every"],
            "repeat_count": options["count"],
        }
        wanted = {**current, **{k: v for k, v in changes.items() if v is not None}}
        if options["no_steps"]:
            wanted["steps"] = []
        elif options["step"] is not None:
            wanted["steps"] = [self._step(text) for text in options["step"]]
        if wanted != current:
            try:
                policies.organisation_policy_set(actor=None, data=wanted)
            except ServiceError as error:
                raise CommandError(f"{error.code}: {error.message}") from None
        self.stdout.write(json.dumps(policies.organisation_policy().wire(), indent=2))

    @staticmethod
    def _step(text: str) -> dict[str, Any]:
        to, _, minutes = text.partition(":")
        try:
            return {"to": to, "after_minutes": int(minutes)}
        except ValueError:
            raise CommandError(f"bad_step_time: {text!r} is not TO:MINUTES") from None
