"""The SDK and CLI trust people, not the server: live daphne, and the operator playing
tricks by writing to the database (a swapped identity key, a roster naming the viewer
under a foreign key, a key wrap nobody can open, an injected join request, a rolled-back
or re-signed pin book). Each attack has an honest twin that goes through."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from collab.accounts.models import IdentityPins
from collab.cases import models as m
from collab.client.errors import AdmissionRefusedError, IdentityChangedError, UsageError
from collab.client.keys import Identity
from collab.client.pins import PinBook
from collab.client.sdk import CollabClient
from collab.crypto import primitives as prim
from collab.crypto.actions import Action, RotateBody, apply_action
from collab.crypto.errors import CryptoError
from collab.crypto.invite import short_code
from collab.crypto.log import WRAP_CT_LEN, LogEntry, Wrap, seal_entry
from collab.crypto.pins import seal_pins, sign_pins
from collab.crypto.roster import Role
from collab.crypto.safety import safety_number
from collab.crypto.wire import b64e
from tests.support.clients import (
    PASS,
    IdentitySwap,
    invited_patient,
    new_member,
    reload,
    run_cli,
    signed_in,
)
from tests.support.live import daphne_servers
from tests.support.users import make_user

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker) -> Iterator[str]:
    with django_db_blocker.unblock(), daphne_servers(1) as urls:
        yield urls[0]


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLLAB_PASSPHRASE", PASS)
    monkeypatch.delenv("COLLAB_SERVER", raising=False)


def home_of(client: CollabClient) -> str:
    assert client.store is not None
    return str(client.store.path.parent)


def epochs(case_id: uuid.UUID) -> list[int]:
    return sorted(m.LogEntry.objects.filter(case_id=case_id).values_list("epoch", flat=True))


def roster_users(client: CollabClient, case_id: uuid.UUID) -> set[uuid.UUID]:
    return {u.user_id for u in client.sync(case_id).head.roster.users}


def send(client: CollabClient, case_id: uuid.UUID, *texts: str) -> list[int]:
    async def go() -> list[int]:
        return [(await client.send_text(case_id, t)).epoch for t in texts]

    return asyncio.run(go())


# --- (a) a swapped identity key is refused before anything is signed -----------------

def test_swapped_identity_key_is_refused_and_nothing_is_committed(
        server: str, tmp_path: Path, cli_env: None) -> None:
    pcp = new_member(server, "pcp", tmp_path)
    derm = new_member(server, "derm", tmp_path, specialty="Dermatology")
    first = pcp.open_case()
    pcp.add_member(first, derm.user_id)  # derm's real key is pinned now
    second = pcp.open_case()

    swap = IdentitySwap(derm.user_id).apply()
    with pytest.raises(IdentityChangedError) as refused:
        pcp.add_member(second, derm.user_id)
    (change,) = refused.value.changes
    assert change.user == derm.user_id
    assert (change.old_uik, change.new_uik) == (derm.identity.uik_pub, swap.identity.uik_pub)
    assert change.cases == (second,) and change.old_safety != change.new_safety
    assert list(change.old_safety) == safety_number(pcp.user_id, pcp.identity.uik_pub,
                                                    derm.user_id, derm.identity.uik_pub)
    assert epochs(second) == [0]

    # The CLI says who changed, both safety numbers and the case, exits 4, commits nothing.
    code, out, err = run_cli("--home", home_of(pcp), "add", str(second), str(derm.user_id))
    assert code == 4, err
    assert "Derm's identity key changed" in err
    assert " ".join(change.old_safety[:6]) in err and " ".join(change.new_safety[:6]) in err
    assert str(second) in err
    assert epochs(second) == [0]
    # The change is on record for `identities` (with both numbers), and still refused.
    code, out, err = run_cli("--home", home_of(pcp), "identities")
    assert code == 0 and "Derm's identity key changed" in out, err
    pcp = reload(pcp)
    with pytest.raises(IdentityChangedError):
        pcp.add_member(second, derm.user_id)
    assert epochs(second) == [0]

    # Honest twins: the real key goes in; so does someone never seen before.
    swap.undo()
    assert pcp.add_member(second, derm.user_id).epoch == 1
    neuro = new_member(server, "neuro", tmp_path, specialty="Neurology")
    code, out, err = run_cli("--home", home_of(pcp), "add", str(second), str(neuro.user_id))
    assert code == 0 and "epoch 2" in out, err
    assert pcp.pins.state(derm.user_id, derm.identity.uik_pub) == "pinned"


def test_accepting_a_changed_identity_takes_the_new_key(server: str, tmp_path: Path,
                                                       cli_env: None) -> None:
    pcp = new_member(server, "pcp", tmp_path)
    derm = new_member(server, "derm", tmp_path)
    pcp.add_member(pcp.open_case(), derm.user_id)
    second = pcp.open_case()
    swap = IdentitySwap(derm.user_id).apply()
    code, _, err = run_cli("--home", home_of(pcp), "add", str(second), str(derm.user_id))
    assert code == 4 and "new key code" in err, err
    shown = " ".join(short_code(derm.user_id, swap.identity.uik_pub))
    assert shown in err
    # The attack: the person accepted the key with the code shown; the server now serves
    # yet another key. The acceptance names the key seen, so the add is refused.
    swap.undo()
    other = IdentitySwap(derm.user_id).apply()
    code, _, err = run_cli("--home", home_of(pcp), "add", str(second), str(derm.user_id),
                           "--accept-changed-identity", shown)
    assert code == 4 and "not the one you accepted" in err, err
    assert epochs(second) == [0]
    with pytest.raises(IdentityChangedError):
        reload(pcp).add_member(second, derm.user_id, accept_changed=swap.identity.uik_pub)
    # A flag instead of the key is refused outright.
    with pytest.raises(UsageError):
        reload(pcp).add_member(second, derm.user_id, accept_changed=True)  # type: ignore[arg-type]
    other.undo()
    # The honest twin: the key accepted is the key served and committed.
    swap.apply()
    code, _, err = run_cli("--home", home_of(pcp), "add", str(second), str(derm.user_id),
                           "--accept-changed-identity", shown.replace(" ", "-"))
    assert code == 0, err
    assert reload(pcp).pins.state(derm.user_id, swap.identity.uik_pub) == "pinned"
    added = reload(pcp).sync(second).head.roster.user(derm.user_id)
    assert added is not None and added.uik_pub == swap.identity.uik_pub
    swap.undo()


def test_sending_is_blocked_in_a_case_whose_roster_holds_a_changed_key(
        server: str, tmp_path: Path, cli_env: None) -> None:
    pcp = new_member(server, "pcp", tmp_path)
    derm = new_member(server, "derm", tmp_path)
    neuro = new_member(server, "neuro", tmp_path)
    mine = pcp.open_case()
    pcp.add_member(mine, derm.user_id)  # pcp pins derm's real key
    # neuro has never seen derm: the operator's key fools neuro's client into adding it
    # to neuro's case, where pcp is a member too.
    theirs = neuro.open_case()
    neuro.add_member(theirs, pcp.user_id, Role.ADMIN)
    swap = IdentitySwap(derm.user_id).apply()
    neuro.add_member(theirs, derm.user_id)
    swap.undo()

    assert pcp.blocking(theirs) == [derm.user_id]  # reading works; the change is recorded
    assert pcp.history(theirs) == []
    with pytest.raises(IdentityChangedError) as refused:
        send(pcp, theirs, "for whoever holds that key")
    assert refused.value.changes[0].cases == (theirs,)
    code, _, err = run_cli("--home", home_of(pcp), "send", str(theirs), "still blocked")
    assert code == 4 and "Derm's identity key changed" in err and str(theirs) in err
    assert m.Message.objects.filter(case_id=theirs).count() == 0
    # Twin: the case with derm's pinned key is not affected.
    assert send(pcp, mine, "fine here") == [1]
    # One explicit decision (after comparing numbers) lifts the block.
    pending = reload(pcp).pins.get(derm.user_id)
    assert pending is not None and pending.changed is not None
    # A code of another key (here derm's real one) accepts nothing.
    real = " ".join(short_code(derm.user_id, derm.identity.uik_pub))
    code, out, err = run_cli("--home", home_of(pcp), "accept-identity", str(derm.user_id),
                             " ".join(short_code(derm.user_id, pending.changed.uik))[:5])
    assert code == 1 and "(bad_key_code)" in err, err
    code, out, err = run_cli("--home", home_of(pcp), "accept-identity", str(derm.user_id),
                             "".join(short_code(derm.user_id, pending.uik)))
    assert code == 1 and "(key_mismatch)" in err, err
    assert real != " ".join(short_code(derm.user_id, pending.changed.uik))
    code, out, err = run_cli("--home", home_of(pcp), "accept-identity", str(derm.user_id),
                             " ".join(short_code(derm.user_id, pending.changed.uik)))
    assert code == 0 and "accepted the new identity key of Derm" in out, err
    assert send(reload(pcp), theirs, "accepted") == [2]


# --- (b) a roster naming the viewer under a foreign key fails closed --------------------

def test_roster_with_a_foreign_key_for_the_viewer_fails_closed(
        server: str, tmp_path: Path, cli_env: None) -> None:
    pcp = new_member(server, "pcp", tmp_path)
    derm = new_member(server, "derm", tmp_path)
    neuro = new_member(server, "neuro", tmp_path)
    case_id = pcp.open_case()
    # pcp has never seen derm: the operator's key is taken on first use and signed in.
    swap = IdentitySwap(derm.user_id).apply()
    pcp.add_member(case_id, derm.user_id)
    swap.undo()
    for client in (derm, reload(derm)):
        with pytest.raises(CryptoError) as mismatch:
            client.sync(case_id)
        assert mismatch.value.code == "own_identity_mismatch"
        with pytest.raises(CryptoError):
            client.history(case_id)
    code, _, err = run_cli("--home", home_of(derm), "history", str(case_id))
    assert code == 4 and "(own_identity_mismatch)" in err

    # Honest twin: a roster with the viewer's own key passes.
    honest = pcp.open_case()
    pcp.add_member(honest, derm.user_id, accept_changed=derm.identity.uik_pub)
    pcp.add_member(honest, neuro.user_id)
    for client in (derm, neuro):
        assert client.sync(honest).head.roster.user(client.user_id) is not None
        assert client.history(honest) == []


# --- (c) a key wrap nobody can open costs its epoch only ---------------------------------

def rotate_with_a_bad_wrap(author: CollabClient, case_id: uuid.UUID,
                           victim_device: uuid.UUID) -> LogEntry:
    """A validly signed rotate whose wrap for ``victim_device`` is random bytes."""
    prev = author.sync(case_id).head
    epoch = prev.epoch + 1
    roster = apply_action(prev.roster, epoch=epoch, author_user_id=author.user_id,
                          body=RotateBody())
    honest = seal_entry(
        author_seed=author.device.dsk_seed, case_id=case_id, epoch=epoch,
        prev_hash=prev.entry_hash(), author_user_id=author.user_id,
        author_device_id=author.device.device_id, created_ms=prev.created_ms + 1,
        action=Action.ROTATE, action_body=b"", roster=roster,
        epoch_key=prim.random_bytes(32), epk_secret=prim.random_bytes(32),
    )
    wraps = tuple(Wrap(w.device_id, prim.random_bytes(WRAP_CT_LEN))
                  if w.device_id == victim_device else w for w in honest.wraps)
    tampered = dataclasses.replace(honest, wraps=wraps)
    entry = dataclasses.replace(
        tampered, signature=prim.sign(author.device.dsk_seed, tampered.signed_bytes()))
    author.call("POST", f"/api/cases/{case_id}/log", {"entry": b64e(entry.encode())})
    return entry


def test_bad_wrap_leaves_other_epochs_readable_and_sending_rotates(
        server: str, tmp_path: Path, cli_env: None) -> None:
    pcp = new_member(server, "pcp", tmp_path)
    derm = new_member(server, "derm", tmp_path)
    case_id = pcp.open_case()
    pcp.add_member(case_id, derm.user_id)
    assert send(pcp, case_id, "before") == [1]

    bad = rotate_with_a_bad_wrap(derm, case_id, pcp.device.device_id)
    assert send(derm, case_id, "during") == [bad.epoch]

    for reader in (pcp, reload(pcp)):
        got = reader.history(case_id)
        assert [r.text for r in got] == ["before", ""]
        assert got[0].unavailable is None
        assert got[1].unavailable_author == derm.user_id and got[1].body == {}
        assert got[1].unavailable is not None and str(derm.user_id) in got[1].unavailable
        assert reader.cases[case_id].unavailable == {bad.epoch: derm.user_id}
    code, out, err = run_cli("--home", home_of(pcp), "history", str(case_id))
    assert code == 0, err
    assert "before" in out and "the key in the entry by Derm could not be opened" in out
    code, out, err = run_cli("--home", home_of(pcp), "watch", str(case_id), "--after", "0",
                             "--count", "2", "--json", "--timeout", "10")
    assert code == 0, err
    watched = [json.loads(line) for line in out.splitlines()]
    assert watched[0]["body"] == {"text": "before"} and watched[0]["unavailable"] is None
    assert watched[1]["body"] == {} and watched[1]["unavailable_author"] == str(derm.user_id)

    # Sending from the device without the head key commits a fresh key first.
    pcp = reload(pcp)
    assert send(pcp, case_id, "after") == [bad.epoch + 1]
    assert pcp.sync(case_id).head.action == Action.ROTATE
    assert [r.text for r in derm.history(case_id)] == ["before", "during", "after"]
    assert [r.text for r in reload(pcp).history(case_id)] == ["before", "", "after"]

    # Honest twin: a normal rotate is readable by everyone.
    entry = derm._commit(case_id, lambda _state: RotateBody())
    assert send(derm, case_id, "rotated") == [entry.epoch]
    assert [r.text for r in reload(pcp).history(case_id)][-1] == "rotated"


# --- (d) an injected join request is never committed but by an explicit admit -----------

def test_injected_join_request_is_committed_only_by_admit(server: str, tmp_path: Path,
                                                          cli_env: None) -> None:
    pcp = new_member(server, "pcp", tmp_path)
    derm = new_member(server, "derm", tmp_path)
    mallory = new_member(server, "mallory", tmp_path)
    neuro = new_member(server, "neuro", tmp_path)
    case_id = pcp.open_case()
    pcp.add_member(case_id, derm.user_id)
    m.JoinRequest.objects.create(case_id=case_id, user_id=mallory.user_id,
                                 requested_by_id=mallory.user_id, kind=m.JoinKind.CLAIM)

    # Everything a member's client does in the case leaves the request alone.
    for client in (pcp, reload(pcp), derm):
        client.sync(case_id)
        client.history(case_id)
        send(client, case_id, "hello")
    listed = pcp.join_requests(case_id)
    assert [(r.user, r.kind, r.pin) for r in listed] == [(mallory.user_id, "claim", "new")]
    # A request naming someone without keys is listed as such; it hides nothing else.
    keyless = make_user("keyless")
    m.JoinRequest.objects.create(case_id=case_id, user=keyless, requested_by=keyless,
                                 kind=m.JoinKind.CLAIM)
    problems = {r.user: r.problem for r in pcp.join_requests(case_id)}
    assert problems == {mallory.user_id: None, keyless.pk: "no_identity"}
    code, _, err = run_cli("--home", home_of(pcp), "admit", str(case_id), str(keyless.pk))
    assert code == 1 and "(no_identity)" in err
    pcp.add_member(case_id, neuro.user_id)
    pcp.adopt_devices(case_id)
    for argv in (["join-requests", str(case_id)], ["history", str(case_id)],
                 ["send", str(case_id), "still here"],
                 ["watch", str(case_id), "--after", "0", "--count", "1", "--timeout", "5"]):
        code, out, err = run_cli("--home", home_of(pcp), *argv)
        assert code == 0, (argv, err)
        if argv[0] == "join-requests":
            assert str(mallory.user_id) in out and "claims the consult" in out
            assert "identity key: NEW" in out  # listing records nothing
    assert reload(pcp).pins.get(mallory.user_id) is None
    assert mallory.user_id not in roster_users(pcp, case_id)
    assert not m.Member.objects.filter(case_id=case_id, user_id=mallory.user_id).exists()

    # Only the explicit decision admits.
    code, out, err = run_cli("--home", home_of(pcp), "admit", str(case_id),
                             str(mallory.user_id))
    assert code == 0 and "admitted" in out, err
    assert mallory.user_id in roster_users(reload(pcp), case_id)
    assert reload(pcp).pins.state(mallory.user_id, mallory.identity.uik_pub) == "pinned"


def test_declined_request_is_gone_and_withdraw_takes_back_ones_own(
        server: str, tmp_path: Path, cli_env: None) -> None:
    pcp = new_member(server, "pcp", tmp_path)
    derm = new_member(server, "derm", tmp_path, specialty="Dermatology")
    case_id = pcp.open_case(specialty="Dermatology")
    derm.call("POST", f"/api/cases/{case_id}/join-requests", {"kind": "claim"})
    code, out, err = run_cli("--home", home_of(pcp), "decline", str(case_id),
                             str(derm.user_id), "--reason", "covered already")
    assert code == 0, err
    assert pcp.join_requests(case_id) == []
    assert derm.user_id not in roster_users(pcp, case_id)

    other = pcp.open_case(specialty="Dermatology")
    derm.call("POST", f"/api/cases/{other}/join-requests", {"kind": "claim"})
    code, out, err = run_cli("--home", home_of(derm), "withdraw", str(other))
    assert code == 0 and out.startswith("withdrew"), err
    assert pcp.join_requests(other) == []
    code, _out, err = run_cli("--home", home_of(derm), "withdraw", str(other))
    assert code == 1 and "(no_join_request)" in err


# --- (e) pins follow the user; the server can neither roll them back nor forge them --------

def test_pins_follow_the_user_and_the_server_can_neither_roll_back_nor_forge_them(
        server: str, tmp_path: Path, cli_env: None) -> None:
    pcp_user = make_user("pcp")
    pcp = signed_in(server, pcp_user, tmp_path / "one")
    recovery_key = pcp.init(device_name="first")
    derm = new_member(server, "derm", tmp_path)
    neuro = new_member(server, "neuro", tmp_path)
    case_id = pcp.open_case()
    pcp.add_member(case_id, derm.user_id)

    # Device 1 compares numbers with derm and marks the key verified.
    code, out, err = run_cli("--home", home_of(pcp), "verify", str(derm.user_id), "--case",
                             str(case_id))
    assert code == 0 and "--confirm" in out, err
    assert reload(pcp).pins.state(derm.user_id, derm.identity.uik_pub) == "pinned"
    derm_code = " ".join(short_code(derm.user_id, derm.identity.uik_pub))
    assert derm_code in out
    code, out, err = run_cli("--home", home_of(pcp), "verify", str(derm.user_id), "--case",
                             str(case_id), "--confirm", "00000 00000 00000 00000")
    assert code == 1 and "(key_mismatch)" in err, err
    assert reload(pcp).pins.state(derm.user_id, derm.identity.uik_pub) == "pinned"
    code, out, err = run_cli("--home", home_of(pcp), "verify", str(derm.user_id), "--case",
                             str(case_id), "--confirm", derm_code)
    assert code == 0 and "Derm verified" in out, err
    stored = IdentityPins.objects.get(user=pcp_user)
    assert derm.identity.uik_pub not in bytes(stored.blob)  # sealed

    # Device 2, recovered with the recovery key, sees the verification at once.
    second = signed_in(server, pcp_user, tmp_path / "two", offset_steps=1)
    second.recover(recovery_key, device_name="second")
    assert second.pins.state(derm.user_id, derm.identity.uik_pub) == "verified"
    code, out, err = run_cli("--home", home_of(second), "identities")
    assert code == 0 and f"{derm.user_id} Derm VERIFIED" in out, err

    # A later change from device 2 (neuro first seen) is the next version ...
    old = IdentityPins.objects.get(user=pcp_user)
    second.user_keys(neuro.user_id)
    latest = IdentityPins.objects.get(user=pcp_user)
    assert latest.version == old.version + 1 == second.state.pins_version

    # ... and the server serving the older, validly signed one is a rollback.
    IdentityPins.objects.filter(user=pcp_user).update(
        version=old.version, blob=bytes(old.blob), sig=bytes(old.sig))
    for client in (second, reload(second)):
        with pytest.raises(CryptoError) as rolled_back:
            client.sync_pins()
        assert rolled_back.value.code == "rollback"
    code, _, err = run_cli("--home", home_of(second), "identities")
    assert code == 4 and "(rollback)" in err

    # A newer version signed by any other key is refused too.
    forger = Identity.generate(pcp_user.pk)
    blob = seal_pins(forger.uik_seed, json.dumps(PinBook().document()).encode())
    forged_version = latest.version + 1
    IdentityPins.objects.filter(user=pcp_user).update(
        version=forged_version, blob=blob,
        sig=sign_pins(forger.uik_seed, pcp_user.pk, forged_version, blob))
    with pytest.raises(CryptoError) as forged:
        reload(second).sync_pins()
    assert forged.value.code == "bad_signature"
    code, _, err = run_cli("--home", home_of(pcp), "identities")
    assert code == 4 and "(bad_signature)" in err
    assert reload(second).pins.state(derm.user_id, derm.identity.uik_pub) == "verified"

    # Honest twin: the real latest book syncs again on both devices.
    IdentityPins.objects.filter(user=pcp_user).update(
        version=latest.version, blob=bytes(latest.blob), sig=bytes(latest.sig))
    again = reload(pcp)
    again.sync_pins()
    assert again.pins.state(neuro.user_id, neuro.identity.uik_pub) == "pinned"
    assert again.pins.state(derm.user_id, derm.identity.uik_pub) == "verified"


# --- patients: bound by the link's secret, or admitted after comparing the short code ------

def test_patient_bound_by_the_link_is_admitted_unbound_needs_the_code(
        server: str, tmp_path: Path, cli_env: None) -> None:
    pcp = new_member(server, "pcp", tmp_path)
    case_id = pcp.open_case()
    code, out, err = run_cli("--home", home_of(pcp), "invite", str(case_id))
    assert code == 0, err
    found = re.search(r"^  (\S+#k=[A-Za-z0-9_-]{43})$", out, re.M)
    assert found is not None, out
    link = found.group(1)
    secret_part = link.split("#k=", 1)[1]
    assert secret_part not in str(list(m.Invitation.objects.values()))  # never on the server

    pat = invited_patient(server, link, "pat", tmp_path)
    (request,) = pcp.join_requests(case_id)
    assert (request.user, request.kind, request.binding) == (pat.user_id, "patient", "unbound")
    assert request.short_code == tuple(short_code(pat.user_id, pat.identity.uik_pub))
    with pytest.raises(AdmissionRefusedError) as refused:
        pcp.admit(case_id, pat.user_id)
    assert refused.value.blockers == ("patient_unbound",)
    code, out, err = run_cli("--home", home_of(pcp), "admit", str(case_id), str(pat.user_id))
    assert code == 4 and "(patient_unbound)" in err
    assert epochs(case_id) == [0]

    # The patient's client proves the link: now bound, and admitted with the patient role.
    code, out, err = run_cli("--home", home_of(pat), "prove-invitation", link)
    assert code == 0 and "bound your identity key" in out, err
    code, out, err = run_cli("--home", home_of(pcp), "join-requests", str(case_id))
    assert code == 0 and "bound to this case's invitation link" in out, err
    code, out, err = run_cli("--home", home_of(pcp), "admit", str(case_id), str(pat.user_id))
    assert code == 0, err
    member = reload(pcp).sync(case_id).head.roster.user(pat.user_id)
    assert member is not None and member.role == Role.PATIENT
    assert [r.text for r in pat.history(case_id)] == []


def test_unbound_patient_is_admitted_after_comparing_the_short_code(
        server: str, tmp_path: Path, cli_env: None) -> None:
    pcp = new_member(server, "pcp", tmp_path)
    case_id = pcp.open_case()
    answer = pcp.call("POST", f"/api/cases/{case_id}/invitations", {})  # no binding at all
    pat = invited_patient(server, answer["link"], "pat", tmp_path)
    (request,) = pcp.join_requests(case_id)
    assert request.binding == "unbound" and request.short_code is not None
    code, out, err = run_cli("--home", home_of(pcp), "join-requests", str(case_id))
    assert " ".join(request.short_code) in out and "--code-compared" in out
    code, out, err = run_cli("--home", home_of(pat), "whoami")  # what the patient reads out
    assert code == 0 and f"short code {' '.join(request.short_code)}" in out, err
    code, out, err = run_cli("--home", home_of(pcp), "admit", str(case_id), str(pat.user_id),
                             "--code-compared")
    assert code == 0, err
    assert pat.user_id in roster_users(reload(pcp), case_id)
