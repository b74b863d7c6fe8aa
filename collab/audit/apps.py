from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "collab.audit"
    label = "audit"
    verbose_name = "Audit trail"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from collab.audit import checks  # noqa: F401 - registers the system check
