"""Who must pass a second factor, and whether a session has passed it.

One policy for pages (django-otp middleware sets ``is_verified``) and sockets
(which never run that middleware, so the device is resolved from the session).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.signals import user_logged_in
from django.db.models.signals import post_save
from django.dispatch import receiver
from django.http import HttpRequest
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.models import Device
from django_otp.plugins.otp_totp.models import TOTPDevice

from collab.accounts.models import Role, User
from collab.realtime import publish_after_commit, user_group

LAST_ACTIVITY_KEY = "collab_last_activity"
SIGNED_IN_KEY = "collab_signed_in_at"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def is_admin(user: Any) -> bool:
    """The one meaning of "admin" in the service: an active user with the admin role.

    ``is_staff`` / ``is_superuser`` open the Django admin site only; they grant nothing
    in the API (device revocation for others, audit export, checkpoints)."""
    return isinstance(user, User) and user.is_active and user.role == Role.ADMIN


def requires_totp(user: User) -> bool:
    """Providers and admins must enrol TOTP; patients may."""
    return user.role in (Role.PROVIDER, Role.ADMIN) or user.is_staff


def has_confirmed_totp(user: User) -> bool:
    return bool(TOTPDevice.objects.filter(user=user, confirmed=True).exists())


@dataclass(frozen=True)
class SecondFactorFacts:
    """What second_factor_satisfied reads, read beforehand for many sessions at once
    (collab.accounts.live_sessions): OTP devices by persistent id, and the users who
    have a confirmed TOTP device."""

    devices: dict[str, Device]
    totp_users: frozenset[Any]  # user ids


def session_device(
    user: User, session: Any, facts: SecondFactorFacts | None = None
) -> Device | None:
    """The confirmed OTP device this session verified with, if any."""
    persistent_id = session.get(DEVICE_ID_SESSION_KEY)
    if not persistent_id:
        return None
    if facts is None:
        device = Device.from_persistent_id(persistent_id)
    else:
        device = facts.devices.get(persistent_id)
    if device is None or device.user_id != user.pk or not device.confirmed:
        return None
    return device


def second_factor_satisfied(
    user: User, session: Any, facts: SecondFactorFacts | None = None
) -> bool:
    if session_device(user, session, facts) is not None:
        return True
    # A patient who chose not to enrol signs in with the password alone.
    if requires_totp(user):
        return False
    return not (user.pk in facts.totp_users if facts else has_confirmed_totp(user))


def idle_expired(session: Any, now: float | None = None) -> bool:
    last = session.get(LAST_ACTIVITY_KEY)
    if last is None:
        return False
    return (now or time.time()) - float(last) > settings.IDLE_TIMEOUT_SECONDS


def lifetime_expired(session: Any, now: float | None = None) -> bool:
    """Past SESSION_ABSOLUTE_SECONDS since sign-in, whatever the activity."""
    signed_in = session.get(SIGNED_IN_KEY)
    if signed_in is None:
        return False
    return (now or time.time()) - float(signed_in) > settings.SESSION_ABSOLUTE_SECONDS


def request_is_activity(request: HttpRequest) -> bool:
    """Whether an HTTP request is a person's action, which postpones automatic logoff.

    Pages a person opens and API calls that change something count. API reads (the
    polls and fetches a client makes by itself: notifications, history, log, nonces)
    and requests a client marks ``X-Collab-Background: 1`` do not."""
    if request.headers.get("X-Collab-Background") == "1":
        return False
    return not (request.path.startswith("/api/") and request.method in _SAFE_METHODS)


@receiver(user_logged_in, dispatch_uid="collab.policy.signed_in_at")
def _stamp_sign_in(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    # The absolute lifetime runs from here; the session key is rotated by login().
    if request is not None and hasattr(request, "session"):
        request.session[SIGNED_IN_KEY] = time.time()


@receiver(post_save, sender=User, dispatch_uid="collab.policy.deactivated")
def _end_deactivated_sessions(sender: Any, instance: User, **kwargs: Any) -> None:
    # A deactivated user's sockets close now (the session sweep would within its interval).
    if not instance.is_active:
        publish_after_commit(
            user_group(instance.pk), {"type": "session.ended", "reason": "deactivated"}
        )
