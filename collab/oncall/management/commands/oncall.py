"""Operators edit on-call schedules from the shell: ``oncall add|list|remove``."""

from __future__ import annotations

import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.utils import timezone

from collab.accounts.models import User
from collab.errors import ServiceError
from collab.oncall import services
from collab.oncall.models import OnCallService, Shift


def _user_id(value: str | None) -> str | None:
    """A username or a user id, as the operator typed it."""
    if not value:
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        pass
    user = User.objects.filter(username=value).first()
    if user is None:
        raise CommandError(f"no user {value!r}")
    return str(user.pk)


def _name(user: User | None) -> str:
    return "-" if user is None else f"{user.display_name or user.username} ({user.username})"


class Command(BaseCommand):
    help = (
        "On-call schedules. add: a shift (the specialty's service is created on first use); "
        "list: services, who is on call now and the shifts to come; remove: a shift by id. "
        "Times are ISO 8601 with a UTC offset, e.g. 2026-12-01T08:00+01:00."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="op", required=True)
        add = sub.add_parser("add", help="add a shift")
        add.add_argument("--specialty", required=True)
        add.add_argument("--service-name", default="", help="name of a new service")
        add.add_argument("--primary", required=True, help="username or user id")
        add.add_argument("--backup", default="", help="username or user id")
        add.add_argument("--start", required=True)
        add.add_argument("--end", required=True)
        lst = sub.add_parser("list", help="list services and shifts")
        lst.add_argument("--specialty", default="")
        rm = sub.add_parser("remove", help="remove a shift")
        rm.add_argument("shift", type=int)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            getattr(self, f"_{options['op']}")(options)
        except ServiceError as failure:
            raise CommandError(f"{failure.code}: {failure.message}") from None

    def _add(self, options: dict[str, Any]) -> None:
        specialty = str(options["specialty"]).strip()
        with transaction.atomic():
            service = OnCallService.objects.filter(specialty=specialty).first()
            if service is None:
                service = services.service_create(
                    actor=None, name=options["service_name"], specialty=specialty
                )
                self.stdout.write(f"service {service.pk} {service.name!r} created")
            shift = services.shift_add(
                actor=None,
                service_id=service.pk,
                primary_id=_user_id(options["primary"]),
                backup_id=_user_id(options["backup"]),
                starts_at=options["start"],
                ends_at=options["end"],
            )
        self.stdout.write(
            f"shift {shift.pk}: {service.specialty} {shift.starts_at.isoformat()} to "
            f"{shift.ends_at.isoformat()}, primary {_name(shift.primary)}, "
            f"backup {_name(shift.backup)}"
        )

    def _list(self, options: dict[str, Any]) -> None:
        chosen = services.service_list()
        if options["specialty"]:
            chosen = [s for s in chosen if s.specialty == options["specialty"].strip()]
        if not chosen:
            self.stdout.write("no on-call services")
        now = timezone.now()
        for service in chosen:
            self.stdout.write(f"service {service.pk} {service.name!r} ({service.specialty})")
            current = services.oncall_now(service.specialty, now)
            if current is None:
                self.stdout.write("  on call now: nobody (consults go straight to the queue)")
            else:
                self.stdout.write(
                    f"  on call now: {_name(current.primary)}, backup {_name(current.backup)},"
                    f" until {current.ends_at.isoformat()}"
                )
            shifts: list[Shift] = services.shift_list(service=service, since=now)
            for shift in shifts:
                self.stdout.write(
                    f"  shift {shift.pk}: {shift.starts_at.isoformat()} to "
                    f"{shift.ends_at.isoformat()} primary {_name(shift.primary)} "
                    f"backup {_name(shift.backup)}"
                )

    def _remove(self, options: dict[str, Any]) -> None:
        services.shift_remove(actor=None, shift_id=options["shift"])
        self.stdout.write(f"shift {options['shift']} removed")
