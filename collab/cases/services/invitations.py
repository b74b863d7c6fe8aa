"""Patient invitations: single-use, expiring links whose token is stored only as a hash.

The raw token (32 random bytes, URL-safe base64) appears once, in the link returned to
the inviting provider; the server keeps its SHA-256. Creating, opening, accepting,
expiring and revoking are audited (never with the token).
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import logging
import os
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from collab.accounts.models import IdentityKey, Role, User
from collab.audit.services import AuditAction, Outcome, RequestMeta, audit_record
from collab.cases import models as m
from collab.cases.access import (
    MANAGER_ROLES,
    access_device,
    access_provider_member,
    is_case_member,
)
from collab.cases.services._common import crypto_failure
from collab.cases.services.notifications import case_member_ids, notify
from collab.crypto import invite
from collab.crypto.actions import AddUserBody
from collab.crypto.errors import CryptoError
from collab.crypto.log import LogEntry
from collab.crypto.roster import Role as RosterRole
from collab.errors import Conflict, Forbidden, NotFound, ServiceError
from collab.realtime import case_group, publish_after_commit

security_log = logging.getLogger("collab.security")

TOKEN_BYTES = 32
DEFAULT_INVITE_HOURS = 72


class InvitationState(enum.StrEnum):
    ACTIVE = "active"
    USED = "used"
    REVOKED = "revoked"
    EXPIRED = "expired"
    UNKNOWN = "unknown"


class InvitationUnavailable(ServiceError):
    """The token is unknown, used, revoked or expired (``state`` says which)."""

    status = 410

    def __init__(self, state: InvitationState) -> None:
        super().__init__(f"invitation_{state.value}", f"This invitation is {state.value}.")
        self.state = state


def invite_hours() -> int:
    """COLLAB_INVITE_HOURS (settings.INVITE_HOURS or the environment), default 72."""
    value = getattr(settings, "INVITE_HOURS", None) or os.environ.get("COLLAB_INVITE_HOURS")
    hours = int(value) if value else DEFAULT_INVITE_HOURS
    return max(1, hours)


def token_hash(raw: str) -> str | None:
    """SHA-256 (hex) of the token's 32 bytes, or None if it is not a well-formed token."""
    if not raw or len(raw) > 64:
        return None
    try:
        data = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
    except (binascii.Error, ValueError):
        return None
    if len(data) != TOKEN_BYTES or base64.urlsafe_b64encode(data).rstrip(b"=").decode() != raw:
        return None
    return hashlib.sha256(data).hexdigest()


def invitation_state(invitation: m.Invitation) -> InvitationState:
    if invitation.used_at is not None:
        return InvitationState.USED
    if invitation.revoked_at is not None:
        return InvitationState.REVOKED
    if invitation.expires_at <= timezone.now():
        return InvitationState.EXPIRED
    return InvitationState.ACTIVE


@dataclass(frozen=True)
class InviteBinding:
    """The inviting device's signed statement over the link's invite key."""

    inviter_device_id: uuid.UUID
    invite_pub: bytes
    invite_sig: bytes
    created_ms: int


def _check_binding(user: User, case_id: uuid.UUID, binding: InviteBinding) -> None:
    """The statement must be signed by one of the caller's active, registered devices."""
    try:
        device = access_device(user, binding.inviter_device_id)
    except ServiceError:
        raise ServiceError(
            "unregistered_device", "inviter_device is not an active device of yours."
        ) from None
    try:
        invite.verify_invitation_statement(
            bytes(device.dsk_pub),
            case_id,
            user.pk,
            device.pk,
            binding.invite_pub,
            binding.created_ms,
            binding.invite_sig,
        )
    except CryptoError as error:
        raise crypto_failure(error) from None


@transaction.atomic
def invitation_create(
    *,
    user: User,
    case_id: uuid.UUID,
    binding: InviteBinding | None = None,
    meta: RequestMeta | None = None,
) -> tuple[m.Invitation, str]:
    """A provider member invites the patient; returns the row and the raw token (once).

    With ``binding`` the invitation also carries the inviter device's statement over
    the invite key whose secret travels only in the link's fragment."""
    case = access_provider_member(user, case_id)
    if binding is not None:
        _check_binding(user, case.pk, binding)
    raw = base64.urlsafe_b64encode(secrets.token_bytes(TOKEN_BYTES)).rstrip(b"=").decode()
    hashed = token_hash(raw)
    assert hashed is not None  # noqa: S101 - a token we just made is well formed
    invitation = m.Invitation.objects.create(
        case=case,
        created_by=user,
        token_hash=hashed,
        expires_at=timezone.now() + timedelta(hours=invite_hours()),
        inviter_device_id=binding.inviter_device_id if binding else None,
        invite_pub=binding.invite_pub if binding else None,
        invite_sig=binding.invite_sig if binding else None,
        created_ms=binding.created_ms if binding else None,
    )
    audit_record(
        action=AuditAction.INVITATION_CREATED,
        actor=user,
        # A bound invitation names the device that signed it (and made this request).
        device_id=binding.inviter_device_id if binding else None,
        case_id=case.pk,
        target=f"invitation:{invitation.pk}",
        meta=meta,
        details={"expires_at": invitation.expires_at.isoformat(), "bound": binding is not None},
    )
    return invitation, raw


