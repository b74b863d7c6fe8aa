"""The archive file format written by audit_archive, and reading it back.

JSON lines: a header ``{"type": "header", "format": FORMAT, "before": <time>}``, one
line per event (every hashed field plus ``hash``), and a final anchor line
``{"type": "anchor", "seq", "hash", "count", "checkpoint": <signed statement>}``.
Reading never trusts a line: each becomes canonical.EventFields to be hashed again,
or a BadLine saying why it could not be.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from collab.audit import canonical

FORMAT = "collab-audit-archive-v1"
_TEXT_FIELDS = ("action", "outcome", "reason", "target", "client_address", "user_agent")


def header_line(*, before: datetime) -> dict[str, Any]:
    return {"type": "header", "format": FORMAT, "before": canonical.timestamp(before)}


def event_line(fields: canonical.EventFields, *, event_hash: str) -> dict[str, Any]:
    def opt(value: uuid.UUID | None) -> str | None:
        return None if value is None else str(value)

    return {
        "type": "event",
        "seq": fields.seq,
        "prev_hash": fields.prev_hash,
        "hash": event_hash,
        "recorded_at": canonical.timestamp(fields.recorded_at),
        "actor_id": opt(fields.actor_id),
        "device_id": opt(fields.device_id),
        "action": fields.action,
        "outcome": fields.outcome,
        "reason": fields.reason,
        "case_id": opt(fields.case_id),
        "target": fields.target,
        "client_address": fields.client_address,
        "user_agent": fields.user_agent,
        "details": fields.details,
    }


def anchor_line(
    *, seq: int, event_hash: str, count: int, checkpoint: dict[str, Any] | None
) -> dict[str, Any]:
    line: dict[str, Any] = {"type": "anchor", "seq": seq, "hash": event_hash, "count": count}
    if checkpoint is not None:
        line["checkpoint"] = checkpoint
    return line


def parse_timestamp(text: str) -> datetime:
    """The inverse of canonical.timestamp (exactly that form, nothing looser)."""
    value = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    if canonical.timestamp(value) != text:
        raise ValueError(f"{text!r} is not in the canonical form")
    return value


@dataclass(frozen=True)
class Header:
    line: int
    before: datetime


@dataclass(frozen=True)
class EventLine:
    line: int
    fields: canonical.EventFields
    event_hash: str

    @property
    def seq(self) -> int:
        return self.fields.seq


@dataclass(frozen=True)
class AnchorLine:
    line: int
    seq: int
    event_hash: str
    count: int
    checkpoint: Any


@dataclass(frozen=True)
class BadLine:
    line: int
    reason: str
    seq: int | None = None


Line = Header | EventLine | AnchorLine | BadLine


def _opt_uuid(value: Any, name: str) -> uuid.UUID | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name} is not a UUID")
    parsed = uuid.UUID(value)
    if str(parsed) != value:
        raise ValueError(f"{name} is not a lower-case hyphenated UUID")
    return parsed


def _int(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} is not an integer")
    return value


def _event(number: int, data: dict[str, Any]) -> EventLine:
    texts = {}
    for name in (*_TEXT_FIELDS, "prev_hash", "hash", "recorded_at"):
        value = data.get(name)
        if not isinstance(value, str):
            raise ValueError(f"{name} is missing or not text")
        texts[name] = value
    fields = canonical.EventFields(
        seq=_int(data.get("seq"), "seq"),
        prev_hash=texts["prev_hash"],
        recorded_at=parse_timestamp(texts["recorded_at"]),
        actor_id=_opt_uuid(data.get("actor_id"), "actor_id"),
        device_id=_opt_uuid(data.get("device_id"), "device_id"),
        action=texts["action"],
        outcome=texts["outcome"],
        reason=texts["reason"],
        case_id=_opt_uuid(data.get("case_id"), "case_id"),
        target=texts["target"],
        client_address=texts["client_address"],
        user_agent=texts["user_agent"],
        details=data.get("details"),
    )
    try:  # refuses floats and other non-canonical values, and nesting too deep to walk
        canonical.encode_value(fields.details)
    except (ValueError, TypeError, RecursionError) as exc:
        raise ValueError(f"details cannot be encoded ({type(exc).__name__})") from None
    return EventLine(line=number, fields=fields, event_hash=texts["hash"])


def _parse(number: int, text: str) -> Line:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return BadLine(number, f"not JSON ({exc.msg})")
    except RecursionError:
        return BadLine(number, "not JSON (nested too deeply)")
    if not isinstance(data, dict):
        return BadLine(number, "not a JSON object")
    seq = data.get("seq") if isinstance(data.get("seq"), int) else None
    kind = data.get("type")
    try:
        if kind == "event":
            return _event(number, data)
        if kind == "anchor":
            return AnchorLine(
                line=number,
                seq=_int(data.get("seq"), "seq"),
                event_hash=str(data.get("hash")),
                count=_int(data.get("count"), "count"),
                checkpoint=data.get("checkpoint"),
            )
        if kind == "header":
            if data.get("format") != FORMAT:
                return BadLine(number, f"header format is not {FORMAT}")
            return Header(line=number, before=parse_timestamp(str(data.get("before"))))
    except (ValueError, TypeError) as exc:
        return BadLine(number, f"not a valid {kind} line ({exc})", seq)
    return BadLine(number, f"unknown line type {kind!r}", seq)


def archive_lines(path: Path) -> Iterator[Line]:
    """Every line of an archive file, numbered from 1, parsed but not yet trusted; a
    file that cannot be read (permissions, I/O) ends in a BadLine saying so."""
    number = 0
    try:
        with path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    yield BadLine(number, "not UTF-8 text")
                    continue
                if text.strip():
                    yield _parse(number, text)
    except OSError as exc:
        yield BadLine(number + 1, f"the file cannot be read ({exc.strerror or exc})")


def looks_like_archive(path: Path) -> bool:
    """Whether a file's first line is an archive header (to pick archives out of a
    directory that holds other files too, such as anchors)."""
    try:
        with path.open("rb") as handle:
            first = handle.readline(4096)
    except OSError:
        return True  # unreadable: taken, so that the walk reports it rather than skip it
    return FORMAT.encode() in first and b'"header"' in first
