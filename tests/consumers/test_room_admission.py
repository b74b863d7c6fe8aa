"""The case-room handshake's one-query verdict (access.room_admission) says what the
separate rules said, for every kind of caller, and the socket closes as documented.

The old rules, in the order the handshake applied them: no such case (``no_case``),
then ``access.access_device`` (``unknown_device``, ``device_revoked``), then
``access.access_roster_device`` (``not_in_roster``, read as ``not_member``). With a
device proof (the default) the device is checked first, before the case: a refused
device is refused as such. Close codes: 4404 for ``no_case``, 4403 for the rest.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from dataclasses import dataclass

import pytest
import websockets
from django.utils import timezone

from collab.accounts.models import Device, IdentityKey, User
from collab.cases import access, admission_reads, selectors
from collab.cases.models import Case
from collab.cases.services.membership import log_entry_submit
from collab.crypto.actions import RemoveUserBody
from collab.errors import ServiceError
from tests.support.live import daphne_servers
from tests.support.rooms import Member, build_room
from tests.support.ws import RoomSocket, remember_device

pytestmark = pytest.mark.django_db(transaction=True)


@dataclass(frozen=True)
class Caller:
    user: User
    session: str
    case_id: uuid.UUID
    device_id: uuid.UUID


# Each kind of caller, and the verdict the handshake owes it (None: admitted).
EXPECTED: dict[str, str | None] = {
    "member": None,
    "another member's device": "unknown_device",
    "an outsider's device": "unknown_device",
    "an unregistered device id": "unknown_device",
    "revoked, still in the roster": "device_revoked",
    "removed from the case": "not_member",
    "never a member": "not_member",
    "no such case": "no_case",
    "no such case, another's device": "no_case",
    "no such case, revoked device": "no_case",
}
# With a device proof the device rules come first (the proof needs the device's key).
PROVEN = {
    **EXPECTED,
    "no such case, another's device": "unknown_device",
    "no such case, revoked device": "device_revoked",
}


def callers() -> dict[str, Caller]:
    owner, other, revoked, removed = build_room(4, "adm")
    (outsider,) = build_room(1, "out")
    case_id = owner.state.case_id
    Device.objects.filter(pk=revoked.device.device_id).update(revoked_at=timezone.now())
    entry = owner.state.next_entry(RemoveUserBody(removed.user.pk))
    log_entry_submit(user=owner.user, device_id=owner.device.device_id, case_id=case_id,
                     entry=entry)
    unregistered = uuid.uuid4()
    remember_device(unregistered, os.urandom(32))  # so that a socket answers the challenge
    missing = uuid.uuid4()

    def caller(
        member: Member, device: uuid.UUID | None = None, case: uuid.UUID = case_id
    ) -> Caller:
        return Caller(member.user, member.session, case,
                      device if device is not None else member.device.device_id)

    return {
        "member": caller(owner),
        "another member's device": caller(owner, other.device.device_id),
        "an outsider's device": caller(owner, outsider.device.device_id),
        "an unregistered device id": caller(owner, unregistered),
        "revoked, still in the roster": caller(revoked),
        "removed from the case": caller(removed),
        "never a member": caller(outsider),
        "no such case": caller(owner, case=missing),
        "no such case, another's device": caller(owner, other.device.device_id, missing),
        "no such case, revoked device": caller(revoked, case=missing),
    }


def old_rules(c: Caller) -> str | None:
    """The handshake's verdict before room_admission, from the separate access rules."""
    if not Case.objects.filter(pk=c.case_id).exists():
        return "no_case"
    try:
        access.access_device(c.user, c.device_id)
        access.access_roster_device(c.user, c.case_id, c.device_id)
    except ServiceError as refusal:
        return "not_member" if refusal.code == "not_in_roster" else refusal.code
    return None


def old_proven_rules(c: Caller) -> str | None:
    try:
        access.access_device(c.user, c.device_id)
    except ServiceError as refusal:
        return refusal.code
    return old_rules(c)


def code(refusal: ServiceError | None) -> str | None:
    return None if refusal is None else refusal.code


def test_room_admission_agrees_with_the_separate_rules_for_every_caller() -> None:
    table = callers()
    assert set(table) == set(EXPECTED)
    verdicts: dict[str, str | None] = {}
    proven: dict[str, str | None] = {}
    for kind, c in table.items():
        for session in (None, c.session):  # with and without the session's device record
            admission = access.room_admission(
                user=c.user, case_id=c.case_id, device_id=c.device_id, session_key=session
            )
            verdict = code(admission.refusal())
            assert verdicts.setdefault(kind, verdict) == verdict, kind
            # The proof path (case_room._check_proof): the device rules, then the rest.
            proven[kind] = code(admission.device_refusal()) or verdict
            if verdict is None:
                assert admission.epochs, kind  # admitted: the epochs it may read
            else:
                assert admission.epochs == (), kind
    assert verdicts == {kind: old_rules(c) for kind, c in table.items()} == EXPECTED
    assert proven == {kind: old_proven_rules(c) for kind, c in table.items()} == PROVEN


