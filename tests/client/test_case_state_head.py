"""A client verifies each log entry once: the head it verified is kept (epoch and hash,
in its state), a later run takes the entries up to it by their hash links only, and a
server that rewrites history below the kept head is caught (``fork``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from collab.client.case_state import CaseState, VerifiedHead, linked_chain
from collab.client.sdk import CollabClient
from collab.crypto import log as cr1_log
from collab.crypto.actions import AddUserBody, RotateBody
from collab.crypto.errors import CryptoError
from collab.crypto.log import LogEntry
from collab.crypto.roster import Role
from tests.client.fake_server import FakeServer, Person


@pytest.fixture
def verify_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The epochs verify_entry runs on (verify_chain calls it for every entry)."""
    calls: list[int] = []
    real = cr1_log.verify_entry

    def counting(prev: LogEntry | None, entry: LogEntry) -> None:
        calls.append(entry.epoch)
        real(prev, entry)

    monkeypatch.setattr(cr1_log, "verify_entry", counting)
    yield calls


def chain_of(owner: Person, bob: Person, n: int) -> list[LogEntry]:
    """genesis, add bob, then rotations up to epoch ``n``."""
    state = CaseState(uuid.uuid4(), owner.device)
    state.accept_entries([state.genesis(owner.cert, owner.identity.uik_pub)])
    body = AddUserBody(bob.id, Role.MEMBER, bob.identity.uik_pub, (bob.cert,))
    state.accept_entries([state.next_entry(body)])
    while state.head.epoch < n:
        state.accept_entries([state.next_entry(RotateBody())])
    return [state.chain[e] for e in sorted(state.chain)]


def rewritten(chain: list[LogEntry], owner: Person, below: int,
              upto: int | None = None) -> list[LogEntry]:
    """The same genesis, then a different but validly signed history from ``below``
    on, up to epoch ``upto`` (that of ``chain``'s head by default): what a server
    holding another branch could serve."""
    state = CaseState(chain[0].case_id, owner.device)
    state.accept_entries(chain[:below])
    while state.head.epoch < (chain[-1].epoch if upto is None else upto):
        state.accept_entries([state.next_entry(RotateBody())])
    return [state.chain[e] for e in sorted(state.chain)]


def test_a_kept_head_is_not_verified_again(verify_calls: list[int]) -> None:
    owner, bob = Person("owner"), Person("bob")
    chain = chain_of(owner, bob, 6)
    first = CaseState(chain[0].case_id, bob.device)
    verify_calls.clear()
    first.accept_entries(chain[:5])
    assert verify_calls == [0, 1, 2, 3, 4]
    kept = VerifiedHead(4, first.head.entry_hash())
    # A later run: the same entries again, plus two new ones.
    verify_calls.clear()
    later = CaseState(chain[0].case_id, bob.device)
    fresh = later.accept_entries(chain, verified=kept)
    assert verify_calls == [5, 6]  # only what was not verified before
    assert [e.epoch for e in fresh] == [5, 6]
    assert sorted(later.chain) == list(range(7))
    assert later.keys == {**first.keys, 5: later.keys[5], 6: later.keys[6]}
    assert set(later.keys) == {1, 2, 3, 4, 5, 6}  # bob's keys, from his wraps


def test_a_history_rewritten_below_the_kept_head_is_a_fork() -> None:
    owner, bob = Person("owner"), Person("bob")
    chain = chain_of(owner, bob, 5)
    kept = VerifiedHead(5, chain[5].entry_hash())
    other = rewritten(chain, owner, below=3)  # epochs 3.. differ, every one validly signed
    # Without the kept head the other branch verifies: only the kept head catches it.
    CaseState(chain[0].case_id, bob.device).accept_entries(other)
    with pytest.raises(CryptoError) as caught:
        CaseState(chain[0].case_id, bob.device).accept_entries(other, verified=kept)
    assert caught.value.code == "fork"
    # One entry swapped below the head, the head itself kept: the link breaks.
    spliced = [*chain[:3], other[3], *chain[4:]]
    with pytest.raises(CryptoError) as caught:
        CaseState(chain[0].case_id, bob.device).accept_entries(spliced, verified=kept)
    assert caught.value.code == "fork"
    # Two different entries for one epoch below the head.
    with pytest.raises(CryptoError) as caught:
        linked_chain([*chain, other[3]], kept)
    assert caught.value.code == "fork"


