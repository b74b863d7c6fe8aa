"""Canonical bytes of audit events and checkpoints, and the chain hash.

Pure Python, no JSON library involved: every field is written in a fixed order as
name and value, each with a big-endian length prefix, so two encoders can only agree
by producing the same bytes. ``details`` is encoded as a typed value tree with
dictionary keys sorted by their UTF-8 bytes. Floats are refused because databases
do not round-trip them exactly (PostgreSQL jsonb rewrites 1e20 as an integer).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

EVENT_DOMAIN = b"collab-audit-event-v1"
CHECKPOINT_DOMAIN = b"collab-audit-checkpoint-v1"
MAX_DETAILS_BYTES = 16 * 1024

JsonValue = None | bool | int | str | list["JsonValue"] | dict[str, "JsonValue"]


def _len4(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def _field(name: str, value: bytes) -> bytes:
    return _len4(name.encode("ascii")) + _len4(value)


def _text(value: str) -> bytes:
    return value.encode("utf-8")


def _opt_uuid(value: uuid.UUID | None) -> bytes:
    return b"" if value is None else str(value).encode("ascii")


def timestamp(value: datetime) -> str:
    """UTC with microseconds: the precision both databases keep."""
    if value.tzinfo is None:
        raise ValueError("audit times must be timezone-aware")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def normalise_details(value: Any, *, _depth: int = 0) -> JsonValue:
    """The JSON-safe form stored and hashed: UUIDs become strings, tuples lists."""
    if _depth > 8:
        raise ValueError("audit details nest too deeply")
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("audit details may not contain NUL characters")
        return value
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Mapping):
        out: dict[str, JsonValue] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError("audit detail keys must be strings")
            out[key] = normalise_details(item, _depth=_depth + 1)
        return out
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        return [normalise_details(item, _depth=_depth + 1) for item in value]
    raise TypeError(f"audit details cannot hold {type(value).__name__}")


def encode_value(value: JsonValue) -> bytes:
    """Typed, length-prefixed encoding: n, t, f, i<len><digits>, s<len><utf8>, l, d."""
    if value is None:
        return b"n"
    if value is True:
        return b"t"
    if value is False:
        return b"f"
    if isinstance(value, int):
        return b"i" + _len4(str(value).encode("ascii"))
    if isinstance(value, str):
        return b"s" + _len4(_text(value))
    if isinstance(value, list):
        return b"l" + len(value).to_bytes(4, "big") + b"".join(encode_value(v) for v in value)
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: k.encode("utf-8"))
        body = b"".join(encode_value(k) + encode_value(value[k]) for k in keys)
        return b"d" + len(keys).to_bytes(4, "big") + body
    raise TypeError(f"cannot encode {type(value).__name__}")


@dataclass(frozen=True)
class EventFields:
    """Everything the hash covers, in the order it covers them."""

    seq: int
    prev_hash: str
    recorded_at: datetime
    actor_id: uuid.UUID | None
    device_id: uuid.UUID | None
    action: str
    outcome: str
    reason: str
    case_id: uuid.UUID | None
    target: str
    client_address: str
    user_agent: str
    details: JsonValue


def event_bytes(fields: EventFields) -> bytes:
    return b"".join(
        [
            _len4(EVENT_DOMAIN),
            _field("seq", str(fields.seq).encode("ascii")),
            _field("prev_hash", fields.prev_hash.encode("ascii")),
            _field("recorded_at", timestamp(fields.recorded_at).encode("ascii")),
            _field("actor_id", _opt_uuid(fields.actor_id)),
            _field("device_id", _opt_uuid(fields.device_id)),
            _field("action", _text(fields.action)),
            _field("outcome", _text(fields.outcome)),
            _field("reason", _text(fields.reason)),
            _field("case_id", _opt_uuid(fields.case_id)),
            _field("target", _text(fields.target)),
            _field("client_address", _text(fields.client_address)),
            _field("user_agent", _text(fields.user_agent)),
            _field("details", encode_value(fields.details)),
        ]
    )


def event_hash(fields: EventFields) -> str:
    return hashlib.sha256(event_bytes(fields)).hexdigest()


def checkpoint_bytes(*, seq: int, event_hash: str, signed_at: datetime, reason: str) -> bytes:
    return b"".join(
        [
            _len4(CHECKPOINT_DOMAIN),
            _field("seq", str(seq).encode("ascii")),
            _field("hash", event_hash.encode("ascii")),
            _field("signed_at", timestamp(signed_at).encode("ascii")),
            _field("reason", _text(reason)),
        ]
    )
