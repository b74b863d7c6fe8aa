from django.apps import AppConfig


class EscalationConfig(AppConfig):
    name = "collab.escalation"
    label = "escalation"
    default_auto_field = "django.db.models.BigAutoField"
