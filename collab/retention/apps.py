from django.apps import AppConfig


class RetentionConfig(AppConfig):
    name = "collab.retention"
    label = "retention"
    default_auto_field = "django.db.models.BigAutoField"
