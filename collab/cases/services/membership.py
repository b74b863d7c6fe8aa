"""Opening a case and committing membership-log entries (compare-and-swap on the head)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from collab.accounts.models import Device, IdentityKey, Role, User
from collab.audit.services import AuditAction, RequestMeta, audit_record
from collab.cases import models as m
from collab.cases.access import access_device, access_provider
from collab.cases.selectors import head_entry
from collab.cases.services import consults, inbox, invitations
from collab.cases.services._common import crypto_failure, locked_case
from collab.crypto.actions import Action, AddDeviceBody, ShareHistoryBody
from collab.crypto.errors import CryptoError
from collab.crypto.log import LogEntry, verify_entry
from collab.crypto.roster import Role as RosterRole
from collab.crypto.roster import Roster
from collab.crypto.wire import b64e
from collab.errors import Conflict, Forbidden, ServiceError
from collab.oncall import routing as oncall_routing
from collab.realtime import case_group, publish_after_commit


def _check_author(entry: LogEntry, user: User, device_id: uuid.UUID) -> None:
    if entry.author_user_id != user.pk or entry.author_device_id != device_id:
        raise Forbidden("wrong_author", "The entry must be authored by your signed-in device.")


def _check_roster_registered(roster: Roster, prev: Roster | None) -> None:
    """Every key in the roster must be what its user registered: the server will not
    let a client (or itself) slip in a key nobody certified here."""
    user_ids = [u.user_id for u in roster.users]
    identities = {
        i.user_id: (bytes(i.uik_pub), i.user.role)
        for i in IdentityKey.objects.filter(user_id__in=user_ids).select_related("user")
    }
    carried = {(u.user_id, u.uik_pub, u.role) for u in prev.users} if prev is not None else set()
    for member in roster.users:
        if (member.user_id, member.uik_pub, member.role) in carried:
            # Checked when it entered the roster. A user whose identity was reset since
            # stays listed under the old key until readmitted; their devices are all
            # revoked, so only removals pass meanwhile (docs/protocol.md §6).
            continue
        registered = identities.get(member.user_id)
        if registered is None or registered[0] != member.uik_pub:
            raise ServiceError("unregistered_identity", f"User {member.user_id} has no such key.")
        if (member.role == RosterRole.PATIENT) != (registered[1] == Role.PATIENT):
            raise ServiceError("bad_role", "Patients, and only patients, have the patient role.")
    known = {d.device_id for d in prev.devices} if prev is not None else set()
    new = [d for d in roster.devices if d.device_id not in known]
    devices = {d.pk: d for d in Device.objects.filter(pk__in=[d.device_id for d in new])}
    for cert in new:
        device = devices.get(cert.device_id)
        if (
            device is None
            or device.user_id != cert.user_id
            or device.revoked_at is not None
            or bytes(device.dsk_pub) != cert.dsk_pub
            or bytes(device.dxk_pub) != cert.dxk_pub
            or bytes(device.cert_sig) != cert.cert_sig
        ):
            raise ServiceError("unregistered_device", f"Device {cert.device_id} is not registered.")


def _check_roster_size(entry: LogEntry, prev: LogEntry | None) -> None:
    """At most ``MAX_ROSTER_DEVICES`` devices in a roster (400 ``roster_too_large``),
    checked before the entry is verified: verifying costs one signature per roster
    device, and every later entry carries the whole roster again. An entry that does not
    grow the roster passes, so a case over a lowered limit can still shrink and rotate."""
    limit = settings.MAX_ROSTER_DEVICES
    size = len(entry.roster.devices)
    if size > limit and (prev is None or size > len(prev.roster.devices)):
        raise ServiceError(
            "roster_too_large",
            f"A case roster holds at most {limit} devices.",
            max_devices=limit,
        )


_ADDS_OTHERS = (RosterRole.OWNER, RosterRole.ADMIN)


def _check_add_device(entry: LogEntry, prev: LogEntry) -> None:
    """add_device adds a device of the author's own user; only an owner or admin of the
    case may name another user's (403 ``not_allowed``; CR1 §6.3 then refuses even that
    as ``unauthorized_author``, so in effect a user adds only their own devices)."""
    if entry.action != Action.ADD_DEVICE:
        return
    try:
        body = entry.body()
    except CryptoError as error:
        raise crypto_failure(error) from None
    if not isinstance(body, AddDeviceBody) or body.device.user_id == entry.author_user_id:
        return
    author = prev.roster.user(entry.author_user_id)
    if author is None or author.role not in _ADDS_OTHERS:
        raise Forbidden("not_allowed", "Only a case owner or admin adds another user's device.")


# Entries that only shrink the roster may still hold revoked devices (they remove one).
_SHRINKING = (Action.REMOVE_DEVICE, Action.REMOVE_USER)


def _check_no_revoked_devices(entry: LogEntry) -> None:
    """No entry but a removal may keep a revoked device in the roster: it would wrap a
    fresh epoch key to a device that is no longer trusted (409 with the ``devices``).
    Except a new device's enrolment next to its own user's revoked devices: it cannot
    remove them before it is in the roster, and after losing their only device nobody
    else of that user could (the new device removes them next; their wraps are never
    served, as for every revoked device)."""
    if entry.action in _SHRINKING:
        return
    found = Device.objects.filter(
        pk__in=[d.device_id for d in entry.roster.devices], revoked_at__isnull=False
    ).values_list("pk", "user_id")
    if entry.action == Action.ENROL_DEVICE:
        found = found.exclude(user_id=entry.author_user_id)
    revoked = sorted(str(pk) for pk, _user in found)
    if revoked:
        raise Conflict(
            "revoked_device_in_roster",
            "Remove the revoked devices (remove_device) before any other entry.",
            devices=revoked,
        )


def _store_entry(case: m.Case, entry: LogEntry) -> m.LogEntry:
    entry_hash = entry.entry_hash()
    record = m.LogEntry.objects.create(
        case=case,
        epoch=entry.epoch,
        entry_hash=entry_hash,
        raw=entry.encode(),
        action=int(entry.action),
        author_device_id=entry.author_device_id,
    )
    wraps = [
        m.KeyWrap(case=case, epoch=entry.epoch, device_id=w.device_id, ciphertext=w.ciphertext)
        for w in entry.wraps
    ]
    body = entry.body()
    if isinstance(body, ShareHistoryBody):
        # Earlier epochs become readable for the named devices; the keys stay sealed.
        wraps += [
            m.KeyWrap(
                case=case,
                epoch=w.epoch,
                device_id=w.device_id,
                ciphertext=w.ciphertext,
                shared_in_epoch=entry.epoch,
            )
            for w in body.items
        ]
    m.KeyWrap.objects.bulk_create(wraps, ignore_conflicts=True)
    _sync_members(case, entry.roster)
    case.head_epoch = entry.epoch
    case.head_hash = entry_hash
    case.head_at = timezone.now()
    case.save(update_fields=["head_epoch", "head_hash", "head_at"])
    m.JoinRequest.objects.filter(
        case=case, status=m.JoinStatus.PENDING, user_id__in=[u.user_id for u in entry.roster.users]
    ).update(status=m.JoinStatus.COMMITTED, resolved_epoch=entry.epoch)
    return record


def _sync_members(case: m.Case, roster: Roster) -> None:
    roles = {u.user_id: int(u.role) for u in roster.users}
    device_ids = [d.device_id for d in roster.devices]
    m.Member.objects.filter(case=case).exclude(user_id__in=roles).delete()
    m.MemberDevice.objects.filter(case=case).exclude(device_id__in=device_ids).delete()
    existing = dict(m.Member.objects.filter(case=case).values_list("user_id", "role"))
    m.Member.objects.bulk_create(
        [m.Member(case=case, user_id=u, role=r) for u, r in roles.items() if u not in existing]
    )
    # The live case list: removed members' inbox sockets leave, added ones join.
    inbox.roster_changed(
        case_id=case.pk, users=list(roles), added=[u for u in roles if u not in existing]
    )
    for user_id, role in roles.items():
        if user_id in existing and existing[user_id] != role:
            m.Member.objects.filter(case=case, user_id=user_id).update(role=role)
    m.MemberDevice.objects.bulk_create(
        [m.MemberDevice(case=case, device_id=d) for d in device_ids], ignore_conflicts=True
    )


def _publish_log(case: m.Case, entry: LogEntry) -> None:
    publish_after_commit(
        case_group(case.pk),
        {
            "type": "case.log",
            "epoch": entry.epoch,
            "hash": b64e(entry.entry_hash()),
            "action": entry.action.name.lower(),
            "devices": [str(d.device_id) for d in entry.roster.devices],
        },
    )


@transaction.atomic
def case_open(
    *,
    user: User,
    device_id: uuid.UUID,
    genesis: LogEntry,
    specialty: str = "",
    urgency: str = m.Urgency.ROUTINE,
    meta: RequestMeta | None = None,
) -> m.Case:
    """A provider opens a case with its signed genesis entry (the provider as owner)."""
    access_provider(user, "Only providers open cases.")
    if urgency not in m.Urgency.values:
        raise ServiceError("bad_urgency", f"Urgency must be one of {', '.join(m.Urgency.values)}.")
    access_device(user, device_id)
    _check_author(genesis, user, device_id)
    _check_roster_size(genesis, None)
    try:
        verify_entry(None, genesis)
    except CryptoError as error:
        raise crypto_failure(error) from None
    _check_roster_registered(genesis.roster, None)
    if m.Case.objects.filter(pk=genesis.case_id).exists():
        raise Conflict("case_exists", "A case with that id exists.")
    case = m.Case.objects.create(
        id=genesis.case_id,
        opened_by=user,
        specialty=specialty.strip()[:80],
        urgency=urgency,
        head_epoch=0,
        head_hash=genesis.entry_hash(),
    )
    _store_entry(case, genesis)
    audit_record(
        action=AuditAction.CASE_OPENED,
        actor=user,
        device_id=device_id,
        case_id=case.pk,
        target=f"case:{case.pk}",
        meta=meta,
        details={"specialty": case.specialty, "urgency": case.urgency},
    )
    oncall_routing.consult_offer(case=case, meta=meta)
    return case


def head_wire(case: m.Case) -> dict[str, Any]:
    return {"epoch": case.head_epoch, "hash": b64e(bytes(case.head_hash))}


@dataclass(frozen=True)
class LogSubmitted:
    """The stored entry, and whether this request was a replay of one already committed
    (a client retrying after a lost answer gets the same entry, marked, not a conflict)."""

    record: m.LogEntry
    duplicate: bool


@transaction.atomic
def log_entry_submit(
    *,
    user: User,
    device_id: uuid.UUID,
    case_id: uuid.UUID,
    entry: LogEntry,
    meta: RequestMeta | None = None,
) -> LogSubmitted:
    """Accept the next entry only if it extends the current head (else 409 with the head).
    The same bytes as an entry already committed at its epoch are a replay: answered with
    the stored entry and ``duplicate``, nothing stored or audited again."""
    access_device(user, device_id)
    _check_author(entry, user, device_id)
    if entry.case_id != case_id:
        raise ServiceError("wrong_case", "The entry belongs to another case.")
    case = locked_case(case_id)
    entry_hash = entry.entry_hash()
    if entry.epoch <= case.head_epoch:
        stored = m.LogEntry.objects.filter(case=case, epoch=entry.epoch).first()
        if stored is not None and bytes(stored.entry_hash) == entry_hash:
            return LogSubmitted(stored, duplicate=True)
        raise Conflict(
            "stale_head", "Another entry won this epoch; rebuild on the head.", head=head_wire(case)
        )
    if entry.epoch != case.head_epoch + 1 or entry.prev_hash != bytes(case.head_hash):
        raise Conflict("stale_head", "The entry does not extend the head.", head=head_wire(case))
    prev = head_entry(case)
    _check_roster_size(entry, prev)
    _check_add_device(entry, prev)
    try:
        verify_entry(prev, entry)
    except CryptoError as error:
        raise crypto_failure(error) from None
    _check_roster_registered(entry.roster, prev.roster)
    _check_no_revoked_devices(entry)
    invitations.check_patient_add(case=case, entry=entry)
    record = _store_entry(case, entry)
    consults.on_entry_stored(case=case, entry=entry, actor=user, meta=meta)
    audit_record(
        action=AuditAction.LOG_ENTRY_COMMITTED,
        actor=user,
        device_id=device_id,
        case_id=case.pk,
        target=f"log:{entry.epoch}",
        meta=meta,
        details={"epoch": entry.epoch, "action": entry.action.name.lower()},
    )
    # Sockets of devices not in the new roster close when they hear of it.
    _publish_log(case, entry)
    return LogSubmitted(record, duplicate=False)