async def verdict_on_socket(
    base: str, c: Caller, *, proof: bool = True
) -> tuple[str | None, int | None]:
    """The error code the socket sent and its close code; (None, None) once admitted."""
    if proof:
        sock = await RoomSocket.open(base, c.session, c.case_id, c.device_id)
    else:  # an older client: no proof asked for, the server hellos or refuses at once
        url = base.replace("http://", "ws://") + f"/ws/cases/{c.case_id}/?device={c.device_id}"
        headers = {"Origin": base, "Cookie": f"sessionid={c.session}"}
        sock = RoomSocket(await websockets.connect(url, additional_headers=headers))
    try:
        hello = await sock.next("hello", "error")
    except Exception:  # closed before a frame of those types: read the code below
        hello = {}
    if hello.get("type") == "hello":
        await sock.close()
        return None, None
    closed = await sock.closed_with()
    errors = [f["code"] for f in [*sock.seen, hello] if f.get("type") == "error"]
    return (errors[0] if errors else None), closed


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock(), daphne_servers(1) as urls:
        yield urls[0]


@pytest.fixture(scope="module")
def unproven_server(django_db_setup, django_db_blocker):
    """Device proofs not yet required: a client that does not ask gets the bare verdict."""
    with django_db_blocker.unblock(), daphne_servers(
        1, COLLAB_DEVICE_PROOF_REQUIRED="0"
    ) as urls:
        yield urls[0]


@pytest.mark.e2e
def test_the_socket_handshake_refuses_each_caller_with_its_close_code(server: str) -> None:
    table = callers()

    async def run() -> dict[str, tuple[str | None, int | None]]:
        return {kind: await verdict_on_socket(server, c) for kind, c in table.items()}

    got = asyncio.run(run())
    close = {None: None, "no_case": 4404}
    assert got == {kind: (v, close.get(v, 4403)) for kind, v in PROVEN.items()}


@pytest.mark.e2e
def test_without_a_proof_the_socket_refuses_with_room_admissions_verdict(
    unproven_server: str,
) -> None:
    table = callers()

    async def run() -> dict[str, tuple[str | None, int | None]]:
        return {
            kind: await verdict_on_socket(unproven_server, c, proof=False)
            for kind, c in table.items()
        }

    got = asyncio.run(run())
    close = {None: None, "no_case": 4404}
    assert got == {kind: (v, close.get(v, 4403)) for kind, v in EXPECTED.items()}


def test_the_handshakes_epochs_follow_the_readable_epochs_rule() -> None:
    """admission_reads.readable_epochs (plain SQL, on every handshake) against the ORM
    rule (selectors.readable_epochs), device by device: a member, a second device of the
    member's current identity with no wrap of its own, devices of another identity key
    or of none, an outsider's device; then again once an operator replaced the
    member's identity key."""
    owner, member = build_room(2, "ep")
    (outsider,) = build_room(1, "epo")
    case_id = owner.state.case_id
    current = IdentityKey.objects.get(user=member.user).uik_pub
    template = Device.objects.get(pk=member.device.device_id)

    def device(uik_pub: bytes | None) -> uuid.UUID:
        row = Device.objects.create(
            id=uuid.uuid4(), user=member.user, dsk_pub=template.dsk_pub,
            dxk_pub=template.dxk_pub, not_before_ms=0, cert_sig=template.cert_sig,
            uik_pub=uik_pub,
        )
        return row.pk

    second = device(bytes(current))
    stale = device(os.urandom(32))  # certified by a key the user no longer has
    unknown = device(None)
    devices = {"owner": owner.device.device_id, "member": member.device.device_id,
               "second": second, "stale": stale, "no key": unknown,
               "outsider": outsider.device.device_id}

    def both() -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
        return {
            name: (admission_reads.readable_epochs(case_id=case_id, device_id=d),
                   tuple(sorted(selectors.readable_epochs(case_id=case_id, device_id=d))))
            for name, d in devices.items()
        }

    seen = both()
    assert all(raw == orm for raw, orm in seen.values()), seen
    assert seen["member"][0] and seen["second"][0] == seen["member"][0]
    assert seen["outsider"][0] == ()
    # The rule counts the wraps of the user's current devices, whichever device asks:
    # the asking device's own standing is admission's (an identity reset revokes the
    # old devices), so these read what the member reads.
    assert seen["stale"][0] == seen["no key"][0] == seen["member"][0]
    # The operator replaces the member's identity key: none of its devices reads.
    IdentityKey.objects.filter(user=member.user).update(uik_pub=os.urandom(32))
    seen = both()
    assert all(raw == orm for raw, orm in seen.values()), seen
    assert seen["member"][0] == seen["second"][0] == () and seen["owner"][0]
