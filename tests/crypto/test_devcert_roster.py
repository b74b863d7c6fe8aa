from __future__ import annotations

import dataclasses

import pytest

from collab.crypto import CryptoError, DeviceCert, Roster, verify_device_cert
from collab.crypto.vectors.fixtures import ALICE, BOB, NOT_BEFORE_MS

from .helpers import team


def code_of(fn: object, *args: object, **kw: object) -> str:
    with pytest.raises(CryptoError) as e:
        fn(*args, **kw)  # type: ignore[operator]
    return e.value.code


def test_device_certificate_verifies_and_round_trips() -> None:
    cert = ALICE.d.cert
    verify_device_cert(cert, ALICE.uik_pub)
    assert DeviceCert.from_wire(cert.to_wire()) == cert


def test_certificate_for_other_user_rejected() -> None:
    assert code_of(verify_device_cert, ALICE.d.cert, BOB.uik_pub) == "bad_certificate"


def test_certificate_with_swapped_key_rejected() -> None:
    forged = dataclasses.replace(ALICE.d.cert, dxk_pub=BOB.d.dxk_pub)
    assert code_of(verify_device_cert, forged, ALICE.uik_pub) == "bad_certificate"


def test_certificate_not_yet_valid_rejected() -> None:
    cert = ALICE.d.cert
    assert code_of(verify_device_cert, cert, ALICE.uik_pub, NOT_BEFORE_MS - 1) == "bad_certificate"
    verify_device_cert(cert, ALICE.uik_pub, NOT_BEFORE_MS)


def test_roster_wire_round_trip() -> None:
    roster = team()[-1].roster
    assert Roster.from_wire(roster.to_wire()) == roster


def test_unsorted_roster_rejected() -> None:
    roster = team()[-1].roster
    shuffled = Roster(tuple(reversed(roster.users)), roster.devices)
    assert code_of(shuffled.validate) == "bad_roster"


def test_device_of_unknown_user_rejected() -> None:
    roster = team()[-1].roster
    orphan = Roster(roster.users[1:], roster.devices)
    assert code_of(orphan.validate) == "bad_roster"