@transaction.atomic
def invitation_proof_store(
    *, user: User, invitation_id: uuid.UUID, proof_sig: bytes, meta: RequestMeta | None = None
) -> m.Invitation:
    """The patient who accepted a bound invitation proves, with the link's invite key,
    that this user id and registered UIK are the ones the link reached. Verified here
    and stored for the admitting member's client, which checks it again."""
    invitation = m.Invitation.objects.select_for_update().filter(pk=invitation_id).first()
    if invitation is None:
        raise NotFound("no_invitation", "No such invitation.")
    if invitation.used_by_id != user.pk:
        raise Forbidden("not_invitee", "Only the patient who accepted it proves an invitation.")
    if invitation.invite_pub is None:
        raise Conflict("invitation_unbound", "This invitation carries no invite key.")
    pending = m.JoinRequest.objects.filter(
        invitation=invitation, user=user, status=m.JoinStatus.PENDING
    ).exists()
    if not pending:
        raise Conflict("not_pending", "The join request of this invitation is not pending.")
    identity = IdentityKey.objects.filter(user=user).first()
    if identity is None:
        raise Conflict("no_identity", "Register your identity key first.")
    uik = bytes(identity.uik_pub)
    try:
        invite.verify_invite_proof(
            bytes(invitation.invite_pub), invitation.case_id, user.pk, uik, proof_sig
        )
    except CryptoError:
        raise ServiceError("bad_proof", "The proof does not bind you to this link.") from None
    if invitation.proof_sig is not None and bytes(invitation.proof_sig) == proof_sig:
        return invitation  # the same proof again: stored already
    invitation.proof_sig = proof_sig
    invitation.proof_uik = uik
    invitation.proof_at = timezone.now()
    invitation.save(update_fields=["proof_sig", "proof_uik", "proof_at"])
    audit_record(
        action=AuditAction.INVITATION_PROOF,
        actor=user,
        case_id=invitation.case_id,
        target=f"invitation:{invitation.pk}",
        meta=meta,
    )
    publish_after_commit(
        case_group(invitation.case_id),
        {"type": "case.join_request", "user": str(user.pk), "kind": m.JoinKind.PATIENT},
    )
    return invitation


@transaction.atomic
def invitation_revoke(
    *, user: User, invitation_id: uuid.UUID, meta: RequestMeta | None = None
) -> m.Invitation:
    invitation = m.Invitation.objects.select_for_update().filter(pk=invitation_id).first()
    if invitation is None:
        raise NotFound("no_invitation", "No such invitation.")
    access_provider_member(user, invitation.case_id)
    state = invitation_state(invitation)
    if state is InvitationState.USED:
        raise Conflict("invitation_used", "This invitation was already accepted.")
    if state is InvitationState.REVOKED:
        return invitation
    invitation.revoked_at = timezone.now()
    invitation.revoked_by = user
    invitation.save(update_fields=["revoked_at", "revoked_by"])
    audit_record(
        action=AuditAction.INVITATION_REVOKED,
        actor=user,
        case_id=invitation.case_id,
        target=f"invitation:{invitation.pk}",
        meta=meta,
    )
    return invitation


def _record_unavailable(
    invitation: m.Invitation, state: InvitationState, meta: RequestMeta | None
) -> None:
    """Expiry is recorded once per invitation; other refusals on every attempt."""
    if state is InvitationState.EXPIRED:
        marked = m.Invitation.objects.filter(pk=invitation.pk, expiry_recorded=False).update(
            expiry_recorded=True
        )
        if not marked:
            return
        action = AuditAction.INVITATION_EXPIRED
    else:
        action = AuditAction.INVITATION_OPENED
    audit_record(
        action=action,
        outcome=Outcome.FAILURE,
        reason=state.value,
        case_id=invitation.case_id,
        target=f"invitation:{invitation.pk}",
        meta=meta,
    )


def invitation_open(*, raw_token: str, meta: RequestMeta | None = None) -> m.Invitation:
    """The patient opened the link: the invitation if it can still be accepted.

    Not one transaction: a refusal is recorded, then raised (and must stay recorded)."""
    hashed = token_hash(raw_token)
    invitation = m.Invitation.objects.filter(token_hash=hashed).first() if hashed else None
    if invitation is None:
        security_log.info("invitation link with an unknown token")
        raise InvitationUnavailable(InvitationState.UNKNOWN)
    state = invitation_state(invitation)
    if state is not InvitationState.ACTIVE:
        with transaction.atomic():
            _record_unavailable(invitation, state, meta)
        raise InvitationUnavailable(state)
    audit_record(
        action=AuditAction.INVITATION_OPENED,
        case_id=invitation.case_id,
        target=f"invitation:{invitation.pk}",
        meta=meta,
    )
    return invitation


