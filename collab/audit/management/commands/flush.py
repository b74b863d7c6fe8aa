"""Django's flush, able to empty the audit tables outside production.

Django's test runner empties every table with one TRUNCATE between transactional
tests; the append-only trigger refuses that unless this session allows it. In
production the trigger stays in force and flush fails, as it should.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.commands.flush import Command as FlushCommand
from django.db import connections


class Command(FlushCommand):
    def handle(self, **options: Any) -> None:
        connection = connections[options["database"]]
        allow = connection.vendor == "postgresql" and not settings.PRODUCTION
        if allow:
            with connection.cursor() as cursor:
                cursor.execute("SELECT set_config('collab.audit_allow_truncate', 'on', false)")
        try:
            super().handle(**options)
        finally:
            if allow:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT set_config('collab.audit_allow_truncate', '', false)")
