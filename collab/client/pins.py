"""Pinned identity keys (UIKs): trust people, not the server. Pure policy, no I/O.

A pin book maps a user id to the identity key this client has accepted for them:

    record = {uik (32 bytes), state "pinned" | "verified", updated_ms,
              previous [older accepted keys],
              changed None | {uik, seen_ms, cases (ids, oldest observed first)}}

The first key seen for a user is pinned (trust on first use). A different key later is
a *change*: the pin keeps the old key and records the new one until a person accepts it
(`accept`) or compares safety numbers and verifies it (`verify`). Sending in a case whose
roster holds a changed key is blocked, and no entry with such a roster is ever signed.
The same rules run in the browser (frontend/static/collab/app/trust/pins.js), tested on
the same scenarios (tests/policy/trust_scenarios.json).
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from collab.client.errors import IdentityChange, IdentityChangedError
from collab.crypto.errors import CryptoError
from collab.crypto.safety import safety_number
from collab.crypto.wire import b64d, b64e

PinState = Literal["new", "pinned", "verified", "changed"]
RecordState = Literal["pinned", "verified"]
DOCUMENT_FORMAT = "collab-pins"
# Limits shared with the browser (tests/policy/trust_scenarios.json "limits"). They are
# applied when a record is written (observe/accept/verify) and again when one is parsed,
# by truncation: a book a client of ours wrote is never refused for its size.
MAX_PINS = 100_000  # records kept on parsing: decisions first, then the newest (as fit)
MAX_PREVIOUS = 16  # older accepted keys kept per user, the newest
MAX_CASES = 64  # cases listed per pending change, the most recently observed


def _bounded_cases(cases: Iterable[uuid.UUID]) -> tuple[uuid.UUID, ...]:
    """In the order observed (oldest first), without duplicates, the newest ``MAX_CASES``
    kept (as the browser client)."""
    return tuple(dict.fromkeys(cases))[-MAX_CASES:]


@dataclass(frozen=True)
class PendingChange:
    """A key seen for a pinned user that differs from the pin, not yet accepted."""

    uik: bytes
    seen_ms: int
    cases: tuple[uuid.UUID, ...] = ()  # oldest observed first; listed sorted

    def to_json(self) -> dict[str, Any]:
        return {"uik": b64e(self.uik), "seen_ms": self.seen_ms,
                "cases": [str(c) for c in self.cases]}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> PendingChange:
        cases = d.get("cases") or []
        if not isinstance(cases, list):
            raise CryptoError("bad_field", "pin change cases must be a list")
        return cls(b64d(d["uik"], 32), _int(d["seen_ms"]),
                   _bounded_cases(uuid.UUID(str(c)) for c in cases))


@dataclass(frozen=True)
class PinRecord:
    uik: bytes
    state: RecordState
    updated_ms: int
    previous: tuple[bytes, ...] = ()
    changed: PendingChange | None = None

    def to_json(self) -> dict[str, Any]:
        return {"uik": b64e(self.uik), "state": self.state, "updated_ms": self.updated_ms,
                "previous": [b64e(p) for p in self.previous],
                "changed": None if self.changed is None else self.changed.to_json()}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> PinRecord:
        state = d.get("state")
        if state not in ("pinned", "verified"):
            raise CryptoError("bad_field", "pin state must be pinned or verified")
        previous = d.get("previous") or []
        if not isinstance(previous, list):
            raise CryptoError("bad_field", "pin previous keys must be a list")
        changed = d.get("changed")
        return cls(
            b64d(d["uik"], 32), "verified" if state == "verified" else "pinned",
            _int(d["updated_ms"]), tuple(b64d(p, 32) for p in previous)[-MAX_PREVIOUS:],
            None if changed is None else PendingChange.from_json(changed),
        )


@dataclass(frozen=True)
class Change:
    """One pending identity change, as shown to a person."""

    user: uuid.UUID
    old: bytes
    new: bytes
    cases: tuple[uuid.UUID, ...]
    was_verified: bool


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CryptoError("bad_field", "expected a non-negative integer")
    return value


@dataclass
class PinBook:
    records: dict[uuid.UUID, PinRecord] = field(default_factory=dict)

    # --- reading --------------------------------------------------------------------
    def state(self, user: uuid.UUID, uik: bytes) -> PinState:
        record = self.records.get(user)
        if record is None:
            return "new"
        return record.state if record.uik == uik else "changed"

    def get(self, user: uuid.UUID) -> PinRecord | None:
        return self.records.get(user)

    def changes(self) -> list[Change]:
        return [
            Change(user, r.uik, r.changed.uik, tuple(sorted(r.changed.cases)),
                   r.state == "verified")
            for user, r in sorted(self.records.items())
            if r.changed is not None
        ]

    def change_for(self, user: uuid.UUID, uik: bytes) -> Change:
        """The change that seeing ``uik`` for a pinned ``user`` amounts to."""
        record = self.records[user]
        cases = record.changed.cases if record.changed and record.changed.uik == uik else ()
        return Change(user, record.uik, uik, tuple(sorted(cases)), record.state == "verified")

    def blocking(self, roster: Iterable[tuple[uuid.UUID, bytes]],
                 me: uuid.UUID) -> list[uuid.UUID]:
        """Users (not me) whose key in this roster is an unaccepted change."""
        return sorted({user for user, uik in roster
                       if user != me and self.state(user, uik) == "changed"})

    # --- decisions ----------------------------------------------------------------------
    def observe(self, user: uuid.UUID, uik: bytes, case: uuid.UUID | None,
                now: int, *, historical: bool = False) -> PinState:
        """A key seen for ``user`` in a verified roster. ``historical``: a roster below
        the case's head, where a key the user had before (in ``previous``) is no news and
        records no change; it still counts as "changed" for that roster."""
        record = self.records.get(user)
        if record is None:
            self.records[user] = PinRecord(bytes(uik), "pinned", now)
            return "new"
        if record.uik == uik:
            return record.state
        if historical and uik in record.previous:
            return "changed"
        pending = record.changed
        if pending is None or pending.uik != uik:
            pending = PendingChange(bytes(uik), now, ())
        if case is not None and case not in pending.cases:
            pending = dataclasses.replace(pending, cases=_bounded_cases((*pending.cases, case)))
        if pending != record.changed:
            self.records[user] = dataclasses.replace(record, changed=pending)
        return "changed"

    def _pin(self, user: uuid.UUID, uik: bytes, state: RecordState, now: int) -> None:
        record = self.records.get(user)
        previous: tuple[bytes, ...] = ()
        if record is not None:
            previous = record.previous
            if record.uik != uik and record.uik not in previous:
                previous = (*previous, record.uik)
            previous = previous[-MAX_PREVIOUS:]
        self.records[user] = PinRecord(bytes(uik), state, now, previous, None)

    def accept(self, user: uuid.UUID, uik: bytes, now: int) -> None:
        """Accept ``uik`` as the user's key (withdraws any verification)."""
        self._pin(user, uik, "pinned", now)

    def verify(self, user: uuid.UUID, uik: bytes, now: int) -> None:
        """The person compared safety numbers for ``uik`` and they matched."""
        self._pin(user, uik, "verified", now)

    def unverify(self, user: uuid.UUID, now: int) -> None:
        record = self.records.get(user)
        if record is not None:
            self.records[user] = dataclasses.replace(record, state="pinned", updated_ms=now)

    # --- serialisation ----------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The pins map of the synced document (user id -> record)."""
        return {str(user): r.to_json() for user, r in sorted(self.records.items())}

    @classmethod
    def from_json(cls, pins: Mapping[str, Any]) -> PinBook:
        if not isinstance(pins, Mapping):
            raise CryptoError("bad_field", "pins must be an object")
        try:
            records = {uuid.UUID(str(k)): PinRecord.from_json(v) for k, v in pins.items()}
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise CryptoError("bad_field", f"malformed pin record: {error}") from None
        if len(records) > MAX_PINS:  # keep what fit() would sync first
            records = dict(sorted(sorted(records.items(), key=_weight)[:MAX_PINS]))
        return cls(records)

    def document(self) -> dict[str, Any]:
        return {"format": DOCUMENT_FORMAT, "pins": self.to_json()}

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> PinBook:
        if not isinstance(doc, Mapping) or doc.get("format") != DOCUMENT_FORMAT:
            raise CryptoError("bad_field", "not a collab-pins document")
        return cls.from_json(doc.get("pins") or {})

    def copy(self) -> PinBook:
        return PinBook(dict(self.records))


