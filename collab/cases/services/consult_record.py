"""The server-visible part of the consult record (docs/workflow.md §8).

Message bodies are encrypted, but ``content_type`` is in the signed header the server
checks. So the server refuses a ``consult_report`` or ``time_entry`` from anyone but a
consultant (``not_consultant``), and when it stores a consultant's report it moves the
case to ``answered`` in the same transaction: one store, one status change, no window in
which a client that lost its connection after the ack leaves the case unanswered.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from collab.accounts.models import Role, User
from collab.cases import models as m
from collab.cases.services import consults
from collab.errors import Forbidden, ServiceError

if TYPE_CHECKING:
    from collab.cases.services.messages import SendRequest

REPORT = "consult_report"
TIME_ENTRY = "time_entry"
CONSULTANT_ONLY = frozenset({REPORT, TIME_ENTRY})
REASON = "report"

S = m.Status


def is_consultant(*, case: m.Case, user: User) -> bool:
    """The rule of case_status_change: a provider member who did not open the case."""
    return user.role == Role.PROVIDER and user.pk != case.opened_by_id


def consult_sender_refusal(*, case: m.Case, user: User, content_type: str) -> ServiceError | None:
    """Called by message_send for each envelope that passed every other check."""
    if content_type in CONSULTANT_ONLY and not is_consultant(case=case, user=user):
        return Forbidden(
            "not_consultant", "Only a consulting provider sends reports and time entries."
        )
    return None


def reports_stored(
    *,
    accepted: Sequence[tuple[SendRequest, m.Message]],
    cases: Mapping[uuid.UUID, m.Case],
) -> None:
    """Called by message_send in the batch's transaction, after the messages are written:
    the first report stored on a requested or accepted case answers it (a requested one
    is accepted first, so the status history keeps its order). Later reports, and
    reports on an answered or closed case, change no status."""
    for request, message in accepted:
        if request.envelope.header.content_type != REPORT:
            continue
        case = cases[message.case_id]
        steps = {S.REQUESTED: [S.ACCEPTED, S.ANSWERED], S.ACCEPTED: [S.ANSWERED]}
        for to in steps.get(S(case.status), []):
            # consults' own recorder: the same row, audit event, frame and notices as
            # case_status_change, inside this batch's transaction.
            consults._record_status(
                case, to, by_id=request.user.pk, reason=REASON, actor=request.user,
                meta=request.meta,
            )
