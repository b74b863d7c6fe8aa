"""Reading the events an action wrote, and checking that none carries a secret."""

from __future__ import annotations

import base64
import json

from django.db.models import Max

from collab.audit.models import AuditEvent
from collab.audit.services import _FORBIDDEN_DETAIL_KEYS

# The details keys audit_record refuses, checked here again on what was stored.
SECRET_KEYS = _FORBIDDEN_DETAIL_KEYS


def head() -> int:
    """The newest event's seq (0 for none): what an action's events come after."""
    return int(AuditEvent.objects.aggregate(top=Max("seq"))["top"] or 0)


def written(before: int) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(seq__gt=before).order_by("seq"))


def written_actions(before: int) -> list[str]:
    return [event.action for event in written(before)]


def only_event(before: int, action: str) -> AuditEvent:
    """The one event written since ``before``, which must be ``action``."""
    events = written(before)
    assert [e.action for e in events] == [action], [e.action for e in events]
    return events[0]


def _forms(secret: str | bytes) -> list[str]:
    if isinstance(secret, str):
        return [secret]
    return [
        base64.b64encode(secret).decode(),
        base64.urlsafe_b64encode(secret).rstrip(b"=").decode(),
        secret.hex(),
    ]


def assert_no_secret(event: AuditEvent, *secrets: str | bytes) -> None:
    """No secret-named details key, and none of ``secrets`` (bytes also as base64,
    base64url and hex) in the serialised target, reason, user agent or details."""
    assert not SECRET_KEYS & {str(key).lower() for key in event.details}
    text = json.dumps([event.target, event.reason, event.user_agent, event.details], sort_keys=True)
    for secret in secrets:
        assert secret, "an empty secret checks nothing"
        for form in _forms(secret):
            assert form not in text, f"{event.action} carries a secret"
