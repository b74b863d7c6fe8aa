from __future__ import annotations

import dataclasses
import uuid

import pytest

from collab.crypto import (
    Action,
    AddDeviceBody,
    Body,
    CreateBody,
    CryptoError,
    LogEntry,
    RemoveDeviceBody,
    RemoveUserBody,
    Role,
    RotateBody,
    SetRoleBody,
    build_entry,
    check_fork,
    make_device_cert,
    make_history_body,
    open_history,
    open_wrap,
    seal_entry,
    sign_leave,
    verify_chain,
    verify_entry,
)
from collab.crypto.actions import apply_action
from collab.crypto.log import action_for, key_commit
from collab.crypto.vectors.fixtures import NOT_BEFORE_MS, Person, fixed_uuid, person, seed

from .helpers import ALICE, BOB, CAROL, CASE_ID, DAVE, T0, add, genesis, resign, team


def refused(prev: LogEntry | None, entry: LogEntry) -> str:
    with pytest.raises(CryptoError) as e:
        verify_entry(prev, entry)
    return e.value.code


def forged(prev: LogEntry, author: Person, body: Body, *, device: int = 0) -> LogEntry:
    """Signed by `author` with the roster the action would give, bypassing
    build_entry's self-check so verify_entry's own checks are exercised."""
    roster = apply_action(
        prev.roster, epoch=prev.epoch + 1, author_user_id=author.user_id, body=body
    )
    d = author.devices[device]
    return seal_entry(
        author_seed=d.dsk_seed,
        case_id=prev.case_id,
        epoch=prev.epoch + 1,
        prev_hash=prev.entry_hash(),
        author_user_id=author.user_id,
        author_device_id=d.device_id,
        created_ms=T0,
        action=action_for(body),
        action_body=body.encode(),
        roster=roster,
        epoch_key=seed("k"),
        epk_secret=seed("epk"),
    )


# --- round trips ---------------------------------------------------------------


def test_chain_builds_and_verifies() -> None:
    chain = team()
    assert verify_chain(chain) == chain
    assert [e.epoch for e in chain] == [0, 1, 2, 3]
    assert [u.role for u in chain[-1].roster.users] == [
        Role.OWNER,
        Role.MEMBER,
        Role.PATIENT,
        Role.ADMIN,
    ]


def test_entry_bytes_and_wire_round_trip() -> None:
    e = team()[-1]
    assert LogEntry.decode(e.encode()) == e
    assert LogEntry.from_wire(e.to_wire()) == e
    with pytest.raises(CryptoError) as exc:
        LogEntry.decode(e.encode() + b"\x00")
    assert exc.value.code == "bad_length"


def test_every_roster_device_can_open_its_wrap() -> None:
    e0 = genesis()
    entry, k = build_entry(
        e0,
        add(BOB, Role.MEMBER),
        author_seed=ALICE.d.dsk_seed,
        author_user_id=ALICE.user_id,
        author_device_id=ALICE.d.device_id,
        created_ms=T0,
    )
    for p in (ALICE, BOB):
        for d in p.devices:
            assert open_wrap(entry, d.device_id, d.dxk_secret) == k


def test_epoch_key_is_fresh_per_entry() -> None:
    a, b = team()[1:3]
    ka = open_wrap(a, ALICE.d.device_id, ALICE.d.dxk_secret)
    kb = open_wrap(b, ALICE.d.device_id, ALICE.d.dxk_secret)
    assert ka != kb


# --- chain position ------------------------------------------------------------


def test_wrong_prev_hash_is_stale_head() -> None:
    e1 = team()[1]
    bad = resign(forged(e1, ALICE, RotateBody()), ALICE, prev_hash=bytes(64))
    assert refused(e1, bad) == "stale_head"


def test_wrong_epoch_rejected() -> None:
    e1 = team()[1]
    assert refused(e1, resign(forged(e1, ALICE, RotateBody()), ALICE, epoch=5)) == "wrong_epoch"


