"""The database holds ciphertext only: a known plaintext appears nowhere in a full dump."""

from __future__ import annotations

import os
import sqlite3
import subprocess

import pytest
from django.db import connection

from collab.cases.services.messages import message_send
from tests.support.actor import Actor

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "Patient Jane Roe, DOB 1961-04-12, suspicious pigmented lesion left scapula"


def full_dump() -> bytes:
    name = connection.settings_dict["NAME"]
    if connection.vendor == "sqlite":
        db = sqlite3.connect(name)
        try:
            return "\n".join(db.iterdump()).encode()
        finally:
            db.close()
    cfg = connection.settings_dict
    env = {**os.environ, "PGPASSWORD": cfg.get("PASSWORD") or ""}
    return subprocess.run(
        [
            "pg_dump",
            "-h",
            cfg.get("HOST") or "127.0.0.1",
            "-p",
            str(cfg.get("PORT") or 5432),
            "-U",
            cfg.get("USER") or "postgres",
            name,
        ],
        check=True,
        capture_output=True,
        env=env,
        timeout=120,
    ).stdout


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
