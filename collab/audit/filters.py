"""Parsing export filters (query string or command line) with a reason for every refusal."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from collab.audit.models import AuditAction

ALLOWED = ("case", "user", "action", "from", "to")


class FilterError(ValueError):
    """A malformed filter; the message says which and why."""


@dataclass(frozen=True)
class AuditFilter:
    case_id: uuid.UUID | None = None
    user_id: uuid.UUID | None = None
    actions: tuple[AuditAction, ...] = ()
    since: datetime | None = None
    until: datetime | None = None

    def as_details(self) -> dict[str, str]:
        """What the export covered, for its own audit event."""
        out: dict[str, str] = {}
        if self.case_id:
            out["case"] = str(self.case_id)
        if self.user_id:
            out["user"] = str(self.user_id)
        if self.actions:
            out["action"] = ",".join(a.value for a in self.actions)
        if self.since:
            out["from"] = self.since.isoformat()
        if self.until:
            out["to"] = self.until.isoformat()
        return out


def _uuid(name: str, value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError as exc:
        raise FilterError(f"{name} must be a UUID") from exc


def _time(name: str, value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.strip().replace(" ", "+"))
    except ValueError as exc:
        raise FilterError(f"{name} must be an ISO 8601 date or date-time") from exc
    # A time without an offset is read as UTC, the server's audit clock.
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _action(value: str) -> AuditAction:
    text = value.strip()
    for action in AuditAction:
        if text.lower() == action.value or text.upper() == action.name:
            return action
    raise FilterError(f"unknown action {text!r}")


def parse_filter(params: Mapping[str, str]) -> AuditFilter:
    unknown = sorted(set(params) - set(ALLOWED))
    if unknown:
        raise FilterError(f"unknown filter {unknown[0]!r}; use {', '.join(ALLOWED)}")
    values = {k: v for k, v in params.items() if v not in ("", None)}
    since = _time("from", values["from"]) if "from" in values else None
    until = _time("to", values["to"]) if "to" in values else None
    if since and until and since > until:
        raise FilterError("from is after to")
    return AuditFilter(
        case_id=_uuid("case", values["case"]) if "case" in values else None,
        user_id=_uuid("user", values["user"]) if "user" in values else None,
        actions=tuple(_action(a) for a in values.get("action", "").split(",") if a),
        since=since,
        until=until,
    )
