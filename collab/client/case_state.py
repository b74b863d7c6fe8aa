"""A client's view of one case: the verified log, its epoch keys, and message sealing.

Fail closed: every entry is verified before it is trusted and every message before it is
decrypted; any failure raises CryptoError for the caller to show.

One exception, by design: an epoch-key wrap (or a share_history wrap) that this device
cannot open. The entry's signature and roster verified, so the chain stays trusted; the
key of that epoch is simply not on this device. ``unavailable`` records epoch -> the
author of the entry; messages of that epoch are still verified (signature, roster) and
come back with an empty body and ``unavailable`` set, and the rest of the case reads.

Likewise an epoch in which this user was in the roster but this device was not (a
recovered or enrolled device): its key comes from the user's key backup (checked against
the entry's ``key_commit`` before it is kept, see ``restore_key``); until then, or when
no valid item exists, its messages are verified and come back unreadable (``missing``).

Entries are verified once. A client keeps the head it verified (``VerifiedHead``: epoch
and entry hash, in its state file); in a later run the entries up to that head are taken
again only if they hash-link to it, with no signature or certificate checked twice (the
entry hash fixes the whole entry, roster included). A server that rewrites history below
the kept head breaks the link: ``fork``.
"""

from __future__ import annotations

import dataclasses
import hmac
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from collab.client.keys import DeviceKeys, now_ms
from collab.crypto import primitives as prim
from collab.crypto.actions import Body, CreateBody, ShareHistoryBody
from collab.crypto.devcert import DeviceCert
from collab.crypto.envelope import (
    AttachmentRef,
    Envelope,
    Gap,
    Header,
    ReplayGuard,
    check_sender,
    open_envelope,
    seal_message,
    verify_envelope,
)
from collab.crypto.errors import CryptoError
from collab.crypto.log import (
    LogEntry,
    build_entry,
    key_commit,
    open_history,
    open_wrap,
    verify_chain,
)

NO_BACKUP = "this device joined later and no valid key backup item holds this epoch's key"


@dataclass(frozen=True)
class OpenedMessage:
    header: Header
    body: dict[str, Any]
    gap: Gap | None  # sender_seq values of this sender that never arrived
    # Verified, but its epoch key could not be opened on this device: the author of the
    # log entry whose wrap failed (the body is then empty).
    unavailable: uuid.UUID | None = None
    # Verified, in an epoch this user was in but this device was not, and no key for it
    # came from the key backup: why (the body is then empty).
    missing: str | None = None


@dataclass(frozen=True)
class VerifiedHead:
    """A head this client verified before: its epoch and entry hash."""

    epoch: int
    hash: bytes


def linked_chain(entries: Sequence[LogEntry], head: VerifiedHead) -> list[LogEntry]:
    """The entries from genesis up to ``head``, checked only by their hash links: the
    entry at ``head.epoch`` must hash to ``head.hash`` and each one below must hash to
    the next one's ``prev_hash``. What hashes to a verified head is the chain that was
    verified (SHA-512), so nothing in it is verified again. Raises ``fork`` for a
    different entry at or below the head, ``stale_head`` when the log stops below it
    (rolled back), ``wrong_epoch`` for a gap."""
    by_epoch: dict[int, LogEntry] = {}
    for e in entries:
        if e.epoch > head.epoch:
            continue
        seen = by_epoch.setdefault(e.epoch, e)
        if seen is not e and seen.entry_hash() != e.entry_hash():
            raise CryptoError("fork", f"two different entries for epoch {e.epoch}")
    top = by_epoch.get(head.epoch)
    if top is None:
        if not any(e.epoch >= head.epoch for e in entries):
            raise CryptoError("stale_head", f"the log was rolled back below epoch {head.epoch}, "
                                            "which this client verified before")
        raise CryptoError("wrong_epoch", f"the log skips epoch {head.epoch}")
    expected = head.hash
    chain: list[LogEntry] = []
    for epoch in range(head.epoch, -1, -1):
        entry = by_epoch.get(epoch)
        if entry is None:
            raise CryptoError("wrong_epoch", f"the log skips epoch {epoch}")
        if not hmac.compare_digest(entry.entry_hash(), expected):
            raise CryptoError("fork", f"the log differs at epoch {epoch} from the one this "
                                      "client verified before")
        expected = entry.prev_hash
        chain.append(entry)
    chain.reverse()
    return chain