_STRENGTH = {"pinned": 0, "verified": 1}


def _merge_record(local: PinRecord, remote: PinRecord) -> PinRecord:
    """One user's record from two devices (the rules of the shared scenarios)."""
    if local.uik == remote.uik:
        # The same key: the newer decision wins (a tie: verified, then local).
        if remote.updated_ms != local.updated_ms:
            winner = remote if remote.updated_ms > local.updated_ms else local
        else:
            winner = remote if _STRENGTH[remote.state] > _STRENGTH[local.state] else local
        return dataclasses.replace(winner, changed=_pending(winner, local, remote))
    local_newer_key = remote.uik in local.previous
    remote_newer_key = local.uik in remote.previous
    if local_newer_key != remote_newer_key:
        # One record moved on from the other's key (an accept or verify of a new key):
        # it supersedes the other, whatever the times say.
        winner = local if local_newer_key else remote
        return dataclasses.replace(winner, changed=_pending(winner, local, remote))
    if local_newer_key:  # each moved on from the other's key: the later decision
        winner = remote if remote.updated_ms > local.updated_ms else local
        return dataclasses.replace(winner, changed=_pending(winner, local, remote))
    # Two keys neither record decided between: the stronger stays (verified over
    # pinned), on a tie the first use; the other key is a change a person must decide,
    # never a silent replacement (a fresh device's first-use pin of the server's key
    # must not overwrite a key verified elsewhere).
    strength = (_STRENGTH[local.state], -local.updated_ms)
    other = (_STRENGTH[remote.state], -remote.updated_ms)
    winner, loser = (remote, local) if other > strength else (local, remote)
    return dataclasses.replace(winner, changed=PendingChange(loser.uik, loser.updated_ms, ()))