def test_genesis_must_be_epoch_zero_create() -> None:
    e0 = genesis()
    assert refused(None, resign(e0, ALICE, epoch=1)) == "wrong_epoch"
    assert refused(None, resign(e0, ALICE, prev_hash=b"\x01" * 64)) == "stale_head"


def test_entry_for_another_case_rejected() -> None:
    e1 = team()[1]
    other = resign(forged(e1, ALICE, RotateBody()), ALICE, case_id=uuid.uuid4())
    assert refused(e1, other) == "wrong_case"


def test_concurrent_entries_one_wins() -> None:
    e1 = team()[1]
    a = forged(e1, ALICE, RotateBody())
    b = forged(e1, DAVE, RotateBody())
    verify_entry(e1, a)
    verify_entry(e1, b)
    # Once `a` is the head, `b` (built on e1) is stale and must be rebuilt.
    assert refused(a, b) == "wrong_epoch"
    rebuilt = forged(a, DAVE, RotateBody())
    verify_entry(a, rebuilt)


def test_fork_detected() -> None:
    e0, e1 = team()[:2]
    fork = forged(e0, ALICE, add(BOB, Role.MEMBER))
    with pytest.raises(CryptoError) as e:
        verify_chain([e0, e1, fork])
    assert e.value.code == "fork"
    with pytest.raises(CryptoError) as e:
        check_fork(e1, fork)
    assert e.value.code == "fork"
    check_fork(e1, e1)  # the same entry twice is not a fork


def test_chain_gap_rejected() -> None:
    chain = team()
    with pytest.raises(CryptoError) as e:
        verify_chain([chain[0], chain[2]])
    assert e.value.code == "wrong_epoch"


def test_chain_from_trusted_head() -> None:
    chain = team()
    assert verify_chain(chain[2:], trusted_head=chain[1]) == chain[2:]


# --- signature and structure -----------------------------------------------------


def test_tampered_entry_signature_rejected() -> None:
    e1 = team()[1]
    e2 = forged(e1, ALICE, RotateBody())
    assert refused(e1, dataclasses.replace(e2, created_ms=e2.created_ms + 1)) == "bad_signature"


def test_non_canonical_entry_signature_rejected() -> None:
    from collab.crypto.primitives import L

    e1 = team()[1]
    e2 = forged(e1, ALICE, RotateBody())
    s = (int.from_bytes(e2.signature[32:], "little") + L).to_bytes(32, "little")
    assert (
        refused(e1, dataclasses.replace(e2, signature=e2.signature[:32] + s))
        == "non_canonical_signature"
    )


def test_author_device_not_in_previous_roster_rejected() -> None:
    e1 = team()[1]
    stranger = person("mallory", 9)
    bad = resign(
        forged(e1, ALICE, RotateBody()),
        stranger,
        author_user_id=stranger.user_id,
        author_device_id=stranger.d.device_id,
    )
    assert refused(e1, bad) == "unauthorized_author"


def test_author_device_of_another_user_rejected() -> None:
    e1 = team()[1]
    bad = resign(forged(e1, ALICE, RotateBody()), ALICE, author_user_id=DAVE.user_id)
    assert refused(e1, bad) == "unauthorized_author"


def test_roster_mismatch_rejected() -> None:
    e1 = team()[1]
    sneaky = forged(e1, ALICE, add(BOB, Role.MEMBER))
    as_rotate = resign(sneaky, ALICE, action=Action.ROTATE, action_body=b"")
    assert refused(e1, as_rotate) == "roster_mismatch"


def test_role_escalation_in_roster_rejected() -> None:
    e2 = team()[2]
    e3 = forged(e2, ALICE, RotateBody())
    users = tuple(
        dataclasses.replace(u, role=Role.OWNER) if u.user_id == BOB.user_id else u
        for u in e3.roster.users
    )
    bad = resign(e3, ALICE, roster=dataclasses.replace(e3.roster, users=users))
    assert refused(e2, bad) == "roster_mismatch"


def test_missing_wrap_rejected() -> None:
    e1 = team()[1]
    e2 = forged(e1, ALICE, RotateBody())
    assert refused(e1, resign(e2, ALICE, wraps=e2.wraps[1:])) == "wraps_mismatch"


