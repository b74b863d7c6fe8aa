from django.apps import AppConfig


class OncallConfig(AppConfig):
    name = "collab.oncall"
    label = "oncall"
    default_auto_field = "django.db.models.BigAutoField"