def invitation_accept(
    *,
    raw_token: str,
    username: str = "",
    display_name: str = "",
    password: str = "",
    patient: User | None = None,
    meta: RequestMeta | None = None,
) -> User:
    """Store a pending patient join request for a new account (username, display name,
    password) or for a signed-in ``patient`` who already has one; single use.

    Two concurrent accepts: the row lock (PostgreSQL) or the write lock (SQLite)
    serialises them, and the conditional update lets exactly one mark it used.
    """
    try:
        return _accept(raw_token, username, display_name, password, patient, meta)
    except InvitationUnavailable as refused:
        # Record the refusal outside the rolled-back transaction.
        hashed = token_hash(raw_token)
        invitation = m.Invitation.objects.filter(token_hash=hashed).first() if hashed else None
        if invitation is not None:
            with transaction.atomic():
                _record_unavailable(invitation, refused.state, meta)
        raise


@transaction.atomic
def _accept(
    raw_token: str,
    username: str,
    display_name: str,
    password: str,
    existing: User | None,
    meta: RequestMeta | None,
) -> User:
    hashed = token_hash(raw_token)
    invitation = (
        m.Invitation.objects.select_for_update().filter(token_hash=hashed).first()
        if hashed
        else None
    )
    if invitation is None:
        raise InvitationUnavailable(InvitationState.UNKNOWN)
    state = invitation_state(invitation)
    if state is not InvitationState.ACTIVE:
        raise InvitationUnavailable(state)
    if existing is not None:
        if existing.role != Role.PATIENT:
            raise Forbidden("patients_only", "Invitations are for patients.")
        pending = m.JoinRequest.objects.filter(
            case_id=invitation.case_id, user=existing, status=m.JoinStatus.PENDING
        )
        if (
            pending.exists()
            or is_case_member(user=existing, case_id=invitation.case_id)
        ):
            raise Conflict("already_member", "You are already in, or waiting for, this case room.")
        patient = existing
    else:
        if User.objects.filter(username__iexact=username).exists():
            raise Conflict("username_taken", "That username is taken.")
        patient = User.objects.create_user(
            username=username, password=password, display_name=display_name, role=Role.PATIENT
        )
    now = timezone.now()
    won = m.Invitation.objects.filter(
        pk=invitation.pk, used_at__isnull=True, revoked_at__isnull=True, expires_at__gt=now
    ).update(used_at=now, used_by=patient)
    if won != 1:
        raise InvitationUnavailable(InvitationState.USED)
    join = m.JoinRequest.objects.create(
        case_id=invitation.case_id,
        user=patient,
        kind=m.JoinKind.PATIENT,
        requested_by=invitation.created_by,
        invitation=invitation,
    )
    audit_record(
        action=AuditAction.INVITATION_ACCEPTED,
        actor=patient,
        case_id=invitation.case_id,
        target=f"invitation:{invitation.pk}",
        meta=meta,
    )
    audit_record(
        action=AuditAction.JOIN_REQUESTED,
        actor=patient,
        case_id=invitation.case_id,
        target=f"user:{patient.pk}",
        meta=meta,
        details={"kind": join.kind},
    )
    publish_after_commit(
        case_group(invitation.case_id),
        {"type": "case.join_request", "user": str(patient.pk), "kind": join.kind},
    )
    notify(
        user_ids=[invitation.created_by_id],
        kind=m.NotificationKind.INVITATION_ACCEPTED,
        case_id=invitation.case_id,
    )
    notify(
        user_ids=case_member_ids(
            invitation.case_id, exclude=invitation.created_by_id, roles=MANAGER_ROLES
        ),
        kind=m.NotificationKind.JOIN_REQUEST,
        case_id=invitation.case_id,
    )
    return patient


def check_patient_add(*, case: m.Case, entry: LogEntry) -> None:
    """An add_user with the patient role needs that patient's pending join request from
    an accepted, unrevoked invitation to this case (403 ``no_invitation``)."""
    body = entry.body()
    if not isinstance(body, AddUserBody) or body.role != RosterRole.PATIENT:
        return
    invited = m.JoinRequest.objects.filter(
        case=case,
        user_id=body.user_id,
        kind=m.JoinKind.PATIENT,
        status=m.JoinStatus.PENDING,
        invitation__case=case,
        invitation__used_by_id=body.user_id,
        invitation__revoked_at__isnull=True,
    ).exists()
    if not invited:
        raise Forbidden("no_invitation", "A patient joins only through their accepted invitation.")