def test_extra_wrap_rejected() -> None:
    e1 = team()[1]
    e2 = forged(e1, ALICE, RotateBody())
    assert refused(e1, resign(e2, ALICE, wraps=(*e2.wraps, e2.wraps[0]))) == "wraps_mismatch"


def test_wraps_out_of_roster_order_rejected() -> None:
    e1 = team()[1]
    e2 = forged(e1, ALICE, RotateBody())
    assert refused(e1, resign(e2, ALICE, wraps=tuple(reversed(e2.wraps)))) == "wraps_mismatch"


def test_key_commit_mismatch_detected_on_open() -> None:
    e1 = team()[1]
    e2 = forged(e1, ALICE, RotateBody())
    bad = resign(e2, ALICE, key_commit=key_commit(bytes(32), CASE_ID, e2.epoch))
    verify_entry(e1, bad)  # the server cannot tell without a key
    with pytest.raises(CryptoError) as e:
        open_wrap(bad, ALICE.d.device_id, ALICE.d.dxk_secret)
    assert e.value.code == "key_commit_mismatch"


def test_wrap_bound_to_recipient_device() -> None:
    e1 = team()[1]
    e2 = forged(e1, ALICE, RotateBody())
    swapped = (dataclasses.replace(e2.wraps[0], ciphertext=e2.wraps[1].ciphertext), *e2.wraps[1:])
    with pytest.raises(CryptoError) as e:
        open_wrap(resign(e2, ALICE, wraps=swapped), e2.wraps[0].device_id, ALICE.d.dxk_secret)
    assert e.value.code == "decrypt_failed"


def test_device_certificate_from_wrong_uik_rejected() -> None:
    e1 = team()[1]
    rogue = make_device_cert(
        BOB.uik_seed, ALICE.user_id, fixed_uuid(0x1FF), BOB.d.dsk_pub, BOB.d.dxk_pub, NOT_BEFORE_MS
    )
    assert refused(e1, forged(e1, ALICE, AddDeviceBody(rogue))) == "bad_certificate"


def test_low_order_dxk_in_certificate_rejected() -> None:
    with pytest.raises(CryptoError) as e:
        make_device_cert(
            ALICE.uik_seed,
            ALICE.user_id,
            fixed_uuid(0x1FE),
            ALICE.d.dsk_pub,
            bytes(32),
            NOT_BEFORE_MS,
        )
    assert e.value.code == "low_order_key"


# --- authorisation -------------------------------------------------------------


def test_patient_cannot_add_user() -> None:
    e3 = team()[3]
    assert (
        refused(e3, forged(e3, CAROL, add(person("erin", 5), Role.MEMBER))) == "unauthorized_author"
    )


def test_member_cannot_add_user() -> None:
    e3 = team()[3]
    assert (
        refused(e3, forged(e3, BOB, add(person("erin", 5), Role.MEMBER))) == "unauthorized_author"
    )


def test_admin_can_add_user_but_not_an_owner() -> None:
    e3 = team()[3]
    erin = person("erin", 5)
    verify_entry(e3, forged(e3, DAVE, add(erin, Role.MEMBER)))
    assert refused(e3, forged(e3, DAVE, add(erin, Role.OWNER))) == "unauthorized_author"
    verify_entry(e3, forged(e3, ALICE, add(erin, Role.OWNER)))


def test_member_cannot_remove_user() -> None:
    e3 = team()[3]
    assert refused(e3, forged(e3, BOB, RemoveUserBody(CAROL.user_id))) == "unauthorized_author"


def test_admin_cannot_remove_owner() -> None:
    e3 = team()[3]
    assert refused(e3, forged(e3, DAVE, RemoveUserBody(ALICE.user_id))) == "unauthorized_author"


def test_owner_removes_member() -> None:
    e3 = team()[3]
    e4 = forged(e3, ALICE, RemoveUserBody(BOB.user_id))
    verify_entry(e3, e4)
    assert e4.roster.user(BOB.user_id) is None
    assert all(w.device_id != BOB.d.device_id for w in e4.wraps)


