"""The retention line of a case for the command line: the same words as the browser's
(frontend/static/collab/app/retention.js), from the ``retention`` field of a case answer,
tested on the same scenarios (tests/policy/retention_lines.json). Dates are in UTC."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def day_text(value: str) -> str:
    """"2 Jan 2027" (not the locale's month names: the line reads the same everywhere)."""
    try:
        at = _when(value)
    except (ValueError, TypeError, AttributeError):
        return "an unknown day"  # a malformed date from the server must not break the line
    return f"{at.day} {_MONTHS[at.month - 1]} {at.year}"


def _days(n: int) -> str:
    return "1 day" if n == 1 else f"{n} days"


def retention_line(retention: Mapping[str, Any] | None, *, now: datetime) -> tuple[str, str]:
    """``(state, text)`` as retention.js's ``retentionLine``; ``("unknown", "")`` when
    the answer has no ``retention`` field."""
    if not retention:
        return "unknown", ""
    days = retention.get("lifespan_days")
    closed = retention.get("closed_at")
    after = retention.get("delete_after")
    purged = retention.get("purged_at")
    if retention.get("legal_hold"):
        return "held", "On legal hold: nothing will be deleted."
    earlier = (
        f" Messages and files before {day_text(purged)} were deleted after the retention period."
        if purged else ""
    )
    if closed:
        since = f"Closed {day_text(closed)}: "
        if purged and _when(purged) >= _when(closed):
            return "purged", (
                f"{since}messages and files were deleted on {day_text(purged)} "
                "after the retention period."
            )
        if after and days:
            span = f"{_days(days)} after closing"
            if _when(after) <= now:
                return "due", (
                    f"{since}messages and files will be deleted at the next purge "
                    f"(due {day_text(after)}, {span})."
                )
            return "scheduled", (
                f"{since}messages and files will be deleted on {day_text(after)} ({span})."
            )
        return "kept_closed", (
            f"{since}messages and files are kept (no retention period is set).{earlier}"
        )
    if days:
        return "kept_open_then", f"Kept until the case is closed, then for {_days(days)}.{earlier}"
    return "kept", f"Messages and files are kept: no retention period is set.{earlier}"
