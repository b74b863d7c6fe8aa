"""A key wrap this device cannot open costs that epoch on this device, nothing more: the
chain stays verified, messages of the epoch are verified and marked unavailable (with the
entry's author), and the other epochs read."""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from collab.client.case_state import CaseState
from collab.client.keys import DeviceKeys, Identity
from collab.crypto import primitives as prim
from collab.crypto.actions import AddUserBody, RotateBody
from collab.crypto.errors import CryptoError
from collab.crypto.log import WRAP_CT_LEN, LogEntry, Wrap, make_history_body
from collab.crypto.roster import Role


class Person:
    def __init__(self) -> None:
        self.identity = Identity.generate(uuid.uuid4())
        self.device = DeviceKeys.generate(self.identity.user_id)
        self.cert = self.identity.certify(self.device)


def spoil(entry: LogEntry, device_id: uuid.UUID, author: DeviceKeys) -> LogEntry:
    """Random bytes as ``device_id``'s wrap, validly re-signed by ``author``."""
    wraps = tuple(Wrap(w.device_id, prim.random_bytes(WRAP_CT_LEN))
                  if w.device_id == device_id else w for w in entry.wraps)
    tampered = dataclasses.replace(entry, wraps=wraps)
    return dataclasses.replace(tampered,
                               signature=prim.sign(author.dsk_seed, tampered.signed_bytes()))


@pytest.fixture
def room() -> tuple[Person, Person, CaseState, CaseState]:
    pcp, derm = Person(), Person()
    mine = CaseState(uuid.uuid4(), pcp.device)
    mine.accept_entries([mine.genesis(pcp.cert, pcp.identity.uik_pub)])
    add = mine.next_entry(AddUserBody(derm.identity.user_id, Role.ADMIN, derm.identity.uik_pub,
                                      (derm.cert,)))
    mine.accept_entries([add])
    theirs = CaseState(mine.case_id, derm.device)
    theirs.accept_entries(list(mine.chain.values()))
    return pcp, derm, mine, theirs


def test_bad_wrap_marks_only_its_epoch_unavailable(room: tuple[Person, Person, CaseState,
                                                             CaseState]) -> None:
    pcp, derm, mine, theirs = room
    before = theirs.seal({"text": "before"})
    bad = spoil(theirs.next_entry(RotateBody()), pcp.device.device_id, derm.device)
    theirs.accept_entries([bad])
    during = theirs.seal({"text": "during"})
    mine.accept_entries([bad])  # verified; no exception for the wrap
    assert mine.head.epoch == bad.epoch and mine.head_key_unavailable
    assert mine.unavailable == {bad.epoch: derm.identity.user_id}
    assert mine.open(before).body == {"text": "before"}
    opened = mine.open(during)
    assert opened.body == {} and opened.unavailable == derm.identity.user_id
    with pytest.raises(CryptoError) as no_key:
        mine.seal({"text": "cannot"})
    assert no_key.value.code == "wraps_mismatch"
    # A fresh key from this device makes the case sendable again, for both.
    fresh = mine.next_entry(RotateBody())
    mine.accept_entries([fresh])
    theirs.accept_entries([fresh])
    assert not mine.head_key_unavailable
    assert theirs.open(mine.seal({"text": "after"})).body == {"text": "after"}


def test_unavailable_messages_are_still_verified(room: tuple[Person, Person, CaseState,
                                                            CaseState]) -> None:
    pcp, derm, mine, theirs = room
    bad = spoil(theirs.next_entry(RotateBody()), pcp.device.device_id, derm.device)
    theirs.accept_entries([bad])
    mine.accept_entries([bad])
    during = theirs.seal({"text": "during"})
    forged = dataclasses.replace(during, sig=bytes(64))
    with pytest.raises(CryptoError) as refused:
        mine.open(forged)
    assert refused.value.code in ("bad_signature", "non_canonical_signature")
    mine.open(during)
    with pytest.raises(CryptoError) as replayed:
        mine.open(during)
    assert replayed.value.code == "replay"


def test_one_bad_history_wrap_costs_only_its_epoch(room: tuple[Person, Person, CaseState,
                                                              CaseState]) -> None:
    pcp, _derm, mine, _theirs = room
    late = Person()
    late_id = late.identity.user_id
    first_key = mine.keys[1]
    rotate = mine.next_entry(RotateBody())
    mine.accept_entries([rotate])
    add = mine.next_entry(AddUserBody(late_id, Role.MEMBER, late.identity.uik_pub,
                                      (late.cert,)))
    mine.accept_entries([add])
    body = make_history_body(mine.case_id, [(late.cert, 1, first_key),
                                            (late.cert, 2, mine.keys[2])])
    spoilt = dataclasses.replace(body, items=(
        body.items[0], dataclasses.replace(body.items[1], ciphertext=prim.random_bytes(
            len(body.items[1].ciphertext)))))
    share = mine.next_entry(spoilt)
    mine.accept_entries([share])
    newcomer = CaseState(mine.case_id, late.device)
    newcomer.accept_entries(list(mine.chain.values()))
    assert newcomer.keys[1] == first_key and 2 not in newcomer.keys
    assert newcomer.unavailable == {2: pcp.identity.user_id}
    assert set(newcomer.keys) >= {add.epoch, share.epoch}
