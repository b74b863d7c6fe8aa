from __future__ import annotations

from collab.crypto import safety_number
from collab.crypto.vectors.fixtures import ALICE, BOB, CAROL


def test_both_parties_see_the_same_number() -> None:
    a = safety_number(ALICE.user_id, ALICE.uik_pub, BOB.user_id, BOB.uik_pub)
    b = safety_number(BOB.user_id, BOB.uik_pub, ALICE.user_id, ALICE.uik_pub)
    assert a == b
    assert len(a) == 12 and all(len(g) == 5 and g.isdigit() for g in a)


def test_different_key_changes_the_number() -> None:
    a = safety_number(ALICE.user_id, ALICE.uik_pub, BOB.user_id, BOB.uik_pub)
    c = safety_number(ALICE.user_id, ALICE.uik_pub, BOB.user_id, CAROL.uik_pub)
    assert a != c
