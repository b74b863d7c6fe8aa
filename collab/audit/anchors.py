"""Signed statements about one chain position, kept away from the server.

A statement is a checkpoint's signed fields (seq, hash, signed_at, reason) with the
public key and the Ed25519 signature over canonical.checkpoint_bytes. It travels as
the ``checkpoint`` of an archive's anchor line and, with a format tag and the
installation name, as an anchor file (``audit_anchor``) an auditor keeps: every later
state of the chain must still hold that event with that hash (``audit_verify --anchor``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from collab.audit import archives, canonical, conf, keys
from collab.audit.models import AuditCheckpoint

ANCHOR_FORMAT = "collab-audit-anchor"
ANCHOR_VERSION = 1
_STATEMENT_KEYS = ("seq", "hash", "signed_at", "reason", "public_key", "signature")


class AnchorError(ValueError):
    """A statement or anchor file that cannot be read as one."""


@dataclass(frozen=True)
class Statement:
    seq: int
    event_hash: str
    signed_at: datetime
    reason: str
    public_key: str
    signature: str

    def signature_ok(self) -> bool:
        message = canonical.checkpoint_bytes(
            seq=self.seq,
            event_hash=self.event_hash,
            signed_at=self.signed_at,
            reason=self.reason,
        )
        return keys.signature_valid(
            public_key=self.public_key, message=message, signature=self.signature
        )


@dataclass(frozen=True)
class Anchor:
    path: str
    installation: str
    statement: Statement


def checkpoint_statement(checkpoint: AuditCheckpoint) -> dict[str, Any]:
    return {
        "seq": checkpoint.seq,
        "hash": checkpoint.event_hash,
        "signed_at": canonical.timestamp(checkpoint.signed_at),
        "reason": checkpoint.reason,
        "public_key": checkpoint.public_key,
        "signature": checkpoint.signature,
    }


def statement_parse(data: Any) -> Statement:
    if not isinstance(data, dict):
        raise AnchorError("not a JSON object")
    missing = [key for key in _STATEMENT_KEYS if key not in data]
    if missing:
        raise AnchorError(f"lacks {', '.join(missing)}")
    seq = data["seq"]
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise AnchorError("seq is not a positive integer")
    texts = {key: data[key] for key in _STATEMENT_KEYS if key != "seq"}
    bad = [key for key, value in texts.items() if not isinstance(value, str)]
    if bad:
        raise AnchorError(f"{', '.join(bad)} not text")
    try:
        signed_at = archives.parse_timestamp(texts["signed_at"])
    except ValueError as exc:
        raise AnchorError(f"signed_at: {exc}") from exc
    return Statement(
        seq=seq,
        event_hash=texts["hash"],
        signed_at=signed_at,
        reason=texts["reason"],
        public_key=texts["public_key"],
        signature=texts["signature"],
    )


def anchor_document(checkpoint: AuditCheckpoint) -> dict[str, Any]:
    return {
        "format": ANCHOR_FORMAT,
        "version": ANCHOR_VERSION,
        "installation": conf.installation_name(),
        **checkpoint_statement(checkpoint),
    }


def anchor_load(path: Path) -> Anchor:
    """Read an anchor file; AnchorError names what is wrong with it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AnchorError(f"anchor {path} cannot be read: {exc}") from exc
    except RecursionError:
        raise AnchorError(f"anchor {path} cannot be read: JSON nested too deeply") from None
    if not isinstance(data, dict) or data.get("format") != ANCHOR_FORMAT:
        raise AnchorError(f"anchor {path} is not a {ANCHOR_FORMAT} file")
    if data.get("version") != ANCHOR_VERSION:
        raise AnchorError(f"anchor {path} has version {data.get('version')!r}, not 1")
    installation = data.get("installation")
    if not isinstance(installation, str):
        raise AnchorError(f"anchor {path} names no installation")
    try:
        statement = statement_parse(data)
    except AnchorError as exc:
        raise AnchorError(f"anchor {path}: {exc}") from exc
    return Anchor(path=str(path), installation=installation, statement=statement)
