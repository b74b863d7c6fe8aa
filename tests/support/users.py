from __future__ import annotations

from django.test import Client
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from collab.accounts.models import User

PASSWORD = "correct-horse-battery-9"


def make_user(
    username: str, role: str = "provider", specialty: str = "", totp: bool = True
) -> User:
    user = User.objects.create_user(
        username=username,
        password=PASSWORD,
        display_name=username.title(),
        role=role,
        specialty=specialty if role == "provider" else "",
    )
    if totp:
        TOTPDevice.objects.create(user=user, name="app", confirmed=True)
    return user


def totp_code(user: User, offset_steps: int = 0) -> str:
    device = TOTPDevice.objects.get(user=user, confirmed=True)
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    totp.time = totp.time + offset_steps * device.step
    return f"{totp.token():06d}"


def verified_client(user: User) -> Client:
    """A test client whose session passed password and TOTP."""
    client = Client()
    client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
    device = TOTPDevice.objects.filter(user=user, confirmed=True).first()
    session = client.session
    if device is not None:
        session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    import time

    from collab.accounts.policy import LAST_ACTIVITY_KEY

    session[LAST_ACTIVITY_KEY] = time.time()
    session.save()
    return client


def session_cookie(client: Client) -> str:
    return f"sessionid={client.cookies['sessionid'].value}"
