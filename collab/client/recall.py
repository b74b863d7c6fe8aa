"""Recall in the client: which removed messages the sender really recalled.

The server says a message is gone (a tombstone in history, a ``recalled`` frame live);
only a statement signed by a device of the message's sender (protocol-crypto §9e) makes
it "recalled by the sender". Anything else the server removed is shown as such. The
browser applies the same policy (frontend/static/collab/app/recall.js).
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from collab.crypto.envelope import Header
from collab.crypto.errors import CryptoError
from collab.crypto.log import LogEntry
from collab.crypto.recall import Recall, check_recall_names, verify_recall
from collab.crypto.wire import b64d

RECALLED = "recalled"  # a valid recall by a device of the sender
REMOVED_BY_SERVER = "removed_by_server"  # no valid recall: the server removed it
PURGED = "purged"  # the server says its retention policy removed it


@dataclass(frozen=True)
class Removed:
    """A message that is no longer there, and who this client believes removed it."""

    seq: int
    sender_user_id: uuid.UUID | None  # the verified sender when known, else the server's claim
    verdict: str  # RECALLED, REMOVED_BY_SERVER or PURGED
    at: datetime.datetime | None  # the signed recall time; the server's time otherwise
    detail: str = ""  # why a claimed recall was not honoured (a CryptoError code)

    def describe(self) -> str:
        when = self.at.strftime("%Y-%m-%d %H:%M:%S UTC") if self.at is not None else "?"
        if self.verdict == RECALLED:
            return f"recalled by the sender at {when}"
        if self.verdict == PURGED:
            return f"removed by the server at {when} (retention policy)"
        why = f": {self.detail}" if self.detail else ""
        return f"removed by the server at {when} (no valid recall from its sender{why})"


def _time(value: object) -> datetime.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _uuid(value: object) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value)) if isinstance(value, str) else None
    except ValueError:
        return None


def sender_device_key(chain: Iterable[LogEntry], user_id: uuid.UUID,
                      device_id: uuid.UUID) -> bytes | None:
    """The DSK of ``device_id`` if some verified roster of the case lists it under
    ``user_id``: the message's sending device may have been removed since."""
    for entry in chain:
        cert = entry.roster.device(device_id)
        if cert is not None and cert.user_id == user_id:
            return cert.dsk_pub
    return None


def recalling_device_key(chain: Iterable[LogEntry], user_id: uuid.UUID, device_id: uuid.UUID,
                         epoch: int | None) -> bytes | None:
    """The DSK of the recalling device only if the head roster, or the roster of the
    message's ``epoch`` (known from the header this client verified), lists it under
    ``user_id`` (protocol-crypto §9e): a device revoked before both cannot recall."""
    entries = list(chain)
    if not entries:
        return None
    head = max(entries, key=lambda entry: entry.epoch)
    rosters = [head] + [e for e in entries if epoch is not None and e.epoch == epoch]
    return sender_device_key(rosters, user_id, device_id)


def judge_recall(*, case_id: uuid.UUID, seq: int, sender_user_id: uuid.UUID | None,
                 statement: Mapping[str, Any], sig: object, chain: Iterable[LogEntry],
                 known_header: Header | None) -> Removed:
    """RECALLED only if the statement names this case and seq (and, when the client
    holds the message, exactly that message), its recalling device is a device of the
    sender in the head roster or the message's epoch roster, and the signature verifies;
    else REMOVED_BY_SERVER."""
    sender = known_header.sender_user_id if known_header is not None else sender_user_id
    try:
        recall = Recall.from_wire(statement)
        if recall.case_id != case_id or recall.seq != seq:
            raise CryptoError("recall_mismatch", "the recall names another message")
        if known_header is not None:
            check_recall_names(recall, known_header, seq)
        if sender is None:
            raise CryptoError("unauthorized_author", "no sender named")
        entries = list(chain)
        if sender_device_key(entries, sender, recall.sender_device_id) is None:
            raise CryptoError("unauthorized_author", "the sending device is not the sender's")
        epoch = known_header.epoch if known_header is not None else None
        key = recalling_device_key(entries, sender, recall.device_id, epoch)
        if key is None:
            raise CryptoError("unauthorized_author", "the recalling device is not the sender's")
        verify_recall(key, recall, b64d(sig, 64))
    except CryptoError as error:
        return Removed(seq, sender, REMOVED_BY_SERVER, None, error.code)
    at = datetime.datetime.fromtimestamp(recall.recalled_ms / 1000, datetime.UTC)
    return Removed(seq, sender, RECALLED, at)


def judge_tombstone(case_id: uuid.UUID, item: Mapping[str, Any], chain: Iterable[LogEntry],
                    known_header: Header | None) -> Removed:
    """A history item ``{seq, removed: {...}}`` (protocol.md §5)."""
    seq = item.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        raise CryptoError("bad_field", "tombstone without a valid server sequence number")
    removed = item.get("removed")
    removed = removed if isinstance(removed, Mapping) else {}
    sender = _uuid(removed.get("sender_user_id"))
    at = _time(removed.get("at"))
    statement = removed.get("recall")
    if isinstance(statement, Mapping):
        verdict = judge_recall(case_id=case_id, seq=seq, sender_user_id=sender,
                               statement=statement, sig=statement.get("sig"), chain=chain,
                               known_header=known_header)
        return verdict if verdict.verdict == RECALLED else Removed(
            seq, verdict.sender_user_id, REMOVED_BY_SERVER, at, verdict.detail)
    if known_header is not None:
        sender = known_header.sender_user_id
    verdict_name = PURGED if removed.get("reason") == "purged" else REMOVED_BY_SERVER
    return Removed(seq, sender, verdict_name, at)


def judge_frame(case_id: uuid.UUID, frame: Mapping[str, Any], chain: Iterable[LogEntry],
                known_header: Header | None) -> Removed:
    """A live ``recalled`` frame."""
    seq = frame.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        raise CryptoError("bad_field", "recalled frame without a valid sequence number")
    statement = frame.get("recall")
    verdict = judge_recall(case_id=case_id, seq=seq, sender_user_id=_uuid(frame.get("by")),
                           statement=statement if isinstance(statement, Mapping) else {},
                           sig=frame.get("sig"), chain=chain, known_header=known_header)
    if verdict.verdict != RECALLED:
        return Removed(seq, verdict.sender_user_id, REMOVED_BY_SERVER, _time(frame.get("at")),
                       verdict.detail)
    return verdict
