"""The SDK side of the consult record (docs/workflow.md §8): reading a case's record
from its verified, decrypted history, and building the next report or time entry from
it. ``CollabClient.consult_record``, ``send_consult_request``, ``send_report`` and
``add_time`` call these; the rules themselves are in collab.client.consult."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from collab.client import consult
from collab.client.consult import ConsultRecord, Item
from collab.client.errors import UsageError
from collab.client.keys import now_ms
from collab.crypto.roster import Role

if TYPE_CHECKING:
    from collab.client.sdk import CollabClient, Received

# ``send_report(supersedes=LATEST)``: the author's latest current report, if any.
LATEST = "latest"


def participants(client: CollabClient, case_id: uuid.UUID) -> tuple[uuid.UUID, set[uuid.UUID]]:
    """(requester, consultants) by this client's own reading of the verified log: the
    requester is the genesis entry's author; a consultant is anyone else who has been in
    a roster of the case with a role other than patient."""
    state = client.sync(case_id)
    if 0 not in state.chain:
        raise UsageError("this device does not hold the case's first log entry",
                         code="no_genesis")
    requester = state.chain[0].author_user_id
    consultants = {
        u.user_id
        for entry in state.chain.values()
        for u in entry.roster.users
        if u.role != Role.PATIENT and u.user_id != requester
    }
    return requester, consultants


def items(messages: list[Received]) -> list[Item]:
    return [
        Item(m.seq, m.sender_user_id, m.header.sent_ms, m.header.content_type, m.body)
        for m in messages
        if m.unavailable is None
    ]


def read(client: CollabClient, case_id: uuid.UUID) -> ConsultRecord:
    requester, consultants = participants(client, case_id)
    return consult.read_record(
        items(client.history(case_id)), requester=requester, consultants=consultants
    )


def _consultant_record(client: CollabClient, case_id: uuid.UUID) -> ConsultRecord:
    requester, consultants = participants(client, case_id)
    if client.user_id not in consultants:
        # The server refuses it too (not_consultant); nothing is sealed or sent.
        raise UsageError("only a consultant (a provider member who did not open the case) "
                         "sends reports and time entries", code="not_consultant")
    return consult.read_record(
        items(client.history(case_id)), requester=requester, consultants=consultants
    )


def report_body(
    client: CollabClient,
    case_id: uuid.UUID,
    *,
    assessment: str,
    recommendations: str,
    follow_up: str = "",
    referral_needed: bool = False,
    seen_in_last_14_days: bool | None = None,
    supersedes: int | str | None = LATEST,
    text: str | None = None,
) -> dict[str, Any]:
    """The next report of this user, with the time summary of their entries so far."""
    record = _consultant_record(client, case_id)
    if supersedes == LATEST:
        mine = [r for r in record.current_reports() if r.author == client.user_id]
        supersedes = mine[-1].seq if mine else None
    elif supersedes is not None and not isinstance(supersedes, int):
        raise UsageError("supersedes is a report's seq, 'latest' or None", code="bad_value")
    minutes, first, last = consult.report_time(record.time_of(client.user_id), now_ms())
    return consult.report_body(
        assessment=assessment, recommendations=recommendations, follow_up=follow_up,
        referral_needed=referral_needed, supersedes=supersedes, minutes=minutes,
        first_date=first, last_date=last, seen_in_last_14_days=seen_in_last_14_days,
        text=text,
    )


def time_body(
    client: CollabClient,
    case_id: uuid.UUID,
    *,
    minutes: int,
    kind: str = "manual",
    start_ms: int | None = None,
    end_ms: int | None = None,
    note: str = "",
) -> dict[str, Any]:
    """A time entry of this user, refused (ConsultBodyError, nothing sent) when it is
    negative, absurd, or would take the user's day past 24 h in this case."""
    record = _consultant_record(client, case_id)
    now = now_ms()
    end = now if end_ms is None else end_ms
    start = end if start_ms is None else start_ms
    body = consult.time_entry_body(kind=kind, minutes=minutes, start_ms=start, end_ms=end,
                                   note=note)
    consult.check_new_entry(record.time_of(client.user_id), body)
    return body
