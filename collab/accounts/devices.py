"""Identity keys, device certificates, the identity backup and device revocation."""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from collab.accounts import proofs
from collab.accounts.models import (
    Device,
    IdentityBackup,
    IdentityKey,
    IdentityPins,
    RetiredIdentityKey,
    User,
)
from collab.accounts.policy import is_admin
from collab.audit.services import AuditAction, RequestMeta, audit_record
from collab.crypto import primitives
from collab.crypto.devcert import DeviceCert, verify_device_cert
from collab.crypto.errors import CryptoError
from collab.crypto.pins import MAX_BLOB as MAX_PINS_BYTES
from collab.crypto.pins import verify_pins
from collab.crypto.wire import MAX_SAFE_INT
from collab.errors import Conflict, Forbidden, NotFound, ServiceError, TooLarge
from collab.realtime import device_group, publish_after_commit

MAX_BACKUP_BYTES = 4096


def identity_register(
    *, user: User, uik_pub: bytes, meta: RequestMeta | None = None
) -> IdentityKey:
    """Once per user: replacing a UIK would let the server swap identities. A key an
    identity reset retired is refused (409 ``identity_retired``), for anyone: its
    holder could otherwise take the user's place in every roster still naming it."""
    try:
        primitives.check_ed25519_public(uik_pub)
    except CryptoError as error:
        raise ServiceError(error.code, error.message or "Not an Ed25519 public key.") from None
    try:
        with transaction.atomic():
            # Under the user's row lock, which identity_reset holds while retiring.
            User.objects.select_for_update().filter(pk=user.pk).first()
            if is_retired(uik_pub):
                raise Conflict("identity_retired", "That identity key was retired by a reset.")
            identity = IdentityKey.objects.create(user=user, uik_pub=uik_pub)
            # A new identity starts with no pin book or backup: any left is a late write
            # under an identity an operator reset (services.identity_reset), which the
            # new key could never open or verify.
            IdentityPins.objects.filter(user=user).delete()
            IdentityBackup.objects.filter(user=user).delete()
            audit_record(action=AuditAction.IDENTITY_REGISTERED, actor=user, meta=meta)
    except IntegrityError:
        existing = IdentityKey.objects.get(user=user)
        if bytes(existing.uik_pub) == uik_pub:
            return existing
        raise Conflict("identity_exists", "An identity key is already registered.") from None
    return identity


def is_retired(uik_pub: bytes) -> bool:
    return RetiredIdentityKey.objects.filter(uik_pub=uik_pub).exists()


def identity_backup_store(*, user: User, ciphertext: bytes) -> None:
    if not 0 < len(ciphertext) <= MAX_BACKUP_BYTES:
        raise ServiceError("bad_backup", f"The backup must be 1 to {MAX_BACKUP_BYTES} bytes.")
    IdentityBackup.objects.update_or_create(user=user, defaults={"ciphertext": ciphertext})


def _stale_pins(user: User) -> Conflict:
    current = IdentityPins.objects.filter(user=user).values_list("version", flat=True).first()
    version = current or 0
    return Conflict(
        "stale_pins", f"The stored pins are at version {version}; merge and retry.", version=version
    )


@transaction.atomic
def identity_pins_store(
    *, user: User, version: int, blob: bytes, sig: bytes, meta: RequestMeta | None = None
) -> IdentityPins:
    """Store version ``version`` of the user's sealed pin book, only over ``version - 1``
    (none stored counts as 0) and only signed by the user's registered UIK.

    The swap is one conditional update (or one insert against the unique user), so of
    concurrent writes of the same version exactly one is stored; the others get
    ``409 stale_pins`` with the stored ``version``."""
    if len(blob) > MAX_PINS_BYTES:
        raise TooLarge(
            "too_large", f"The pins blob is over {MAX_PINS_BYTES} bytes.", max_bytes=MAX_PINS_BYTES
        )
    if not blob:
        raise ServiceError("bad_field", "blob must not be empty.")
    if not 1 <= version <= MAX_SAFE_INT:
        raise ServiceError("bad_field", "version must be a positive integer.")
    identity = IdentityKey.objects.filter(user=user).first()
    if identity is None:
        raise Conflict("no_identity", "Register the identity key first.")
    try:
        verify_pins(bytes(identity.uik_pub), user.pk, version, blob, sig)
    except CryptoError as error:
        raise ServiceError(error.code, error.message or "Bad pins signature.") from None
    now = timezone.now()
    if version == 1:
        try:
            with transaction.atomic():
                pins = IdentityPins.objects.create(
                    user=user, version=1, blob=blob, sig=sig, updated_at=now
                )
        except IntegrityError:
            raise _stale_pins(user) from None
    else:
        swapped = IdentityPins.objects.filter(user=user, version=version - 1).update(
            version=version, blob=blob, sig=sig, updated_at=now
        )
        if swapped != 1:
            raise _stale_pins(user)
        pins = IdentityPins.objects.get(user=user)
    audit_record(
        action=AuditAction.IDENTITY_PINS_STORED,
        actor=user,
        meta=meta,
        target=f"user:{user.pk}",
        details={"version": version, "size": len(blob)},
    )
    return pins


