"""A case room built straight through the services: many members, signed-in sessions."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from django.contrib.sessions.backends.db import SessionStore
from django.db import transaction
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.plugins.otp_totp.models import TOTPDevice

from collab.accounts import devices
from collab.accounts.models import User
from collab.accounts.policy import LAST_ACTIVITY_KEY
from collab.cases.services.membership import case_open, log_entry_submit
from collab.client.case_state import CaseState
from collab.client.keys import DeviceKeys, Identity
from collab.crypto.actions import AddUserBody
from collab.crypto.devcert import DeviceCert
from collab.crypto.roster import Role
from tests.support.ws import remember_device


@dataclass
class Member:
    user: User
    identity: Identity
    device: DeviceKeys
    cert: DeviceCert
    session: str
    state: CaseState = field(init=False)


def signed_in_session(user: User) -> str:
    """A session that passed password and TOTP, as the sign-in pages would leave it."""
    totp = TOTPDevice.objects.create(user=user, name="app", confirmed=True)
    session = SessionStore()
    session.update(
        {
            "_auth_user_id": str(user.pk),
            "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
            "_auth_user_hash": user.get_session_auth_hash(),
            DEVICE_ID_SESSION_KEY: totp.persistent_id,
            LAST_ACTIVITY_KEY: time.time(),
        }
    )
    session.create()
    assert session.session_key is not None
    return session.session_key


def build_room(size: int, label: str = "m") -> list[Member]:
    # One transaction for the whole set-up: one commit (one fsync) instead of several per
    # member; what is stored is the same.
    with transaction.atomic():
        return _build_room(size, label)


def _build_room(size: int, label: str) -> list[Member]:
    members = []
    for i in range(size):
        user = User.objects.create_user(
            username=f"{label}{uuid.uuid4().hex[:10]}", password=None, display_name=f"{label}{i}"
        )
        identity, device = Identity.generate(user.pk), DeviceKeys.generate(user.pk)
        cert = identity.certify(device)
        devices.identity_register(user=user, uik_pub=identity.uik_pub)
        devices.device_register(user=user, cert=cert)
        remember_device(device.device_id, device.dsk_seed)
        members.append(Member(user, identity, device, cert, signed_in_session(user)))
    owner = members[0]
    state = CaseState(uuid.uuid4(), owner.device)
    genesis = state.genesis(owner.cert, owner.identity.uik_pub)
    case_open(user=owner.user, device_id=owner.device.device_id, genesis=genesis)
    state.accept_entries([genesis])
    for other in members[1:]:
        body = AddUserBody(other.user.pk, Role.MEMBER, other.identity.uik_pub, (other.cert,))
        entry = state.next_entry(body)
        log_entry_submit(
            user=owner.user, device_id=owner.device.device_id, case_id=state.case_id, entry=entry
        )
        state.accept_entries([entry])
    # The owner's state verified every entry as it was added (and the server again); each
    # member keeps those same entries as trusted and opens its own wraps, the last step of
    # accept_entries. Verifying (or hash-linking) the whole chain again per member made a
    # room of n cost n^3 certificate checks or encodings.
    for member in members:
        member.state = CaseState(state.case_id, member.device)
        for entry in state.chain.values():
            member.state._learn(entry)
    return members
