from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django_otp.plugins.otp_totp.models import TOTPDevice

from collab.accounts.models import User
from collab.demo.cases import demo_case_create
from collab.demo.users import DEMO_USERS


class Command(BaseCommand):
    help = "Migrate and create the demo accounts (demo mode only)."

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEMO_MODE:
            raise CommandError(
                "Refused: demo data is only created with COLLAB_DEMO=1 outside production."
            )
        call_command("migrate", interactive=False, verbosity=0)
        for spec in DEMO_USERS:
            user, _ = User.objects.get_or_create(username=spec["username"])
            user.display_name = spec["display_name"]
            user.role = spec["role"]
            user.specialty = spec["specialty"]
            user.organisation = spec["organisation"]
            user.is_staff = user.is_superuser = spec["role"] == "admin"
            user.set_password(spec["password"])
            user.save()
            # Everyone gets TOTP in the demo, so sign-in shows both steps.
            if not TOTPDevice.objects.filter(user=user, confirmed=True).exists():
                TOTPDevice.objects.create(user=user, name="Demo authenticator", confirmed=True)
        self._demo_case()
        self.stdout.write(self.style.SUCCESS("Demo accounts ready.\n"))
        self.stdout.write("Open http://127.0.0.1:8000/ and sign in with one of:\n")
        for spec in DEMO_USERS:
            who = f"{spec['display_name']}, {spec['role']}"
            self.stdout.write(f"  {spec['username']:<8} password {spec['password']:<20} ({who})")
        self.stdout.write(
            "\nThe second step asks for a TOTP code. Get the current one with:\n"
            "  COLLAB_DEMO=1 .venv/bin/python manage.py demo_code <username>\n"
        )

    def _demo_case(self) -> None:
        by_name = {spec["username"]: spec for spec in DEMO_USERS}
        owner, member = User.objects.get(username="pcp"), User.objects.get(username="derm")
        made = demo_case_create(
            owner, by_name["pcp"]["password"], member, by_name["derm"]["password"]
        )
        if made is None:
            self.stdout.write("The demo case exists already (delete data/ to start afresh).\n")
            return
        case, keys = made
        self.stdout.write(f"Demo case {case.pk}: pcp asks derm about a pigmented lesion.\n")
        for k in keys:
            self.stdout.write(
                f"  {k.user.username}: recovery key {k.recovery}\n"
                f"    command-line client: COLLAB_HOME={k.home} "
                f".venv/bin/python -m collab.client.cli login --username {k.user.username}\n"
            )
