"""Membership log: one signed hash chain per case. Every entry carries the
full resulting roster and a fresh epoch key wrapped to every roster device.

    signed = "CR1/log\\0" || case_id || epoch u64 || prev_hash(64)
             || author_user_id || author_device_id || created_ms u64
             || action u8 || var(action_body) || roster || key_commit(64)
             || epk(32) || u32 n || (device_id || var(box))*n
    entry  = signed || signature(64)      entry_hash = SHA-512(entry)
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import primitives as prim
from .actions import (
    HISTORY_TAG,
    Action,
    Body,
    EnrolDeviceBody,
    HistoryWrap,
    ShareHistoryBody,
    apply_action,
    authorize,
    parse_action,
    parse_body,
)
from .devcert import DeviceCert
from .encoding import Reader, fixed, pack_list, u8, u64, uuid_bytes, var
from .errors import CryptoError
from .roster import Roster
from .wire import b64e, get, get_b64, get_int, get_list, get_uuid

TAG = b"CR1/log\x00"
WRAP_TAG = b"CR1/wrap\x00"
KEYCOMMIT_TAG = b"CR1/keycommit\x00"
NONCE_TAG = b"CR1/nonce\x00"
ZERO_HASH = bytes(64)
EPOCH_KEY_LEN = 32
WRAP_PLAIN_LEN = len(WRAP_TAG) + 16 + 8 + 64 + 16 + EPOCH_KEY_LEN
WRAP_CT_LEN = prim.MAC_LEN + WRAP_PLAIN_LEN


@dataclass(frozen=True)
class Wrap:
    device_id: uuid.UUID
    ciphertext: bytes  # crypto_box MAC || ciphertext, nonce derived (wrap_nonce)


@dataclass(frozen=True)
class LogEntry:
    case_id: uuid.UUID
    epoch: int
    prev_hash: bytes
    author_user_id: uuid.UUID
    author_device_id: uuid.UUID
    created_ms: int
    action: Action
    action_body: bytes
    roster: Roster
    key_commit: bytes
    epk: bytes
    wraps: tuple[Wrap, ...]
    signature: bytes

    def signed_bytes(self) -> bytes:
        return (
            TAG
            + uuid_bytes(self.case_id)
            + u64(self.epoch)
            + fixed(self.prev_hash, 64, "prev_hash")
            + uuid_bytes(self.author_user_id)
            + uuid_bytes(self.author_device_id)
            + u64(self.created_ms)
            + u8(self.action)
            + var(self.action_body)
            + self.roster.encode()
            + fixed(self.key_commit, 64, "key_commit")
            + fixed(self.epk, 32, "epk")
            + pack_list(self.wraps, lambda w: uuid_bytes(w.device_id) + var(w.ciphertext))
        )

    def encode(self) -> bytes:
        return self.signed_bytes() + fixed(self.signature, 64, "signature")

    def entry_hash(self) -> bytes:
        return prim.sha512(self.encode())

    def body(self) -> Body:
        return parse_body(self.action, self.action_body)

    @classmethod
    def decode(cls, data: bytes) -> LogEntry:
        r = Reader(data)
        r.tag(TAG)
        entry = cls(
            case_id=r.uuid(),
            epoch=r.u64(),
            prev_hash=r.take(64),
            author_user_id=r.uuid(),
            author_device_id=r.uuid(),
            created_ms=r.u64(),
            action=parse_action(r.u8()),
            action_body=r.var(1 << 20),
            roster=Roster.read(r),
            key_commit=r.take(64),
            epk=r.take(32),
            wraps=tuple(r.list(lambda rr: Wrap(rr.uuid(), rr.var(1024)), 8192)),
            signature=r.take(64),
        )
        r.done()
        return entry

    def to_wire(self) -> dict[str, Any]:
        return {
            "case_id": str(self.case_id),
            "epoch": self.epoch,
            "prev_hash": b64e(self.prev_hash),
            "author_user_id": str(self.author_user_id),
            "author_device_id": str(self.author_device_id),
            "created_ms": self.created_ms,
            "action": int(self.action),
            "action_body": b64e(self.action_body),
            "roster": self.roster.to_wire(),
            "key_commit": b64e(self.key_commit),
            "epk": b64e(self.epk),
            "wraps": [
                {"device_id": str(w.device_id), "ct": b64e(w.ciphertext)} for w in self.wraps
            ],
            "signature": b64e(self.signature),
        }

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> LogEntry:
        return cls(
            case_id=get_uuid(d, "case_id"),
            epoch=get_int(d, "epoch"),
            prev_hash=get_b64(d, "prev_hash", 64),
            author_user_id=get_uuid(d, "author_user_id"),
            author_device_id=get_uuid(d, "author_device_id"),
            created_ms=get_int(d, "created_ms"),
            action=parse_action(get_int(d, "action", 255)),
            action_body=get_b64(d, "action_body"),
            roster=Roster.from_wire(get(d, "roster")),
            key_commit=get_b64(d, "key_commit", 64),
            epk=get_b64(d, "epk", 32),
            wraps=tuple(
                Wrap(get_uuid(w, "device_id"), get_b64(w, "ct")) for w in get_list(d, "wraps")
            ),
            signature=get_b64(d, "signature", 64),
        )


def key_commit(epoch_key: bytes, case_id: uuid.UUID, epoch: int) -> bytes:
    return prim.sha512(
        KEYCOMMIT_TAG + fixed(epoch_key, 32, "epoch key") + uuid_bytes(case_id) + u64(epoch)
    )


def wrap_nonce(epk: bytes, device_id: uuid.UUID, epoch: int) -> bytes:
    """Derived, not sent: unique per (ephemeral key, device, key epoch)."""
    return prim.sha512(NONCE_TAG + fixed(epk, 32, "epk") + uuid_bytes(device_id) + u64(epoch))[:24]


def wrap_plaintext(
    case_id: uuid.UUID, epoch: int, prev_hash: bytes, device_id: uuid.UUID, epoch_key: bytes
) -> bytes:
    return (
        WRAP_TAG
        + uuid_bytes(case_id)
        + u64(epoch)
        + fixed(prev_hash, 64)
        + uuid_bytes(device_id)
        + epoch_key
    )


def history_plaintext(
    case_id: uuid.UUID, epoch: int, device_id: uuid.UUID, epoch_key: bytes
) -> bytes:
    return (
        HISTORY_TAG
        + uuid_bytes(case_id)
        + u64(epoch)
        + uuid_bytes(device_id)
        + fixed(epoch_key, 32)
    )


def seal_entry(
    *,
    author_seed: bytes,
    case_id: uuid.UUID,
    epoch: int,
    prev_hash: bytes,
    author_user_id: uuid.UUID,
    author_device_id: uuid.UUID,
    created_ms: int,
    action: Action,
    action_body: bytes,
    roster: Roster,
    epoch_key: bytes,
    epk_secret: bytes,
) -> LogEntry:
    """Low level: wrap, commit and sign exactly the given fields, no policy.
    Use build_entry unless you are producing test vectors."""
    epk = prim.x25519_public(epk_secret)
    wraps = tuple(
        Wrap(
            d.device_id,
            prim.box_seal(
                epk_secret,
                d.dxk_pub,
                wrap_nonce(epk, d.device_id, epoch),
                wrap_plaintext(case_id, epoch, prev_hash, d.device_id, epoch_key),
            ),
        )
        for d in roster.devices
    )
    unsigned = LogEntry(
        case_id,
        epoch,
        prev_hash,
        author_user_id,
        author_device_id,
        created_ms,
        action,
        action_body,
        roster,
        key_commit(epoch_key, case_id, epoch),
        epk,
        wraps,
        bytes(64),
    )
    sig = prim.sign(author_seed, unsigned.signed_bytes())
    return dataclasses.replace(unsigned, signature=sig)


def build_entry(
    prev: LogEntry | None,
    body: Body,
    *,
    author_seed: bytes,
    author_user_id: uuid.UUID,
    author_device_id: uuid.UUID,
    created_ms: int,
    case_id: uuid.UUID | None = None,
    epoch_key: bytes | None = None,
    epk_secret: bytes | None = None,
) -> tuple[LogEntry, bytes]:
    """Author the next entry after `prev` (None: genesis, needs case_id).
    Returns (entry, epoch_key). The result is verified before it is returned,
    so a client can never publish an entry other clients would refuse."""
    if prev is None:
        if case_id is None:
            raise CryptoError("bad_field", "genesis needs a case_id")
        epoch, prev_hash, prev_roster = 0, ZERO_HASH, None
    else:
        case_id, epoch, prev_hash, prev_roster = (
            prev.case_id,
            prev.epoch + 1,
            prev.entry_hash(),
            prev.roster,
        )
    action = action_for(body)
    roster = apply_action(prev_roster, epoch=epoch, author_user_id=author_user_id, body=body)
    k = epoch_key if epoch_key is not None else prim.random_bytes(EPOCH_KEY_LEN)
    entry = seal_entry(
        author_seed=author_seed,
        case_id=case_id,
        epoch=epoch,
        prev_hash=prev_hash,
        author_user_id=author_user_id,
        author_device_id=author_device_id,
        created_ms=created_ms,
        action=action,
        action_body=body.encode(),
        roster=roster,
        epoch_key=k,
        epk_secret=epk_secret if epk_secret is not None else prim.random_bytes(32),
    )
    verify_entry(prev, entry)
    return entry, k


def action_for(body: Body) -> Action:
    """The action code of a body type."""
    from . import actions as a

    table: dict[type, Action] = {
        a.CreateBody: Action.CREATE,
        a.AddUserBody: Action.ADD_USER,
        a.RemoveUserBody: Action.REMOVE_USER,
        a.AddDeviceBody: Action.ADD_DEVICE,
        a.RemoveDeviceBody: Action.REMOVE_DEVICE,
        a.RotateBody: Action.ROTATE,
        a.SetRoleBody: Action.SET_ROLE,
        a.ShareHistoryBody: Action.SHARE_HISTORY,
        a.EnrolDeviceBody: Action.ENROL_DEVICE,
    }
    return table[type(body)]


def verify_entry(prev: LogEntry | None, entry: LogEntry) -> None:
    """Every acceptance check of the protocol, in a fixed order (so Python and
    JS report the same code for the same bytes). Server and clients both run it."""
    # 1. Position in the chain (compare-and-swap on the head).
    if prev is None:
        if entry.epoch != 0:
            raise CryptoError("wrong_epoch", "genesis must be epoch 0")
        if entry.prev_hash != ZERO_HASH:
            raise CryptoError("stale_head", "genesis prev_hash must be zero")
        if entry.action != Action.CREATE:
            raise CryptoError("bad_action", "the genesis entry must be create")
    else:
        if entry.case_id != prev.case_id:
            raise CryptoError("wrong_case", "entry belongs to another case")
        if entry.epoch != prev.epoch + 1:
            raise CryptoError("wrong_epoch", f"expected epoch {prev.epoch + 1}, got {entry.epoch}")
        if entry.prev_hash != prev.entry_hash():
            raise CryptoError("stale_head", "prev_hash is not the hash of the head")
    # 2. The author's device must be in the previous roster (genesis: its own), except
    #    in enrol_device, whose author is the new device of a user in the previous roster.
    signer_roster = prev.roster if prev is not None else entry.roster
    device = signer_roster.device(entry.author_device_id)
    if prev is not None and entry.action == Action.ENROL_DEVICE:
        enrolled = entry.body()
        assert isinstance(enrolled, EnrolDeviceBody)  # noqa: S101 - parse_body's contract
        fresh = device is None and enrolled.device.device_id == entry.author_device_id
        known = prev.roster.user(entry.author_user_id) is not None
        device = enrolled.device if fresh and known else None
    if device is None or device.user_id != entry.author_user_id:
        raise CryptoError("unauthorized_author", "author device is not in the previous roster")
    # 3. Signature by that device's DSK over the signed bytes.
    prim.verify(device.dsk_pub, entry.signed_bytes(), entry.signature)
    # 4. Authorisation of the action against the previous roster.
    body = entry.body()
    prev_roster = prev.roster if prev is not None else None
    authorize(
        prev_roster,
        case_id=entry.case_id,
        prev_epoch=prev.epoch if prev is not None else 0,
        author_user_id=entry.author_user_id,
        action=entry.action,
        body=body,
        prev_hash=entry.prev_hash,
    )
    # 5. The new roster is well formed, every device certificate chains to its
    #    UIK, and it is exactly the previous roster plus the action.
    entry.roster.validate()
    prim.check_x25519_public(entry.epk)
    expected = apply_action(
        prev_roster, epoch=entry.epoch, author_user_id=entry.author_user_id, body=body
    )
    if expected != entry.roster:
        raise CryptoError("roster_mismatch", "roster is not the previous roster plus the action")
    # 6. A removed member never authors the next key.
    after = entry.roster.device(entry.author_device_id)
    if after is None or after.user_id != entry.author_user_id:
        raise CryptoError("unauthorized_author", "author is not in the resulting roster")
    # 7. Exactly one wrap per roster device, in roster order.
    if [w.device_id for w in entry.wraps] != [d.device_id for d in entry.roster.devices]:
        raise CryptoError("wraps_mismatch", "wraps do not match the roster devices")
    if any(len(w.ciphertext) != WRAP_CT_LEN for w in entry.wraps):
        raise CryptoError("wraps_mismatch", "wrap has the wrong length")


def open_wrap(entry: LogEntry, device_id: uuid.UUID, dxk_secret: bytes) -> bytes:
    """Recover this entry's epoch key as `device_id`; checks binding and commit."""
    wrap = next((w for w in entry.wraps if w.device_id == device_id), None)
    if wrap is None:
        raise CryptoError("wraps_mismatch", "no wrap for this device")
    plain = prim.box_open(
        dxk_secret, entry.epk, wrap_nonce(entry.epk, device_id, entry.epoch), wrap.ciphertext
    )
    if len(plain) != WRAP_PLAIN_LEN:
        raise CryptoError("bad_wrap", "wrap plaintext has the wrong length")
    k = plain[-EPOCH_KEY_LEN:]
    if plain != wrap_plaintext(entry.case_id, entry.epoch, entry.prev_hash, device_id, k):
        raise CryptoError("bad_wrap", "wrap is bound to another case, epoch, head or device")
    if key_commit(k, entry.case_id, entry.epoch) != entry.key_commit:
        raise CryptoError("key_commit_mismatch", "wrapped key does not match key_commit")
    return k


