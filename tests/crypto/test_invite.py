"""The invitation binding as a member's client checks it (same cases as the JS suite)."""

from __future__ import annotations

import dataclasses
import uuid

from collab.crypto.invite import InvitationRecord, check_invitation
from collab.crypto.log import LogEntry

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
