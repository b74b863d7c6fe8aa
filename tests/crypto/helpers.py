"""Builders shared by the crypto tests (deterministic people from the vectors)."""

from __future__ import annotations

import dataclasses
from typing import Any

from collab.crypto import (
    AddUserBody,
    Body,
    CreateBody,
    LogEntry,
    Role,
    build_entry,
    sign,
)
from collab.crypto.vectors.fixtures import ALICE, BOB, CAROL, CASE_ID, DAVE, Person

T0 = 1_700_000_000_000


def step(prev: LogEntry | None, author: Person, body: Body, device: int = 0) -> LogEntry:
    """A valid entry (build_entry verifies it before returning)."""
    d = author.devices[device]
    entry, _k = build_entry(
        prev,
        body,
        author_seed=d.dsk_seed,
        author_user_id=author.user_id,
        author_device_id=d.device_id,
        created_ms=T0 + (0 if prev is None else prev.epoch + 1) * 1000,
        case_id=CASE_ID,
    )
    return entry


def add(p: Person, role: Role) -> AddUserBody:
    return AddUserBody(p.user_id, role, p.uik_pub, tuple(d.cert for d in p.devices))


def genesis() -> LogEntry:
    return step(None, ALICE, CreateBody(ALICE.uik_pub, tuple(d.cert for d in ALICE.devices)))


def team() -> list[LogEntry]:
    """alice owner (2 devices), dave admin, bob member, carol patient."""
    e0 = genesis()
    e1 = step(e0, ALICE, add(DAVE, Role.ADMIN))
    e2 = step(e1, ALICE, add(BOB, Role.MEMBER))
    e3 = step(e2, DAVE, add(CAROL, Role.PATIENT))
    return [e0, e1, e2, e3]


def resign(e: LogEntry, author: Person, **changes: Any) -> LogEntry:
    draft = dataclasses.replace(e, **changes)
    return dataclasses.replace(draft, signature=sign(author.d.dsk_seed, draft.signed_bytes()))


__all__ = ["ALICE", "BOB", "CAROL", "CASE_ID", "DAVE", "T0"]
