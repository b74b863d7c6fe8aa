"""An operator resets a user's identity key, after verifying the person out of band."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from collab.accounts.models import User
from collab.accounts.services import identity_reset

# The one place accounts reaches into cases: the key backup is sealed under the old
# identity key, and the rejoin requests follow from the reset, so both go in the same
# transaction as the key itself.
from collab.cases.services.joins import rejoin_requests_file
from collab.cases.services.keybackup import key_backup_forget


class Command(BaseCommand):
    help = (
        "Reset a user's identity key (lost recovery key and devices): revoke every device, "
        "delete the registered identity key, its backup, the pin book and the key backup, "
        "end every session. Their next sign-in registers a new identity key; peers see it "
        "as an identity change and a case owner or admin readmits them. Verify the person "
        "out of band first."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username", help="the user whose identity is reset")
        parser.add_argument(
            "--by", default="operator", help="who performs the reset (recorded in the audit)"
        )
        parser.add_argument(
            "--yes", action="store_true", help="confirm: the person was verified out of band"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        user = User.objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"no user {options['username']!r}")
        by = str(options["by"]).strip()[:150] or "operator"
        if not options["yes"]:
            raise CommandError(
                "this revokes every device of the user and deletes their identity key: "
                "verify the person out of band, then run again with --yes"
            )
        # An operator who has an account is the audit actor; any other name is recorded.
        actor = User.objects.filter(username=by).first()
        with transaction.atomic():
            result = identity_reset(user=user, by=by, actor=actor)
            backup_items = key_backup_forget(user=user)
            rejoins = rejoin_requests_file(user=user, actor=actor, by=by)
        write = self.stdout.write
        write(f"Identity reset for {user.username} ({user.pk}) by {by}:")
        write(f'  devices revoked ({len(result.devices_revoked)}, reason "identity reset"):')
        for device_id in result.devices_revoked:
            write(f"    {device_id}")
        write(f"  sessions ended: {result.sessions_ended}")
        write(f"  identity key retired: {'yes' if result.identity_deleted else 'none'}")
        write(f"  identity backup deleted: {'yes' if result.identity_backup_deleted else 'none'}")
        write(f"  pin book deleted: {'yes' if result.pins_deleted else 'none'}")
        write(f"  key backup items deleted: {backup_items}")
        write(f"  rejoin requests filed ({len(rejoins)}):")
        for case_id in rejoins:
            write(f"    case {case_id}")
        write(
            "Their next sign-in registers a new identity key. In each of their cases a case "
            "owner or admin readmits them (the rejoin request) after comparing the new key "
            "with them."
        )