def test_entry_by_removed_member_is_refused() -> None:
    e3 = team()[3]
    e4 = forged(e3, ALICE, RemoveUserBody(BOB.user_id))
    assert refused(e4, _by(e4, BOB)) == "unauthorized_author"


def _by(prev: LogEntry, author: Person) -> LogEntry:
    """A rotate signed by `author` regardless of whether they may."""
    e = forged(prev, ALICE, RotateBody())
    return resign(e, author, author_user_id=author.user_id, author_device_id=author.d.device_id)


def test_removed_member_never_authors_the_removal() -> None:
    e3 = team()[3]
    # The admin removing themselves would author the key they are removed from.
    assert refused(e3, forged(e3, DAVE, RemoveUserBody(DAVE.user_id))) == "unauthorized_author"


def test_author_cannot_remove_own_authoring_device() -> None:
    e3 = team()[3]
    body = RemoveDeviceBody(ALICE.user_id, ALICE.devices[0].device_id)
    assert refused(e3, forged(e3, ALICE, body)) == "unauthorized_author"
    verify_entry(e3, forged(e3, ALICE, body, device=1))


def test_patient_leaves_via_signed_request_committed_by_member() -> None:
    e3 = team()[3]
    leave = sign_leave(CAROL.d.dsk_seed, CASE_ID, CAROL.user_id, CAROL.d.device_id, e3.epoch)
    e4 = forged(e3, BOB, RemoveUserBody(CAROL.user_id, leave))
    verify_entry(e3, e4)
    assert e4.roster.user(CAROL.user_id) is None


def test_forged_leave_request_rejected() -> None:
    e3 = team()[3]
    leave = sign_leave(BOB.d.dsk_seed, CASE_ID, CAROL.user_id, CAROL.d.device_id, e3.epoch)
    assert refused(e3, forged(e3, BOB, RemoveUserBody(CAROL.user_id, leave))) == "bad_signature"


def test_leave_request_from_before_readmission_rejected() -> None:
    e3 = team()[3]
    # Carol was added at epoch 3; a request signed at epoch 2 predates her membership.
    leave = sign_leave(CAROL.d.dsk_seed, CASE_ID, CAROL.user_id, CAROL.d.device_id, 2)
    assert (
        refused(e3, forged(e3, BOB, RemoveUserBody(CAROL.user_id, leave))) == "unauthorized_author"
    )


def test_patient_cannot_remove_another_user() -> None:
    e3 = team()[3]
    assert refused(e3, forged(e3, CAROL, RemoveUserBody(BOB.user_id))) == "unauthorized_author"


def _new_device(p: Person, n: int) -> AddDeviceBody:
    dsk, dxk = seed(f"{p.name}/new{n}/dsk"), seed(f"{p.name}/new{n}/dxk")
    from collab.crypto import ed25519_public, x25519_public

    cert = make_device_cert(
        p.uik_seed,
        p.user_id,
        fixed_uuid(0x900 + n),
        ed25519_public(dsk),
        x25519_public(dxk),
        NOT_BEFORE_MS,
    )
    return AddDeviceBody(cert)


def test_user_adds_own_device() -> None:
    e3 = team()[3]
    verify_entry(e3, forged(e3, CAROL, _new_device(CAROL, 1)))


def test_user_cannot_add_device_for_another_user() -> None:
    e3 = team()[3]
    # Even the owner, even with a certificate genuinely signed by Carol's UIK.
    assert refused(e3, forged(e3, ALICE, _new_device(CAROL, 1))) == "unauthorized_author"


def test_user_cannot_remove_device_of_another_user() -> None:
    e3 = team()[3]
    body = RemoveDeviceBody(ALICE.user_id, ALICE.devices[1].device_id)
    assert refused(e3, forged(e3, BOB, body)) == "unauthorized_author"