@transaction.atomic
def device_register(
    *, user: User, cert: DeviceCert, name: str = "", meta: RequestMeta | None = None
) -> Device:
    """Register a device only with a certificate that chains to the user's UIK, and
    only below ``MAX_DEVICES_PER_USER`` active devices (409 ``too_many_devices``): every
    device of a user lands in the roster of each of the user's cases."""
    if cert.user_id != user.pk:
        raise Forbidden("wrong_user", "The certificate names another user.")
    # The user's row lock first (identity_reset holds it): a registration racing a reset
    # either lands before it (and is revoked by it) or sees the key gone.
    User.objects.select_for_update().filter(pk=user.pk).first()
    identity = IdentityKey.objects.filter(user=user).first()
    if identity is None:
        raise ServiceError("no_identity", "Register the identity key first.")
    uik_pub = bytes(identity.uik_pub)
    if is_retired(uik_pub):
        # Not reachable through identity_register; a key put back some other way.
        raise Conflict("identity_retired", "The registered identity key was retired.")
    try:
        verify_device_cert(cert, uik_pub)
        primitives.check_x25519_public(cert.dxk_pub)
    except CryptoError as error:
        raise ServiceError(error.code, error.message or "Invalid device certificate.") from None
    existing = Device.objects.filter(pk=cert.device_id).first()
    if existing is not None:
        if existing.user_id == user.pk and _same_keys(existing, cert) and existing.is_active:
            return existing
        raise Conflict("device_exists", "That device id is taken.")
    _check_device_cap(user)
    device = Device.objects.create(
        id=cert.device_id,
        user=user,
        name=name[:80],
        dsk_pub=cert.dsk_pub,
        dxk_pub=cert.dxk_pub,
        not_before_ms=cert.not_before_ms,
        cert_sig=cert.cert_sig,
        uik_pub=uik_pub,
    )
    audit_record(
        action=AuditAction.DEVICE_REGISTERED,
        actor=user,
        device_id=device.pk,
        meta=meta,
        target=f"device:{device.pk}",
    )
    return device


def _check_device_cap(user: User) -> None:
    """Under the user's row lock, so two concurrent registrations cannot both take the
    last place."""
    User.objects.select_for_update().filter(pk=user.pk).first()
    limit = settings.MAX_DEVICES_PER_USER
    active = Device.objects.filter(user=user, revoked_at__isnull=True).count()
    if active >= limit:
        raise Conflict(
            "too_many_devices",
            f"At most {limit} active devices per user; revoke one first.",
            max_devices=limit,
        )


def _same_keys(device: Device, cert: DeviceCert) -> bool:
    return (
        bytes(device.dsk_pub) == cert.dsk_pub
        and bytes(device.dxk_pub) == cert.dxk_pub
        and bytes(device.cert_sig) == cert.cert_sig
        and device.not_before_ms == cert.not_before_ms
    )


@transaction.atomic
def device_revoke(
    *, actor: User, device_id: uuid.UUID, reason: str = "", meta: RequestMeta | None = None
) -> Device:
    """By its user, or by an admin with a reason. Its sockets close at once; every
    case whose roster still holds it lists it for removal in the next entry."""
    device = Device.objects.select_for_update().filter(pk=device_id).first()
    if device is None:
        raise NotFound("no_device", "No such device.")
    if device.user_id != actor.pk and not is_admin(actor):
        raise Forbidden("not_your_device", "You can only revoke your own devices.")
    if device.user_id != actor.pk and not reason.strip():
        raise ServiceError("reason_required", "An administrator must give a reason.")
    if device.revoked_at is None:
        ended = device_revoke_locked(device, actor=actor, reason=reason, meta=meta)
        if ended:
            audit_record(
                action=AuditAction.DEVICE_SESSIONS_ENDED,
                actor=actor,
                device_id=device.pk,
                meta=meta,
                target=f"device:{device.pk}",
                details={"sessions": ended},
            )
    return device


def device_revoke_locked(
    device: Device,
    *,
    actor: User | None,
    reason: str,
    meta: RequestMeta | None = None,
    details: dict[str, Any] | None = None,
) -> int:
    """Revoke a device the caller has locked and checked: stamped and audited, its
    sockets told, the sessions it proved itself in ended (their count returned)."""
    device.revoked_at = timezone.now()
    device.revoked_by = actor
    device.revoke_reason = reason.strip()[:200]
    device.save(update_fields=["revoked_at", "revoked_by", "revoke_reason"])
    audit_record(
        action=AuditAction.DEVICE_REVOKED,
        actor=actor,
        device_id=device.pk,
        meta=meta,
        target=f"device:{device.pk}",
        reason=device.revoke_reason,
        details=details,
    )
    publish_after_commit(device_group(device.pk), {"type": "device.revoked"})
    return proofs.device_sessions_end(device_id=device.pk)


def device_wire(device: Device) -> dict[str, Any]:
    return {
        **DeviceCert(
            device.user_id,
            device.pk,
            bytes(device.dsk_pub),
            bytes(device.dxk_pub),
            device.not_before_ms,
            bytes(device.cert_sig),
        ).to_wire(),
        "name": device.name,
        "created_at": device.created_at.isoformat(),
        "revoked_at": device.revoked_at.isoformat() if device.revoked_at else None,
    }