def test_a_log_rolled_back_or_with_a_gap_below_the_kept_head_is_refused() -> None:
    owner, bob = Person("owner"), Person("bob")
    chain = chain_of(owner, bob, 4)
    kept = VerifiedHead(3, chain[3].entry_hash())
    with pytest.raises(CryptoError) as caught:
        CaseState(chain[0].case_id, bob.device).accept_entries(chain[:3], verified=kept)
    assert caught.value.code == "stale_head"
    with pytest.raises(CryptoError) as caught:
        linked_chain(chain[:1] + chain[2:], kept)
    assert caught.value.code == "wrong_epoch"
    with pytest.raises(CryptoError) as caught:
        linked_chain(chain[:3] + chain[4:], kept)
    assert caught.value.code == "wrong_epoch"


def rerun(client: CollabClient, srv: FakeServer, person: Person) -> CollabClient:
    """A new run of the same client: same state file, nothing in memory."""
    again = CollabClient(state=client.state)

    def call(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return srv.call(method, path, body, person.id)

    again.call = call  # type: ignore[method-assign]
    return again


def paged(srv: FakeServer, size: int) -> None:
    """The fake server's log answered in pages of ``size`` with ``more``."""
    plain = srv.call

    def call(method: str, path: str, body: dict[str, Any] | None = None,
             who: uuid.UUID | None = None) -> Any:
        answer = plain(method, path, body, who)
        if "/log?after=" in path:
            return {"entries": answer["entries"][:size], "more": len(answer["entries"]) > size}
        return answer

    srv.call = call  # type: ignore[method-assign]


def test_the_sdk_verifies_only_entries_above_the_head_it_kept(
    verify_calls: list[int],
) -> None:
    srv = FakeServer()
    owner, bob = Person("owner"), Person("bob")
    case_id = srv.new_case(owner)
    srv.keys[bob.id] = bob.keys()
    admin = srv.client(owner)
    admin.add_member(case_id, bob.id)
    member = srv.client(bob)
    member.sync(case_id)
    assert member.state.cases[str(case_id)].head_epoch == 1
    for _ in range(3):
        admin._commit(case_id, lambda _s: RotateBody())
    paged(srv, 2)
    verify_calls.clear()
    state = rerun(member, srv, bob).sync(case_id)
    assert verify_calls == [2, 3, 4]
    assert state.head.epoch == 4 and sorted(state.keys) == [1, 2, 3, 4]
    assert member.state.cases[str(case_id)].head_epoch == 4
    verify_calls.clear()
    rerun(member, srv, bob).sync(case_id)
    assert verify_calls == []


def test_the_sdk_refuses_a_history_rewritten_below_the_head_it_kept() -> None:
    srv = FakeServer()
    owner, bob = Person("owner"), Person("bob")
    case_id = srv.new_case(owner)
    srv.keys[bob.id] = bob.keys()
    admin = srv.client(owner)
    admin.add_member(case_id, bob.id)
    for _ in range(3):
        admin._commit(case_id, lambda _s: RotateBody())
    member = srv.client(bob)
    member.sync(case_id)
    # The server now serves another validly signed branch from epoch 2 on, longer.
    honest = list(srv.logs[case_id])
    srv.logs[case_id] = rewritten(honest, owner, below=2, upto=5)
    with pytest.raises(CryptoError) as caught:
        rerun(member, srv, bob).sync(case_id)
    assert caught.value.code == "fork"
    # The honest log still loads.
    srv.logs[case_id] = honest
    assert rerun(member, srv, bob).sync(case_id).head.epoch == 4
