"""Sign-in, second factor, enrolment and sign-out: the only code that changes them."""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from enum import Enum

from django.contrib.auth import authenticate, login, logout
from django.contrib.sessions.models import Session
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone
from django_otp import login as otp_login
from django_otp.models import Device
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from collab.accounts.devices import device_revoke_locked
from collab.accounts.models import Device as UserDevice
from collab.accounts.models import (
    IdentityBackup,
    IdentityKey,
    IdentityPins,
    RetiredIdentityKey,
    User,
)
from collab.accounts.policy import LAST_ACTIVITY_KEY, second_factor_satisfied
from collab.audit.services import AuditAction, Outcome, RequestMeta, audit_record
from collab.realtime import publish_after_commit, session_group, user_group

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
    meta = RequestMeta.from_request(request)
    if not devices:
        if not TOTPDevice.objects.filter(user=user, confirmed=True).exists():
            return OtpResult(OtpOutcome.NO_DEVICE)
        # A backup code from a user who has none (an authenticator set up without them)
        # is still a refused attempt.
        return _otp_failed(user=user, meta=meta, factor="backup_code")
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
    return _otp_failed(user=user, meta=meta, factor=factor)


def _otp_failed(*, user: User, meta: RequestMeta, factor: str) -> OtpResult:
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


# --- identity reset (an operator's act, after verifying the person out of band) ------


@dataclass(frozen=True)
class IdentityResetResult:
    user_id: str
    devices_revoked: list[str]
    sessions_ended: int
    identity_deleted: bool
    identity_backup_deleted: bool
    pins_deleted: bool


IDENTITY_RESET_REASON = "identity reset"


def _user_session_keys(user: User) -> list[str]:
    """Every unexpired database session signed in as ``user`` (decoding each is fine for
    an operator's command; a user's sessions are not indexed by user)."""
    keys = []
    for session in Session.objects.filter(expire_date__gt=timezone.now()).iterator():
        if session.get_decoded().get("_auth_user_id") == str(user.pk):
            keys.append(session.session_key)
    return keys


@transaction.atomic
def identity_reset(*, user: User, by: str, actor: User | None = None) -> IdentityResetResult:
    """Forget the user's identity key so their next sign-in registers a new one with the
    first-use flow: every device revoked (reason "identity reset"; its sockets close),
    the registered UIK retired (never registered again), its backup and the pin book
    deleted (sealed under the old key, useless to the new one), every session of the
    user ended. Case rosters keep the old key: peers' clients see an identity change,
    and a case owner or admin readmits the user after a person accepts the new key.
    Audited as ``IDENTITY_RESET`` naming ``by``.

    The user's key backup (cases' epoch keys) is forgotten by the caller in the same
    transaction: accounts knows nothing of cases."""
    User.objects.select_for_update().filter(pk=user.pk).first()
    revoked: list[str] = []
    ended = 0
    for device in UserDevice.objects.select_for_update().filter(user=user, revoked_at__isnull=True):
        ended += device_revoke_locked(
            device, actor=actor, reason=IDENTITY_RESET_REASON, details={"by": by}
        )
        revoked.append(str(device.pk))
    keys = _user_session_keys(user)
    ended += len(keys)
    Session.objects.filter(session_key__in=keys).delete()
    for key in keys:
        publish_after_commit(session_group(key), {"type": "session.ended", "reason": "reset"})
    # Sockets of sessions already gone (or never recorded) close through the user group.
    publish_after_commit(user_group(user.pk), {"type": "session.ended", "reason": "reset"})
    # Retired, not only forgotten: whoever holds the old secret must not register it
    # again before the user sets up (devices.identity_register refuses it).
    for identity in IdentityKey.objects.filter(user=user):
        RetiredIdentityKey.objects.create(user=user, uik_pub=bytes(identity.uik_pub))
    result = IdentityResetResult(
        user_id=str(user.pk),
        devices_revoked=revoked,
        sessions_ended=ended,
        identity_deleted=IdentityKey.objects.filter(user=user).delete()[0] > 0,
        identity_backup_deleted=IdentityBackup.objects.filter(user=user).delete()[0] > 0,
        pins_deleted=IdentityPins.objects.filter(user=user).delete()[0] > 0,
    )
    audit_record(
        action=AuditAction.IDENTITY_RESET,
        actor=actor,
        target=f"user:{user.pk}",
        reason=IDENTITY_RESET_REASON,
        details={
            "by": by,
            "devices_revoked": len(revoked),
            "sessions_ended": ended,
            "identity_deleted": result.identity_deleted,
        },
    )
    security_log.warning("identity reset user=%s by=%s", user.pk, by)
    return result
