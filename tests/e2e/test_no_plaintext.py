"""The database holds ciphertext only: a known plaintext appears nowhere in a full dump."""

from __future__ import annotations

import pytest

from collab.cases.services.messages import message_send
from tests.support.actor import Actor
from tests.support.database_files import full_dump

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "Patient Jane Roe, DOB 1961-04-12, suspicious pigmented lesion left scapula"


def test_database_dump_contains_no_message_plaintext() -> None:
    pcp = Actor("pcp").register()
    derm = Actor("derm", specialty="Dermatology").register()
    state = pcp.open_case()
    pcp.add(state, derm)
    message_send(
        user=pcp.user,
        device_id=pcp.device.device_id,
        case_id=state.case_id,
        envelope=state.seal({"text": SECRET}),
    )
    dump = full_dump()
    assert b"CREATE TABLE" in dump.upper() or b"create table" in dump.lower()
    assert b"cases_message" in dump
    for needle in (SECRET.encode(), SECRET.encode().hex().encode(), b"Jane Roe", b"scapula"):
        assert needle not in dump