def _pending(winner: PinRecord, local: PinRecord, remote: PinRecord) -> PendingChange | None:
    """A pending change survives unless it names the key that won (local first)."""
    for pending in (local.changed, remote.changed):
        if pending is not None and pending.uik != winner.uik:
            return pending
    return None


def merge(local: PinBook, remote: PinBook) -> PinBook:
    """Combine this device's pins with another device's, per user (_merge_record)."""
    out: dict[uuid.UUID, PinRecord] = {}
    for user in sorted({*local.records, *remote.records}):
        mine, theirs = local.records.get(user), remote.records.get(user)
        if mine is not None and theirs is not None:
            out[user] = _merge_record(mine, theirs)
        elif mine is not None:
            out[user] = mine
        elif theirs is not None:
            out[user] = theirs
    return PinBook(out)


def document_bytes(book: PinBook) -> bytes:
    """The synced plaintext: canonical JSON of the document."""
    return json.dumps(book.document(), sort_keys=True, separators=(",", ":")).encode()


def _weight(item: tuple[uuid.UUID, PinRecord]) -> tuple[bool, int, uuid.UUID]:
    """Order of importance: decisions first, then first-use pins, newest first."""
    user, record = item
    decided = record.state == "verified" or bool(record.previous) or \
        record.changed is not None
    return (not decided, -record.updated_ms, user)


def fit(book: PinBook, max_bytes: int) -> PinBook:
    """The part of the book that is synced when all of it would not fit: every decision
    a person made or must make (verified keys, accepted changes, pending changes) first,
    then plain first-use pins, newest first. A pin left out is only re-learnt by the
    other devices on first use; nothing is dropped from this device's own book."""
    if len(document_bytes(book)) <= max_bytes:
        return book
    budget = max_bytes - len(document_bytes(PinBook()))
    kept: dict[uuid.UUID, PinRecord] = {}
    for user, record in sorted(book.records.items(), key=_weight):
        size = len(json.dumps({str(user): record.to_json()}, sort_keys=True,
                              separators=(",", ":"))) - 1  # the braces become a comma
        if size > budget:
            continue
        kept[user] = record
        budget -= size
    return PinBook(dict(sorted(kept.items())))


# --- checks on rosters ---------------------------------------------------------------------

def own_check(roster: Iterable[tuple[uuid.UUID, bytes]], me: uuid.UUID, my_uik: bytes) -> None:
    """Fail closed when a roster lists this user under another identity key."""
    for user, uik in roster:
        if user == me and uik != my_uik:
            raise CryptoError("own_identity_mismatch",
                              "the roster lists you under an identity key that is not yours")


def commit_check(book: PinBook, roster: Iterable[tuple[uuid.UUID, bytes]], me: uuid.UUID,
                 my_uik: bytes) -> None:
    """Before signing an entry: its resulting roster must hold our own key for us and no
    unaccepted identity change for anyone else (IdentityChangedError)."""
    pairs = list(roster)
    own_check(pairs, me, my_uik)
    blocked = book.blocking(pairs, me)
    if blocked:
        keys = dict(pairs)
        raise IdentityChangedError(describe_changes(
            [book.change_for(user, keys[user]) for user in blocked], me, my_uik))


def describe_changes(changes: Iterable[Change], me: uuid.UUID,
                     my_uik: bytes) -> list[IdentityChange]:
    """Changes with the old and new safety numbers (own key always the local one)."""
    return [
        IdentityChange(c.user, c.old, c.new, tuple(safety_number(me, my_uik, c.user, c.old)),
                       tuple(safety_number(me, my_uik, c.user, c.new)), c.cases, c.was_verified)
        for c in changes
    ]
