"""SDK trust decisions against a lying server (tests/client/fake_server.py): each attack
from the review with its honest twin."""

from __future__ import annotations

import pytest

from collab.client.errors import AdmissionRefusedError, IdentityChangedError, UsageError
from collab.client.sdk import key_code
from collab.crypto.roster import Role
from tests.client.fake_server import FakeServer, Person


@pytest.fixture
def srv() -> FakeServer:
    return FakeServer()


def test_accepting_a_change_binds_to_the_key_seen_not_the_one_served_later(
        srv: FakeServer) -> None:
    alice, bob = Person("alice"), Person("bob")
    case_id = srv.new_case(alice)
    client = srv.client(alice)
    client.pins.observe(bob.id, bob.identity.uik_pub, None, 1)  # met Bob before
    seen = bob.substitute()  # Bob reinstalled: key B, compared with him
    srv.keys[bob.id] = bob.keys(seen)
    srv.request(case_id, bob)
    (listed,) = client.join_requests(case_id)
    assert listed.pin == "changed" and listed.uik == seen.uik_pub
    served = bob.substitute()  # the server switches to C before the commit
    srv.keys[bob.id] = bob.keys(served)
    for choice in (seen.uik_pub, key_code(bob.id, seen.uik_pub)):
        with pytest.raises(IdentityChangedError) as refused:
            client.admit(case_id, bob.id, accept_changed=choice)
        assert "not the one you accepted" in str(refused.value)
    with pytest.raises(UsageError):
        client.admit(case_id, bob.id, accept_changed=True)  # type: ignore[arg-type]
    assert len(srv.logs[case_id]) == 1
    assert client.pins.state(bob.id, bob.identity.uik_pub) == "pinned"
    # The honest twin: the key seen is the key served, accepted by its code.
    srv.keys[bob.id] = bob.keys(seen)
    code = key_code(bob.id, seen.uik_pub).replace(" ", "-")
    entry = client.admit(case_id, bob.id, accept_changed=code)
    member = entry.roster.user(bob.id)
    assert member is not None and member.uik_pub == seen.uik_pub
    assert client.pins.state(bob.id, seen.uik_pub) == "pinned"


def test_accept_and_verify_name_the_key(srv: FakeServer) -> None:
    alice, bob = Person("alice"), Person("bob")
    client = srv.client(alice)
    client.pins.observe(bob.id, bob.identity.uik_pub, None, 1)
    other = bob.substitute()
    client.pins.observe(bob.id, other.uik_pub, None, 2)
    with pytest.raises(UsageError) as wrong:
        client.accept_identity(bob.id, bob.identity.uik_pub)
    assert wrong.value.code == "key_mismatch"
    with pytest.raises(UsageError) as short:
        client.accept_identity(bob.id, "12345 67890")
    assert short.value.code == "bad_key_code"
    assert client.accept_identity(bob.id, key_code(bob.id, other.uik_pub)) == other.uik_pub
    with pytest.raises(UsageError):
        client.verify_identity(bob.id, confirm=bob.identity.uik_pub)
    assert client.verify_identity(bob.id, confirm=other.uik_pub) == other.uik_pub
    assert client.pins.state(bob.id, other.uik_pub) == "verified"


@pytest.mark.parametrize("signal", ["kind invite, role patient", "claim, keys role patient",
                                    "claim, granted patient"])
def test_a_relabelled_patient_request_still_needs_the_binding(srv: FakeServer,
                                                              signal: str) -> None:
    alice, pat = Person("alice"), Person("pat")
    case_id = srv.new_case(alice)
    client = srv.client(alice)
    fake = pat.substitute()
    role = Role.PATIENT if "granted" in signal else None
    srv.keys[pat.id] = pat.keys(fake, role="patient" if "keys role" in signal else "provider")
    srv.request(case_id, pat, kind="invite" if "invite" in signal else "claim",
                role="patient" if "role patient" in signal and "keys" not in signal
                else "provider")
    with pytest.raises(AdmissionRefusedError) as refused:
        client.admit(case_id, pat.id, role=role)
    assert refused.value.blockers == ("patient_unbound",)
    assert len(srv.logs[case_id]) == 1
    # The honest twin: after comparing the short code by voice.
    entry = client.admit(case_id, pat.id, role=role, code_compared=True)
    member = entry.roster.user(pat.id)
    assert member is not None
    if role is not None or "patient" in signal:
        assert member.role == Role.PATIENT or "keys role" in signal


def test_a_patient_account_is_not_added_directly_without_the_code(srv: FakeServer) -> None:
    alice, pat, derm = Person("alice"), Person("pat"), Person("derm")
    case_id = srv.new_case(alice)
    client = srv.client(alice)
    srv.keys[pat.id] = pat.keys(role="patient")
    srv.keys[derm.id] = derm.keys()
    for role in (Role.MEMBER, Role.PATIENT):
        with pytest.raises(AdmissionRefusedError) as refused:
            client.add_member(case_id, pat.id, role)
        assert key_code(pat.id, pat.identity.uik_pub) in str(refused.value)
    srv.keys[derm.id] = derm.keys()
    with pytest.raises(AdmissionRefusedError):
        client.add_member(case_id, derm.id, Role.PATIENT)
    # Honest twins: a provider as a member; the patient after comparing the code.
    assert client.add_member(case_id, derm.id).epoch == 1
    assert client.add_member(case_id, pat.id, Role.PATIENT, code_compared=True).epoch == 2


