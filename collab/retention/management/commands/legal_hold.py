"""Place or release a legal hold on a case (README "Retention and legal hold")."""

from __future__ import annotations

import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from collab.accounts.models import User
from collab.errors import ServiceError
from collab.retention.services import legal_hold_place, legal_hold_release


class Command(BaseCommand):
    help = (
        "Place or release a legal hold on a case, in the name of an admin (--by): a held "
        "case is never purged (audited as legal_hold_placed / legal_hold_released)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["place", "release"])
        parser.add_argument("case_id", type=uuid.UUID)
        parser.add_argument("--by", required=True, help="username of the admin deciding it")

    def handle(self, *args: Any, **options: Any) -> None:
        admin = User.objects.filter(username=options["by"]).first()
        if admin is None:
            raise CommandError(f"no_user: no user named {options['by']!r}")
        service = legal_hold_place if options["action"] == "place" else legal_hold_release
        try:
            case = service(actor=admin, case_id=options["case_id"])
        except ServiceError as failure:
            raise CommandError(f"{failure.code}: {failure.message}") from None
        state = "on legal hold" if case.legal_hold_at else "no longer on legal hold"
        self.stdout.write(f"case {case.pk} is {state}")
