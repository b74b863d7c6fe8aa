"""One home for access rules: who may touch a case, its manager rights, a device, a blob.

Every view, consumer and service asks here (after Zulip's ``access_stream_by_id`` and
Synapse's ``event_auth``); ``tests/cases/test_access_table.py`` tries every route
against every kind of caller that must be refused. Each function returns the object it
checked, or raises a ``ServiceError`` with the stable code the client reads:

- ``not_member`` (403): no such case, or the user is not in its head roster;
- ``not_manager`` (403): a member without the owner or admin role in the roster;
- ``providers_only`` (403): the action is for provider members;
- ``unknown_device`` (403): the device is not registered to this user;
- ``device_revoked`` (403): the device is revoked;
- ``no_blob`` (404): no such complete attachment in the user's cases.
- ``admins_only`` (403): the action is for the organisation's admins (``access_admin``).

"Admin" means one thing across the service: an active user with the ``admin`` role
(``is_admin``). Django's ``is_staff`` and ``is_superuser`` only open the Django admin
site; they grant nothing in the API.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from collab.accounts.models import Device, Role, User
from collab.accounts.policy import is_admin
from collab.cases import admission_reads
from collab.cases import models as m
from collab.crypto.roster import Role as RosterRole
from collab.errors import Forbidden, NotFound, ServiceError

__all__ = [
    "MANAGER_ROLES",
    "access_admin",
    "access_blob",
    "access_case",
    "access_case_device",
    "access_device",
    "access_manager",
    "access_member",
    "access_provider",
    "access_provider_member",
    "access_roster_device",
    "access_roster_devices",
    "is_admin",
    "is_case_manager",
    "is_case_member",
]

MANAGER_ROLES = (int(RosterRole.OWNER), int(RosterRole.ADMIN))


def is_case_member(*, user: User, case_id: uuid.UUID) -> bool:
    return m.Member.objects.filter(case_id=case_id, user=user).exists()


def is_case_manager(*, user: User, case_id: uuid.UUID) -> bool:
    """An owner or admin in the case's head roster."""
    return m.Member.objects.filter(case_id=case_id, user=user, role__in=MANAGER_ROLES).exists()


def access_member(user: User, case_id: uuid.UUID) -> m.Member:
    """The user's membership of the case (its head roster), else ``not_member``."""
    member = m.Member.objects.filter(case_id=case_id, user=user).select_related("case").first()
    if member is None:
        raise Forbidden("not_member", "You are not a member of this case.")
    return member


def access_case(user: User, case_id: uuid.UUID) -> m.Case:
    """A case the user is a member of now; a missing case reads the same (no probing)."""
    return access_member(user, case_id).case


def access_manager(user: User, case_id: uuid.UUID) -> m.Member:
    member = access_member(user, case_id)
    if member.role not in MANAGER_ROLES:
        raise Forbidden("not_manager", "Only a case owner or admin may do this.")
    return member


def access_admin(user: User, message: str = "Only an administrator may do this.") -> User:
    """An organisation admin (``is_admin``), else ``admins_only``."""
    if not is_admin(user):
        raise Forbidden("admins_only", message)
    return user


def access_provider(user: User, message: str = "Only providers may do this.") -> User:
    if user.role != Role.PROVIDER:
        raise Forbidden("providers_only", message)
    return user


def access_provider_member(user: User, case_id: uuid.UUID) -> m.Case:
    case = access_case(user, case_id)
    if user.role != Role.PROVIDER:
        raise Forbidden("providers_only", "Only providers in this case may do this.")
    return case


def access_device(user: User, device_id: uuid.UUID, *, active: bool = True) -> Device:
    """One of the user's registered devices (by default: not revoked)."""
    device = Device.objects.filter(pk=device_id, user=user).first()
    if device is None:
        raise Forbidden("unknown_device", "That device is not registered to you.")
    if active and device.revoked_at is not None:
        raise Forbidden("device_revoked", "That device has been revoked.")
    return device


def access_case_device(user: User, case_id: uuid.UUID, device_id: uuid.UUID) -> m.Case:
    """A case the user is a member of, acted on by one of their active devices."""
    case = access_case(user, case_id)
    access_device(user, device_id)
    return case