def test_admin_revokes_member_device_but_not_owner_device() -> None:
    e3 = team()[3]
    e4 = forged(e3, CAROL, _new_device(CAROL, 1))
    verify_entry(e3, e4)
    verify_entry(e4, forged(e4, DAVE, RemoveDeviceBody(CAROL.user_id, CAROL.d.device_id)))
    body = RemoveDeviceBody(ALICE.user_id, ALICE.devices[1].device_id)
    assert refused(e4, forged(e4, DAVE, body)) == "unauthorized_author"


def test_user_must_keep_a_device() -> None:
    e3 = team()[3]
    e4 = forged(e3, DAVE, RemoveDeviceBody(CAROL.user_id, CAROL.d.device_id))
    assert refused(e3, e4) == "bad_roster"


def test_any_member_may_rotate() -> None:
    e3 = team()[3]
    for p in (ALICE, DAVE, BOB, CAROL):
        verify_entry(e3, forged(e3, p, RotateBody()))


def test_set_role_rules() -> None:
    e3 = team()[3]
    verify_entry(e3, forged(e3, DAVE, SetRoleBody(BOB.user_id, Role.ADMIN)))
    assert (
        refused(e3, forged(e3, BOB, SetRoleBody(BOB.user_id, Role.ADMIN))) == "unauthorized_author"
    )
    assert (
        refused(e3, forged(e3, DAVE, SetRoleBody(DAVE.user_id, Role.OWNER)))
        == "unauthorized_author"
    )
    assert (
        refused(e3, forged(e3, DAVE, SetRoleBody(ALICE.user_id, Role.MEMBER)))
        == "unauthorized_author"
    )


def test_last_owner_cannot_step_down() -> None:
    e3 = team()[3]
    assert refused(e3, forged(e3, ALICE, SetRoleBody(ALICE.user_id, Role.ADMIN))) == "bad_roster"


def test_create_only_at_genesis() -> None:
    e1 = team()[1]
    body = CreateBody(ALICE.uik_pub, tuple(d.cert for d in ALICE.devices))
    with pytest.raises(CryptoError) as e:
        forged(e1, ALICE, body)
    assert e.value.code == "bad_action"


def test_genesis_author_must_be_in_it() -> None:
    with pytest.raises(CryptoError) as e:
        build_entry(
            None,
            CreateBody(BOB.uik_pub, (BOB.d.cert,)),
            author_seed=ALICE.d.dsk_seed,
            author_user_id=ALICE.user_id,
            author_device_id=ALICE.d.device_id,
            created_ms=T0,
            case_id=CASE_ID,
        )
    assert e.value.code == "bad_action"


def test_non_canonical_action_body_rejected() -> None:
    e1 = team()[1]
    e2 = forged(e1, ALICE, RotateBody())
    assert refused(e1, resign(e2, ALICE, action_body=b"\x00")) == "bad_action"


# --- history -------------------------------------------------------------------


def test_share_history_gives_earlier_keys_to_new_devices() -> None:
    chain = team()
    keys = {e.epoch: open_wrap(e, ALICE.d.device_id, ALICE.d.dxk_secret) for e in chain}
    body = make_history_body(CASE_ID, [(CAROL.d.cert, 1, keys[1]), (CAROL.d.cert, 2, keys[2])])
    e4 = forged(chain[3], DAVE, body)
    verify_entry(chain[3], e4)
    got = open_history(e4, CAROL.d.device_id, CAROL.d.dxk_secret, {e.epoch: e for e in chain})
    assert got == {1: keys[1], 2: keys[2]}


def test_history_with_wrong_key_detected() -> None:
    chain = team()
    body = make_history_body(CASE_ID, [(CAROL.d.cert, 1, bytes(32))])
    e4 = forged(chain[3], DAVE, body)
    with pytest.raises(CryptoError) as e:
        open_history(e4, CAROL.d.device_id, CAROL.d.dxk_secret, {e.epoch: e for e in chain})
    assert e.value.code == "key_commit_mismatch"


def test_member_cannot_share_history() -> None:
    chain = team()
    body = make_history_body(CASE_ID, [(CAROL.d.cert, 1, bytes(32))])
    assert refused(chain[3], forged(chain[3], BOB, body)) == "unauthorized_author"