def test_listing_records_nothing_admitting_pins(srv: FakeServer) -> None:
    alice, bob, carol = Person("alice"), Person("bob"), Person("carol")
    case_id = srv.new_case(alice)
    client = srv.client(alice)
    client.pins.observe(bob.id, bob.identity.uik_pub, None, 1)
    srv.keys[bob.id] = bob.keys(bob.substitute())
    srv.keys[carol.id] = carol.keys()
    srv.request(case_id, bob, request_id=1)
    srv.request(case_id, carol, request_id=2)
    before = client.pins.copy()
    assert [r.pin for r in client.join_requests(case_id)] == ["changed", "new"]
    assert client.pins == before and client.identity_changes() == []
    # Committing is what pins: the key is in the verified roster just signed.
    client.admit(case_id, carol.id)
    assert client.pins.state(carol.id, carol.identity.uik_pub) == "pinned"


def test_a_malformed_listing_row_is_listed_with_a_reason(srv: FakeServer) -> None:
    alice, carol = Person("alice"), Person("carol")
    case_id = srv.new_case(alice)
    client = srv.client(alice)
    srv.keys[carol.id] = carol.keys()
    srv.joins[case_id] = [
        {"id": 1, "user": "not-a-user", "kind": "claim"},
        {"id": 2, "user": str(carol.id), "kind": "claim", "requested_by": "nobody"},
        {"id": 3, "user": str(carol.id), "kind": "claim", "requested_by": str(carol.id)},
        "not even an object",
    ]
    listed = client.join_requests(case_id)
    assert [r.problem is None for r in listed] == [False, False, True, False]
    assert all("malformed" in (r.problem or "") for r in (listed[0], listed[1], listed[3]))
    # The well-formed row is admitted as usual.
    assert client.admit(case_id, carol.id).roster.user(carol.id) is not None


def test_every_newly_verified_roster_is_observed_own_key_only_at_the_head(
        srv: FakeServer) -> None:
    """A server-fooled member added a made-up key for Bob, then removed him; a client
    that pinned Bob's real key sees the change although the head no longer holds it."""
    alice, bob, neuro = Person("alice"), Person("bob"), Person("neuro")
    fooled = srv.client(neuro)
    case_id = srv.new_case(neuro)
    srv.keys[alice.id] = alice.keys()
    fooled.add_member(case_id, alice.id, Role.ADMIN)
    srv.keys[bob.id] = bob.keys(bob.substitute())
    fooled.add_member(case_id, bob.id)
    fooled.remove_member(case_id, bob.id)
    client = srv.client(alice)
    client.pins.observe(bob.id, bob.identity.uik_pub, None, 1)
    client.sync(case_id)
    (change,) = client.pins.changes()
    assert change.user == bob.id and change.cases == (case_id,)
    # The honest twin: Bob's real key in a past roster records nothing.
    honest = srv.new_case(neuro)
    srv.keys[bob.id] = bob.keys()
    other = srv.client(neuro)
    other.pins.accept(bob.id, bob.identity.uik_pub, 5)
    other.add_member(honest, alice.id, Role.ADMIN)
    other.add_member(honest, bob.id)
    other.remove_member(honest, bob.id)
    client.sync(honest)
    assert [c.cases for c in client.pins.changes()] == [(case_id,)]


def test_a_past_roster_with_a_foreign_own_key_does_not_fail_the_case(srv: FakeServer) -> None:
    alice, bob = Person("alice"), Person("bob")
    case_id = srv.new_case(alice)
    owner = srv.client(alice)
    srv.keys[bob.id] = bob.keys(bob.substitute())  # alice is fooled on first use
    owner.add_member(case_id, bob.id)
    owner.remove_member(case_id, bob.id)
    srv.keys[bob.id] = bob.keys()
    owner.add_member(case_id, bob.id, accept_changed=bob.identity.uik_pub)
    assert len(srv.logs[case_id]) == 4
    state = srv.client(bob).sync(case_id)  # the head lists bob under his own key
    member = state.head.roster.user(bob.id)
    assert member is not None and member.uik_pub == bob.identity.uik_pub


def test_a_keystore_with_an_oversized_change_still_loads() -> None:
    """A book written before the bounds (5000 cases on one change) loads, truncated;
    it used to make the whole keystore unloadable."""
    import uuid

    from collab.client.keystore import KeystoreState
    from collab.client.pins import MAX_CASES

    bob = Person("bob")
    state = KeystoreState(server="http://fake")
    state.pins.observe(bob.id, bob.identity.uik_pub, None, 1)
    state.pins.observe(bob.id, bob.substitute().uik_pub, uuid.uuid4(), 2)
    saved = state.to_json()
    cases = [str(uuid.uuid4()) for _ in range(5000)]
    saved["pins"][str(bob.id)]["changed"]["cases"] = cases
    loaded = KeystoreState.from_json(saved)
    record = loaded.pins.get(bob.id)
    assert record is not None and record.changed is not None
    assert [str(c) for c in record.changed.cases] == cases[-MAX_CASES:]  # the newest observed
    # The honest twin: a book within the bounds round-trips unchanged.
    assert KeystoreState.from_json(state.to_json()).pins == state.pins