def make_history_body(
    case_id: uuid.UUID,
    items: Sequence[tuple[DeviceCert, int, bytes]],
    *,
    hepk_secret: bytes | None = None,
) -> ShareHistoryBody:
    """Re-wrap earlier epoch keys: items are (recipient device, epoch, key)."""
    secret = hepk_secret if hepk_secret is not None else prim.random_bytes(32)
    hepk = prim.x25519_public(secret)
    wraps = []
    for d, epoch, key in items:
        nonce = wrap_nonce(hepk, d.device_id, epoch)
        plain = history_plaintext(case_id, epoch, d.device_id, key)
        wraps.append(
            HistoryWrap(d.device_id, epoch, prim.box_seal(secret, d.dxk_pub, nonce, plain))
        )
    wraps.sort(key=lambda w: w.device_id.bytes + u64(w.epoch))
    return ShareHistoryBody(hepk, tuple(wraps))


def open_history(
    entry: LogEntry, device_id: uuid.UUID, dxk_secret: bytes, chain: Mapping[int, LogEntry]
) -> dict[int, bytes]:
    """Earlier epoch keys shared with `device_id`, each checked against the
    key_commit of its own (already verified) log entry in `chain`."""
    body = entry.body()
    if not isinstance(body, ShareHistoryBody):
        raise CryptoError("bad_action", "not a share_history entry")
    keys: dict[int, bytes] = {}
    for w in body.items:
        if w.device_id != device_id:
            continue
        plain = prim.box_open(
            dxk_secret, body.hepk, wrap_nonce(body.hepk, device_id, w.epoch), w.ciphertext
        )
        k = plain[-EPOCH_KEY_LEN:]
        if plain != history_plaintext(entry.case_id, w.epoch, device_id, k):
            raise CryptoError("bad_wrap", "history wrap is bound to something else")
        old = chain.get(w.epoch)
        if old is None or key_commit(k, entry.case_id, w.epoch) != old.key_commit:
            raise CryptoError(
                "key_commit_mismatch", f"history key for epoch {w.epoch} does not match"
            )
        keys[w.epoch] = k
    return keys


