"""The invitation binding as a member's client checks it (same cases as the JS suite)."""

from __future__ import annotations

import dataclasses
import uuid

from collab.crypto.actions import AddUserBody, Body, RemoveUserBody
from collab.crypto.invite import (
    InvitationRecord,
    check_invitation,
    invite_keypair,
    sign_invitation,
    sign_invite_proof,
)
from collab.crypto.log import LogEntry, build_entry
from collab.crypto.roster import Role
from collab.crypto.vectors.fixtures import ALICE, BOB, CAROL, DAVE, Person, seed

from .test_vectors import V, b

INV = V["invite"]
CASE = uuid.UUID(INV["case_id"])
PATIENT = uuid.UUID(INV["patient_user"])
UIK = b(INV["patient_uik"])
GENESIS = LogEntry.decode(b(V["log"]["entries"][0]["entry_bytes"]))
RECORD = InvitationRecord(
    created_by=uuid.UUID(INV["inviter_user"]),
    inviter_device=uuid.UUID(INV["inviter_device"]),
    invite_pub=b(INV["invite_pub"]),
    invite_sig=b(INV["invite_sig"]),
    created_ms=INV["created_ms"],
    proof_sig=b(INV["proof_sig"]),
)


def test_link_proof_binds_the_patient() -> None:
    assert check_invitation([GENESIS], CASE, RECORD, PATIENT, UIK) == "bound"


def test_missing_proof_or_binding_is_unbound() -> None:
    no_proof = dataclasses.replace(RECORD, proof_sig=None)
    assert check_invitation([GENESIS], CASE, no_proof, PATIENT, UIK) == "unbound"
    assert check_invitation([GENESIS], CASE, None, PATIENT, UIK) == "unbound"


def test_substituted_patient_key_is_bad_proof() -> None:
    other_uik = b(V["people"]["bob"]["uik_pub"])
    assert check_invitation([GENESIS], CASE, RECORD, PATIENT, other_uik) == "bad_proof"


def test_inviter_not_in_a_verified_roster_is_bad_proof() -> None:
    assert check_invitation([], CASE, RECORD, PATIENT, UIK) == "bad_proof"


def test_statement_forged_by_the_server_is_bad_proof() -> None:
    forged = dataclasses.replace(RECORD, invite_sig=bytes(64))
    assert check_invitation([GENESIS], CASE, forged, PATIENT, UIK) == "bad_proof"
    other_case = uuid.UUID(int=CASE.int ^ 1)
    assert check_invitation([GENESIS], other_case, RECORD, PATIENT, UIK) == "bad_proof"


def _statement_by(person: Person, chain: list[LogEntry]) -> str:
    """A binding made by ``person``'s first device, proved by the patient (Carol)."""
    secret = seed("invite by " + person.name)
    invite_seed, invite_pub = invite_keypair(secret)
    record = InvitationRecord(
        created_by=person.user_id, inviter_device=person.d.device_id, invite_pub=invite_pub,
        invite_sig=sign_invitation(person.d.dsk_seed, CASE, person.user_id,
                                   person.d.device_id, invite_pub, 1),
        created_ms=1,
        proof_sig=sign_invite_proof(invite_seed, CASE, invite_pub, CAROL.user_id, CAROL.uik_pub),
    )
    return check_invitation(chain, CASE, record, CAROL.user_id, CAROL.uik_pub)


def _next(prev: LogEntry, body: Body) -> LogEntry:
    entry, _ = build_entry(prev, body, author_seed=ALICE.d.dsk_seed, author_user_id=ALICE.user_id,
                           author_device_id=ALICE.d.device_id, created_ms=prev.created_ms + 1)
    return entry


def test_inviter_must_be_in_the_head_roster() -> None:
    e1 = LogEntry.decode(b(V["log"]["entries"][1]["entry_bytes"]))
    assert _statement_by(BOB, [GENESIS, e1]) == "bound"
    e2 = _next(e1, RemoveUserBody(BOB.user_id))
    assert _statement_by(BOB, [GENESIS, e1, e2]) == "bad_proof"  # removed since


def test_a_patient_member_cannot_bind_an_invitation() -> None:
    e1 = LogEntry.decode(b(V["log"]["entries"][1]["entry_bytes"]))
    dave_as_patient = AddUserBody(DAVE.user_id, Role.PATIENT, DAVE.uik_pub, (DAVE.d.cert,))
    e2 = _next(e1, dave_as_patient)
    assert _statement_by(DAVE, [GENESIS, e1, e2]) == "bad_proof"