class CaseState:
    def __init__(self, case_id: uuid.UUID, device: DeviceKeys) -> None:
        self.case_id = case_id
        self.device = device
        self.chain: dict[int, LogEntry] = {}
        self.keys: dict[int, bytes] = {}
        # Epochs whose key wrap for this device could not be opened -> that entry's author.
        self.unavailable: dict[int, uuid.UUID] = {}
        self.replay = ReplayGuard()
        self.sender_seq = 0
        # Epochs whose key this client already asked the key backup for (once per run).
        self.backup_asked: set[int] = set()
        self.restored: set[int] = set()  # epochs whose key came from the key backup
        self.backup_refused: dict[int, str] = {}  # epoch -> why its backup item was refused

    def lacking(self) -> list[int]:
        """Epochs this user was in the roster of but whose key this device lacks (it
        joined later, or its wrap could not be opened), ascending."""
        me = self.device.user_id
        return sorted(e for e, entry in self.chain.items()
                      if e not in self.keys and entry.roster.user(me) is not None)

    def restore_key(self, epoch: int, epoch_key: bytes) -> None:
        """Keep a key from the key backup, only if it is the one the epoch's verified
        entry commits to (``key_commit_mismatch`` otherwise; nothing is kept)."""
        entry = self.chain.get(epoch)
        if entry is None:
            raise CryptoError("wrong_epoch", "no verified entry for this epoch")
        if entry.roster.user(self.device.user_id) is None:
            raise CryptoError("wrong_epoch", "this user was not in that epoch's roster")
        if not hmac.compare_digest(key_commit(epoch_key, self.case_id, epoch), entry.key_commit):
            raise CryptoError("key_commit_mismatch", "the backed-up key is not the epoch's key")
        self.keys[epoch] = epoch_key
        self.unavailable.pop(epoch, None)

    @property
    def head(self) -> LogEntry:
        return self.chain[max(self.chain)]

    def accept_entries(
        self, entries: Sequence[LogEntry], *, verified: VerifiedHead | None = None
    ) -> list[LogEntry]:
        """Verify new entries on top of what is trusted; learn this device's keys.

        ``verified``: the head this client verified in an earlier run. On a state that
        holds no chain yet, the entries up to it are taken by their hash links
        (``linked_chain``) and only those above it are verified. Returns the entries
        verified now (not the linked ones, which were verified before)."""
        if verified is not None and verified.epoch >= 0 and not self.chain:
            for entry in linked_chain(entries, verified):
                if entry.case_id != self.case_id:
                    raise CryptoError("wrong_case", "entry belongs to another case")
                self._learn(entry)
        trusted = self.head if self.chain else None
        fresh = [e for e in entries if trusted is None or e.epoch > trusted.epoch]
        for e in entries:
            known = self.chain.get(e.epoch)
            # `is`: an entry just hash-linked is not hashed twice more (rosters are big).
            if known is not None and known is not e and known.entry_hash() != e.entry_hash():
                raise CryptoError("fork", f"two different entries for epoch {e.epoch}")
        checked = verify_chain(fresh, trusted_head=trusted)
        for entry in checked:
            if entry.case_id != self.case_id:
                raise CryptoError("wrong_case", "entry belongs to another case")
            self._learn(entry)
        return checked

    def _learn(self, entry: LogEntry) -> None:
        """Keep a trusted entry and open what it holds for this device."""
        self.chain[entry.epoch] = entry
        if entry.roster.device(self.device.device_id) is not None:
            try:
                self.keys[entry.epoch] = open_wrap(
                    entry, self.device.device_id, self.device.dxk_secret
                )
            except CryptoError:
                self.unavailable[entry.epoch] = entry.author_user_id
            if entry.action.name == "SHARE_HISTORY":
                self._open_history(entry)

    def _open_history(self, entry: LogEntry) -> None:
        """Each shared earlier key on its own, so one bad wrap costs only its epoch."""
        body = entry.body()
        if not isinstance(body, ShareHistoryBody):
            return
        me = self.device.device_id
        for item in body.items:
            if item.device_id != me:
                continue
            single = dataclasses.replace(
                entry, action_body=ShareHistoryBody(body.hepk, (item,)).encode()
            )
            try:
                shared = open_history(single, me, self.device.dxk_secret, self.chain)
            except CryptoError:
                if item.epoch not in self.keys:
                    self.unavailable[item.epoch] = entry.author_user_id
                continue
            for epoch, key in shared.items():
                self.keys.setdefault(epoch, key)
                self.unavailable.pop(epoch, None)

    @property
    def head_key_unavailable(self) -> bool:
        """This device is in the head roster but could not open the head's key."""
        return bool(self.chain) and self.head.epoch not in self.keys \
            and self.head.epoch in self.unavailable

    def genesis(self, device_cert: DeviceCert, uik_pub: bytes) -> LogEntry:
        entry, _ = build_entry(
            None, CreateBody(uik_pub, (device_cert,)), author_seed=self.device.dsk_seed,
            author_user_id=self.device.user_id, author_device_id=self.device.device_id,
            created_ms=now_ms(), case_id=self.case_id,
        )
        return entry

    def next_entry(self, body: Body) -> LogEntry:
        entry, _ = build_entry(
            self.head, body, author_seed=self.device.dsk_seed, author_user_id=self.device.user_id,
            author_device_id=self.device.device_id, created_ms=now_ms(),
        )
        return entry

    def seal(
        self, body: Mapping[str, Any], *, content_type: str = "text",
        attachments: Sequence[AttachmentRef] = (), client_msg_id: bytes | None = None,
    ) -> Envelope:
        head = self.head
        if head.epoch not in self.keys:
            raise CryptoError("wraps_mismatch", "this device holds no key for the current epoch")
        self.sender_seq += 1  # consecutive, so receivers can show gaps
        return seal_message(
            dsk_seed=self.device.dsk_seed, epoch_key=self.keys[head.epoch], case_id=self.case_id,
            epoch=head.epoch, log_head=head.entry_hash(), sender_user_id=self.device.user_id,
            sender_device_id=self.device.device_id, sender_seq=self.sender_seq, sent_ms=now_ms(),
            content_type=content_type, body=body, attachments=attachments,
            client_msg_id=client_msg_id if client_msg_id is not None else prim.random_bytes(16),
        )

    def open(self, envelope: Envelope) -> OpenedMessage:
        """Verify against the log, decrypt, check inner; replays raise CryptoError(replay)."""
        entry = self.chain.get(envelope.header.epoch)
        if entry is None:
            raise CryptoError("wrong_epoch", "message names an epoch this client has not verified")
        dsk_pub = check_sender(envelope, entry)
        key = self.keys.get(envelope.header.epoch)
        author = self.unavailable.get(envelope.header.epoch)
        missing = None
        if key is None and author is None:
            if entry.roster.user(self.device.user_id) is None:
                raise CryptoError("wraps_mismatch", "no key for this epoch on this device")
            missing = NO_BACKUP
        self.replay.check(envelope.header)
        if key is None:
            verify_envelope(envelope, dsk_pub)  # signed by a roster device, just unreadable
            body: dict[str, Any] = {}
        else:
            body = open_envelope(envelope, key, sender_dsk_pub=dsk_pub)
        gap = self.replay.accept(envelope.header)
        if envelope.header.sender_device_id == self.device.device_id:
            self.sender_seq = max(self.sender_seq, envelope.header.sender_seq)
        return OpenedMessage(envelope.header, body, gap, author if key is None else None,
                             missing)
