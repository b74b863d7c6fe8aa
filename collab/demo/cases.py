"""The demo case: pcp opens a dermatology consult, adds derm, and asks a first question.

Built with the real client code and the real services, so it is a genuine end-to-end
encrypted case. Each demo user's keys go to a client keystore (passphrase: their demo
password) and their recovery key is printed, so the browser can recover the identity.
The epoch keys each user holds are stored in their key backup (sealed under the key
derived from their identity seed, protocol-crypto.md §9d), so a browser that recovers
pcp or derm enrols itself in the case and reads it from the first message.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from collab.accounts import devices
from collab.accounts.models import IdentityKey, User
from collab.cases.models import Case
from collab.cases.services.keybackup import BackupItem, key_backup_store
from collab.cases.services.membership import case_open, log_entry_submit
from collab.cases.services.messages import message_send
from collab.client.case_state import CaseState
from collab.client.keys import (
    DeviceKeys,
    Identity,
    format_recovery_key,
    new_recovery_key,
    seal_identity_backup,
)
from collab.client.keystore import CaseMemo, Keystore
from collab.crypto.actions import AddUserBody
from collab.crypto.devcert import DeviceCert
from collab.crypto.keybackup import backup_key, seal_backup_item
from collab.crypto.roster import Role

QUESTION = (
    "Demo case (fictional patient): 54-year-old with a pigmented lesion on the left "
    "forearm that has grown over three months. Asymmetric, 7 mm. Biopsy, or watch?"
)


@dataclass
class DemoKeys:
    user: User
    identity: Identity
    device: DeviceKeys
    cert: DeviceCert
    recovery: str
    home: Path


def demo_home(username: str) -> Path:
    return Path(settings.DATA_DIR) / "demo" / username


def _keys_for(user: User, password: str) -> DemoKeys:
    identity, device = Identity.generate(user.pk), DeviceKeys.generate(user.pk)
    cert = identity.certify(device)
    recovery_key = new_recovery_key()
    devices.identity_register(user=user, uik_pub=identity.uik_pub)
    devices.identity_backup_store(
        user=user, ciphertext=seal_identity_backup(identity, recovery_key)
    )
    devices.device_register(user=user, cert=cert, name="demo command-line client")
    home = demo_home(user.username)
    home.mkdir(parents=True, exist_ok=True)
    store = Keystore.create(home / "keystore.json", password)
    store.state.server = "http://127.0.0.1:8000"
    store.state.username = user.username
    store.state.user_id = user.pk
    store.state.identity, store.state.device, store.state.cert = identity, device, cert
    store.state.device_name = "demo command-line client"
    store.save()
    return DemoKeys(user, identity, device, cert, format_recovery_key(recovery_key), home)


def demo_case_create(
    owner: User, owner_password: str, member: User, member_password: str
) -> tuple[Case, list[DemoKeys]] | None:
    """Once: skipped when the demo users already hold identity keys."""
    if IdentityKey.objects.filter(user__in=[owner, member]).exists():
        return None
    pcp, derm = _keys_for(owner, owner_password), _keys_for(member, member_password)
    state = CaseState(uuid.uuid4(), pcp.device)
    genesis = state.genesis(pcp.cert, pcp.identity.uik_pub)
    case = case_open(
        user=owner,
        device_id=pcp.device.device_id,
        genesis=genesis,
        specialty=member.specialty,
        urgency="soon",
    )
    state.accept_entries([genesis])
    add = state.next_entry(AddUserBody(member.pk, Role.MEMBER, derm.identity.uik_pub, (derm.cert,)))
    log_entry_submit(user=owner, device_id=pcp.device.device_id, case_id=case.pk, entry=add)
    state.accept_entries([add])
    message_send(
        user=owner,
        device_id=pcp.device.device_id,
        case_id=case.pk,
        envelope=state.seal({"text": QUESTION}),
    )
    _back_up(pcp, case.pk, state, epochs=[0, 1])
    _back_up(derm, case.pk, state, epochs=[1])  # derm is in the roster from epoch 1
    for keys, password in ((pcp, owner_password), (derm, member_password)):
        store = Keystore.load(keys.home / "keystore.json", password)
        store.state.cases[str(case.pk)] = CaseMemo(
            head_epoch=-1, sender_seq=state.sender_seq if keys is pcp else 0
        )
        store.save()
    return case, [pcp, derm]


def _back_up(keys: DemoKeys, case_id: uuid.UUID, state: CaseState, epochs: list[int]) -> None:
    """Store the user's epoch keys in their key backup, as their browser would."""
    key = backup_key(keys.identity.uik_seed)
    key_backup_store(
        user=keys.user,
        device_id=keys.device.device_id,
        items=[
            BackupItem(case_id, e, seal_backup_item(key, case_id, e, state.keys[e]))
            for e in epochs
        ],
    )
