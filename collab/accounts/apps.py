from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "collab.accounts"
    label = "accounts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Signal receivers: the sign-in time (session lifetime), deactivation closes sockets.
        from collab.accounts import policy  # noqa: F401