def check_fork(a: LogEntry, b: LogEntry) -> None:
    """Two different entries for one epoch of one case: the server forked the log."""
    if a.case_id == b.case_id and a.epoch == b.epoch and a.entry_hash() != b.entry_hash():
        raise CryptoError("fork", f"two different entries for epoch {a.epoch}")


def verify_chain(
    entries: Sequence[LogEntry], *, trusted_head: LogEntry | None = None
) -> list[LogEntry]:
    """Verify a whole chain (from genesis, or after an already-verified
    `trusted_head`). Duplicates of one entry are tolerated; two different
    entries for one epoch raise fork. Returns the chain in epoch order."""
    by_epoch: dict[int, LogEntry] = {}
    for e in entries:
        seen = by_epoch.get(e.epoch)
        if seen is not None:
            check_fork(seen, e)
        if trusted_head is not None and e.epoch == trusted_head.epoch:
            check_fork(trusted_head, e)
        by_epoch.setdefault(e.epoch, e)
    prev = trusted_head
    chain: list[LogEntry] = []
    start = 0 if trusted_head is None else trusted_head.epoch + 1
    for epoch in sorted(k for k in by_epoch if k >= start):
        entry = by_epoch[epoch]
        verify_entry(prev, entry)  # raises wrong_epoch on a gap
        chain.append(entry)
        prev = entry
    return chain
