"""The identity backup (the UIK secret sealed under the user's recovery key).

Whoever holds a session could otherwise overwrite it with one sealed under a key they
chose, and the user would find their recovery key useless when they need it. So the
first backup is stored as before (the first-use flow sends nothing more), and replacing
a stored one with different bytes needs the account's password again (counted by
django-axes like a sign-in) and is audited.
"""

from __future__ import annotations

from django.contrib.auth import authenticate
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpRequest

from collab.accounts import devices
from collab.accounts.models import IdentityBackup, User
from collab.audit.services import AuditAction, Outcome, RequestMeta, audit_record
from collab.errors import Forbidden, NotFound, ServiceError


def _stored(user: User, *, lock: bool = False) -> bytes | None:
    rows = IdentityBackup.objects.filter(user=user)
    if lock:
        rows = rows.select_for_update()
    backup = rows.first()
    return None if backup is None else bytes(backup.ciphertext)


def _reauthenticate(request: HttpRequest, user: User, password: object) -> None:
    """The account's password, checked as a sign-in is (axes counts a wrong one and
    locks out the account and the address after repeated failures)."""
    meta = RequestMeta.from_request(request)

    def refuse(code: str, message: str) -> Forbidden:
        audit_record(
            action=AuditAction.IDENTITY_BACKUP_REPLACED,
            actor=user,
            outcome=Outcome.FAILURE,
            reason=code,
            meta=meta,
        )
        return Forbidden(code, message)

    if not isinstance(password, str) or not password:
        raise Forbidden(
            "reauth_required", "Replacing the identity backup needs your password."
        )
    try:
        checked = authenticate(request, username=user.get_username(), password=password)
    except PermissionDenied:
        checked = None
    if getattr(request, "axes_locked_out", False):
        # axes answers 429 locked_out for the request (collab.api.lockout_response).
        raise refuse("locked_out", "Too many failed attempts; try again later.")
    if checked is None or checked.pk != user.pk:
        raise refuse("reauth_failed", "The password is not right.")


def identity_backup_put(
    *, request: HttpRequest, user: User, ciphertext: bytes, password: object = None
) -> bool:
    """Store the user's identity backup; returns whether an existing one was replaced.

    No backup yet, or the same bytes again (a retried first upload): stored without
    more. Different bytes over a stored backup: ``password`` must be the account's
    (``403 reauth_required`` / ``reauth_failed``; ``429 locked_out`` after repeated
    failures, as for sign-in), then the backup is
    replaced and ``IDENTITY_BACKUP_REPLACED`` recorded. The password is checked outside
    the storing transaction so that a refusal's failure count and audit are kept."""
    limit = devices.MAX_BACKUP_BYTES
    if not 0 < len(ciphertext) <= limit:  # refused for its size before any password
        raise ServiceError("bad_backup", f"The backup must be 1 to {limit} bytes.")
    before = _stored(user)
    if before is not None and before != ciphertext:
        _reauthenticate(request, user, password)
    with transaction.atomic():
        now = _stored(user, lock=True)
        if now is not None and now != ciphertext and before is None:
            # Another upload got in first, after the check above: that is a replacement.
            raise Forbidden(
                "reauth_required", "Replacing the identity backup needs your password."
            )
        devices.identity_backup_store(user=user, ciphertext=ciphertext)
        replaced = now is not None and now != ciphertext
        if replaced:
            audit_record(
                action=AuditAction.IDENTITY_BACKUP_REPLACED,
                actor=user,
                meta=RequestMeta.from_request(request),
                details={"size": len(ciphertext)},
            )
    return replaced


def identity_backup_read(*, user: User, meta: RequestMeta | None) -> bytes:
    """The user's stored identity backup, recorded as ``IDENTITY_BACKUP_READ`` (its size
    only: the sealed bytes are secret). No backup: ``404 no_backup`` and nothing recorded
    (nothing was served)."""
    stored = _stored(user)
    if stored is None:
        raise NotFound("no_backup", "No identity backup stored.")
    audit_record(
        action=AuditAction.IDENTITY_BACKUP_READ,
        actor=user,
        target=f"user:{user.pk}",
        meta=meta,
        details={"size": len(stored)},
    )
    return stored
