"""Sign-in, second factor, enrolment and sign-out: the only code that changes them."""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from enum import Enum

from django.contrib.auth import authenticate, login, logout
from django.db import transaction
from django.http import HttpRequest
from django_otp import login as otp_login
from django_otp.models import Device
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from collab.accounts.models import User
from collab.accounts.policy import LAST_ACTIVITY_KEY, second_factor_satisfied
from collab.audit.services import AuditAction, Outcome, RequestMeta, audit_record
from collab.realtime import publish_after_commit, session_group

security_log = logging.getLogger("collab.security")

BACKUP_CODE_COUNT = 10


class SignInOutcome(Enum):
    OK = "ok"
    BAD_CREDENTIALS = "bad_credentials"
    LOCKED_OUT = "locked_out"


class OtpOutcome(Enum):
    OK = "ok"
    WRONG_CODE = "wrong_code"
    THROTTLED = "throttled"
    NO_DEVICE = "no_device"


@dataclass(frozen=True)
class OtpResult:
    outcome: OtpOutcome
    retry_after_seconds: int = 0


def password_sign_in(*, request: HttpRequest, username: str, password: str) -> SignInOutcome:
    """First step: the password. django-axes counts failures per account and per address."""
    user = authenticate(request, username=username, password=password)
    if getattr(request, "axes_locked_out", False):
        security_log.warning("sign-in locked out")
        _audit_sign_in_failed(request=request, username=username, reason="locked_out")
        return SignInOutcome.LOCKED_OUT
    if user is None or not user.is_active:
        security_log.info("sign-in failed")
        _audit_sign_in_failed(request=request, username=username, reason="bad_credentials")
        return SignInOutcome.BAD_CREDENTIALS
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    request.session[LAST_ACTIVITY_KEY] = time.time()
    if second_factor_satisfied(user, request.session):
        # No second factor to come (a patient who did not enrol): signed in now.
        audit_record(
            action=AuditAction.SIGN_IN,
            actor=user,
            meta=RequestMeta.from_request(request),
            details={"factor": "password"},
        )
    return SignInOutcome.OK


def _audit_sign_in_failed(*, request: HttpRequest, username: str, reason: str) -> None:
    # Unknown usernames are not stored: people type passwords into that field.
    known = User.objects.filter(username=username).first()
    audit_record(
        action=AuditAction.SIGN_IN_FAILED,
        actor=known,
        outcome=Outcome.FAILURE,
        reason=reason,
        meta=RequestMeta.from_request(request),
        details={"known_user": known is not None},
    )


def _throttle_wait(device: Device) -> int | None:
    allowed, info = device.verify_is_allowed()
    if allowed:
        return None
    locked_until = (info or {}).get("locked_until")
    if locked_until is None:
        return 1
    from django.utils import timezone

    return max(1, int((locked_until - timezone.now()).total_seconds()) + 1)


def _devices_for_code(user: User, code: str) -> list[Device]:
    """TOTP codes are six digits; anything else can only be a backup code."""
    if code.isdigit() and len(code) == 6:
        return list(TOTPDevice.objects.filter(user=user, confirmed=True))
    return list(StaticDevice.objects.filter(user=user, confirmed=True))


def otp_verify(*, request: HttpRequest, user: User, code: str) -> OtpResult:
    """Second step. django-otp refuses reused TOTP steps and throttles each device."""
    code = code.strip().replace(" ", "")
    devices = _devices_for_code(user, code)
    if not devices:
        if not TOTPDevice.objects.filter(user=user, confirmed=True).exists():
            return OtpResult(OtpOutcome.NO_DEVICE)
        return OtpResult(OtpOutcome.WRONG_CODE)
    meta = RequestMeta.from_request(request)
    factor = "totp" if isinstance(devices[0], TOTPDevice) else "backup_code"
    waits = [w for w in (_throttle_wait(d) for d in devices) if w is not None]
    if len(waits) == len(devices):
        security_log.warning("otp throttled")
        audit_record(
            action=AuditAction.OTP_THROTTLED,
            actor=user,
            outcome=Outcome.FAILURE,
            reason="throttled",
            meta=meta,
            details={"factor": factor, "retry_after_seconds": min(waits)},
        )
        return OtpResult(OtpOutcome.THROTTLED, min(waits))
    for device in devices:
        if device.verify_token(code):
            otp_login(request, device)
            request.session[LAST_ACTIVITY_KEY] = time.time()
            audit_record(
                action=AuditAction.SIGN_IN, actor=user, meta=meta, details={"factor": factor}
            )
            return OtpResult(OtpOutcome.OK)
    security_log.info("otp failed")
    audit_record(
        action=AuditAction.OTP_FAILED,
        actor=user,
        outcome=Outcome.FAILURE,
        reason="wrong_code",
        meta=meta,
        details={"factor": factor},
    )
    return OtpResult(OtpOutcome.WRONG_CODE)


def totp_enrolment_device(*, user: User) -> TOTPDevice:
    """The unconfirmed device whose secret the enrolment page shows (one per user)."""
    device = TOTPDevice.objects.filter(user=user, confirmed=False).first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name="Authenticator app", confirmed=False)
    return device


@transaction.atomic
def totp_enrol_confirm(*, request: HttpRequest, user: User, code: str) -> list[str] | None:
    """Confirm the pending TOTP device with a first code; returns fresh backup codes."""
    device = TOTPDevice.objects.select_for_update().filter(user=user, confirmed=False).first()
    if device is None or not device.verify_token(code.strip()):
        return None
    device.confirmed = True
    device.save(update_fields=["confirmed"])
    TOTPDevice.objects.filter(user=user, confirmed=True).exclude(pk=device.pk).delete()
    codes = backup_codes_regenerate(user=user)
    otp_login(request, device)
    request.session[LAST_ACTIVITY_KEY] = time.time()
    audit_record(
        action=AuditAction.TOTP_ENROLLED,
        actor=user,
        target=f"otp_device:{device.persistent_id}",
        meta=RequestMeta.from_request(request),
        details={"backup_codes": len(codes)},
    )
    return codes


def backup_codes_regenerate(*, user: User) -> list[str]:
    """One-time static codes; only their current set is valid."""
    StaticDevice.objects.filter(user=user).delete()
    device = StaticDevice.objects.create(user=user, name="Backup codes", confirmed=True)
    codes = [secrets.token_hex(5) for _ in range(BACKUP_CODE_COUNT)]
    StaticToken.objects.bulk_create(StaticToken(device=device, token=c) for c in codes)
    return codes


def sign_out(*, request: HttpRequest, reason: str) -> None:
    """End the session and close every socket opened with it."""
    user = request.user if isinstance(request.user, User) else None
    audit_record(
        action=AuditAction.AUTO_SIGN_OUT if reason == "inactivity" else AuditAction.SIGN_OUT,
        actor=user,
        reason=reason,
        meta=RequestMeta.from_request(request),
    )
    session_key = request.session.session_key
    if session_key:
        publish_after_commit(
            session_group(session_key), {"type": "session.ended", "reason": reason}
        )
    security_log.info("sign-out reason=%s", reason)
    logout(request)