def access_blob(user: User, blob_id: uuid.UUID, device_id: uuid.UUID) -> m.Blob:
    """A complete attachment of a case the user is a member of, for an active device."""
    access_device(user, device_id)
    blob = m.Blob.objects.filter(pk=blob_id, status=m.BlobStatus.COMPLETE).first()
    if blob is None or not is_case_member(user=user, case_id=blob.case_id):
        raise NotFound("no_blob", "No such attachment in your cases.")
    return blob


def access_roster_device(
    user: User, case_id: uuid.UUID, device_id: uuid.UUID, *, lock: bool = False
) -> Device:
    """The user's active device, in the case's head roster (``not_in_roster``): the
    batch rule below for one device, so the rule has one home. ``lock`` as there."""
    answer = access_roster_devices([(user, case_id, device_id)], lock=lock)[
        (user.pk, case_id, device_id)
    ]
    if isinstance(answer, Forbidden):
        raise answer
    return answer


def access_roster_devices(
    checks: Iterable[tuple[User, uuid.UUID, uuid.UUID]], *, lock: bool = False
) -> dict[tuple[uuid.UUID, uuid.UUID, uuid.UUID], Device | Forbidden]:
    """``access_roster_device`` for many ``(user, case_id, device_id)`` in one query.

    Keyed by ``(user id, case id, device id)``: the user's active device in that case's
    head roster, or the same ``not_in_roster`` refusal. Read afresh on every call, so a
    revocation or removal committed before it counts at once.
    """
    wanted = list(checks)
    if not wanted:
        return {}
    rows = m.MemberDevice.objects.filter(
        case_id__in={case_id for _, case_id, _ in wanted},
        device_id__in={device_id for _, _, device_id in wanted},
        device__revoked_at__isnull=True,
    ).select_related("device")
    if lock:  # inside the caller's transaction; the device rows only
        rows = rows.select_for_update(of=("device",), no_key=True)
    found = {(row.case_id, row.device_id): row.device for row in rows}
    answers: dict[tuple[uuid.UUID, uuid.UUID, uuid.UUID], Device | Forbidden] = {}
    for user, case_id, device_id in wanted:
        device = found.get((case_id, device_id))
        if device is None or device.user_id != user.pk:
            answers[(user.pk, case_id, device_id)] = Forbidden(
                "not_in_roster", "Your device is not in this case's roster."
            )
        else:
            answers[(user.pk, case_id, device_id)] = device
    return answers


@dataclass(frozen=True)
class RoomAdmission:
    """What a case-room handshake needs to know, read at once (room_admission)."""

    device: Device | None  # the user's device by that id (revoked or not), else None
    case_exists: bool
    in_roster: bool  # the device is in the case's head roster
    # This session's record of acting as the device: True proven, False recorded
    # unproven, None no record (proofs.session_device_record writes it).
    session_proven: bool | None
    epochs: tuple[int, ...]  # readable_epochs, when admitted (else empty)

    def device_refusal(self) -> ServiceError | None:
        """The device rules of access_device: unknown_device, device_revoked."""
        if self.device is None:
            return Forbidden("unknown_device", "That device is not registered to you.")
        if self.device.revoked_at is not None:
            return Forbidden("device_revoked", "That device has been revoked.")
        return None

    def refusal(self) -> ServiceError | None:
        """None when the socket may open: the case exists (no_case), the device is the
        user's and active, and in the head roster (not_member), as in
        access_roster_device."""
        if not self.case_exists:
            return NotFound("no_case", "No such case.")
        device = self.device_refusal()
        if device is not None:
            return device
        if not self.in_roster:
            return Forbidden("not_member", "This device is not in the case's roster.")
        return None


def room_admission(
    *, user: User, case_id: uuid.UUID, device_id: uuid.UUID, session_key: str | None
) -> RoomAdmission:
    """Device, case, roster and this session's device record in one query, and the
    readable epochs in a second one when the device is admitted: the handshake's reads,
    the same whatever the room size or the number of sockets open (plain SQL, for speed:
    admission_reads)."""
    found = admission_reads.device_admission(
        user_id=user.pk, case_id=case_id, device_id=device_id, session_key=session_key or ""
    )
    if found is None:
        return RoomAdmission(None, admission_reads.case_exists(case_id), False, None, ())
    admission = RoomAdmission(
        found.device, found.case_exists, found.in_roster,
        None if not session_key else found.session_proven,
        (),
    )
    if admission.refusal() is not None:
        return admission
    epochs = admission_reads.readable_epochs(case_id=case_id, device_id=device_id)
    return RoomAdmission(found.device, True, True, admission.session_proven, epochs)
