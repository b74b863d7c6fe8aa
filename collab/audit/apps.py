from django.apps import AppConfig
from django.db.backends.signals import connection_created


class AuditConfig(AppConfig):
    name = "collab.audit"
    label = "audit"
    verbose_name = "Audit trail"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from collab.audit import checks, sqlite_guard  # noqa: F401 - checks registers itself

        # Every SQLite connection gets the function the append-only triggers ask.
        connection_created.connect(sqlite_guard.register, dispatch_uid="collab.audit.sqlite_guard")
