"""Patient invitations bound by the link itself.

The inviting device makes a 32-byte secret ``s`` that travels only in the URL fragment
of the invitation link (browsers never send a fragment to the server). ``s`` derives an
Ed25519 invite key; the inviter's device signs a statement naming the case and the
invite key's public half, and the patient's client, holding ``s``, signs a proof that
binds the patient's user id and identity key (UIK) to that invitation. A member's
client checks both before admitting, so a server (or anyone else) holding only the
server token cannot substitute the patient.

    invite_seed  = SHA-512("CR1/invite-key\\0" || s)[0:32]
    statement    = "CR1/invite\\0" || case_id(16) || inviter_user(16) || inviter_device(16)
                   || invite_pub(32) || created_ms(u64)
    invite_sig   = Ed25519(inviter DSK, statement)
    proof        = "CR1/invite-proof\\0" || case_id(16) || invite_pub(32)
                   || patient_user(16) || patient_uik(32)
    proof_sig    = Ed25519(invite_seed, proof)
    short_code   = first 20 digits of fingerprint_digits(patient_user, patient_uik)
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from . import primitives as prim
from .encoding import fixed, u64, uuid_bytes
from .errors import CryptoError
from .log import LogEntry
from .roster import Role
from .safety import fingerprint_digits

KEY_TAG = b"CR1/invite-key\x00"
STATEMENT_TAG = b"CR1/invite\x00"
PROOF_TAG = b"CR1/invite-proof\x00"
SECRET_LEN = 32
SHORT_CODE_GROUPS = 4

Binding = Literal["bound", "unbound", "bad_proof"]


def invite_keypair(secret: bytes) -> tuple[bytes, bytes]:
    """(invite seed, invite public key) from the link secret."""
    seed = prim.sha512(KEY_TAG + fixed(secret, SECRET_LEN, "invite secret"))[:32]
    return seed, prim.ed25519_public(seed)


def invite_statement_bytes(
    case_id: uuid.UUID, inviter_user: uuid.UUID, inviter_device: uuid.UUID,
    invite_pub: bytes, created_ms: int,
) -> bytes:
    return (
        STATEMENT_TAG + uuid_bytes(case_id) + uuid_bytes(inviter_user)
        + uuid_bytes(inviter_device) + fixed(invite_pub, 32, "invite_pub") + u64(created_ms)
    )


def sign_invitation(
    dsk_seed: bytes, case_id: uuid.UUID, inviter_user: uuid.UUID, inviter_device: uuid.UUID,
    invite_pub: bytes, created_ms: int,
) -> bytes:
    prim.check_ed25519_public(invite_pub)
    msg = invite_statement_bytes(case_id, inviter_user, inviter_device, invite_pub, created_ms)
    return prim.sign(dsk_seed, msg)


def verify_invitation_statement(
    dsk_pub: bytes, case_id: uuid.UUID, inviter_user: uuid.UUID, inviter_device: uuid.UUID,
    invite_pub: bytes, created_ms: int, sig: bytes,
) -> None:
    """Raises CryptoError (bad_signature, non_canonical_signature, low_order_key, ...)."""
    prim.check_ed25519_public(invite_pub)
    msg = invite_statement_bytes(case_id, inviter_user, inviter_device, invite_pub, created_ms)
    prim.verify(dsk_pub, msg, sig)


def invite_proof_bytes(
    case_id: uuid.UUID, invite_pub: bytes, patient_user: uuid.UUID, patient_uik: bytes
) -> bytes:
    return (
        PROOF_TAG + uuid_bytes(case_id) + fixed(invite_pub, 32, "invite_pub")
        + uuid_bytes(patient_user) + fixed(patient_uik, 32, "patient_uik")
    )


def sign_invite_proof(
    invite_seed: bytes, case_id: uuid.UUID, invite_pub: bytes, patient_user: uuid.UUID,
    patient_uik: bytes,
) -> bytes:
    return prim.sign(invite_seed, invite_proof_bytes(case_id, invite_pub, patient_user,
                                                     patient_uik))


def verify_invite_proof(
    invite_pub: bytes, case_id: uuid.UUID, patient_user: uuid.UUID, patient_uik: bytes,
    sig: bytes,
) -> None:
    """Any failure is bad_proof: the proof does not bind this patient to this link."""
    try:
        prim.check_ed25519_public(invite_pub)
        prim.verify(invite_pub, invite_proof_bytes(case_id, invite_pub, patient_user,
                                                   patient_uik), sig)
    except CryptoError as exc:
        raise CryptoError("bad_proof", f"invitation proof: {exc.code}") from exc


def short_code(user_id: uuid.UUID, uik_pub: bytes) -> list[str]:
    """4 groups of 5 digits the patient reads out when the link proof is missing."""
    digits = fingerprint_digits(user_id, uik_pub)
    return [digits[i : i + 5] for i in range(0, 5 * SHORT_CODE_GROUPS, 5)]


@dataclass(frozen=True)
class InvitationRecord:
    """What the server lists for a patient's join request (all claims to check)."""

    created_by: uuid.UUID
    inviter_device: uuid.UUID | None
    invite_pub: bytes | None
    invite_sig: bytes | None
    created_ms: int | None
    proof_sig: bytes | None


def check_invitation(
    chain: Iterable[LogEntry], case_id: uuid.UUID, invitation: InvitationRecord | None,
    patient_user: uuid.UUID, patient_uik: bytes,
) -> Binding:
    """bound: a device of the inviter, who is in the case's verified HEAD roster with a
    clinician role, signed the invite key, and the invite key signed this patient and
    UIK. unbound: no binding or no proof was given. bad_proof: something does not verify
    (including an inviter who is a patient or no longer in the case)."""
    inv = invitation
    if inv is None or inv.invite_pub is None or inv.invite_sig is None:
        return "unbound"
    if inv.inviter_device is None or inv.created_ms is None:
        return "bad_proof"
    entries = [e for e in chain if e.case_id == case_id]
    if not entries:
        return "bad_proof"
    head = max(entries, key=lambda e: e.epoch).roster
    cert = head.device(inv.inviter_device)
    member = head.user(inv.created_by)
    if cert is None or member is None or cert.user_id != inv.created_by \
            or member.role == Role.PATIENT:
        return "bad_proof"
    try:
        verify_invitation_statement(cert.dsk_pub, case_id, inv.created_by, inv.inviter_device,
                                    inv.invite_pub, inv.created_ms, inv.invite_sig)
    except CryptoError:
        return "bad_proof"
    if inv.proof_sig is None:
        return "unbound"
    try:
        verify_invite_proof(inv.invite_pub, case_id, patient_user, patient_uik, inv.proof_sig)
    except CryptoError:
        return "bad_proof"
    return "bound"
