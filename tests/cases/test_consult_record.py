"""The server-visible part of the consult record: a consult_report or time_entry only from
a consultant (``not_consultant``, nothing stored), and a stored report answers the case
in the same transaction (docs/workflow.md §8)."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from collab.accounts.models import Role
from collab.audit.models import AuditAction, AuditEvent
from collab.cases.models import Case, CaseStatusChange, Message, Notification, NotificationKind
from collab.cases.services.messages import SendRequest, message_send, message_send_batch
from collab.client import consult
from collab.errors import ServiceError
from tests.support.rooms import Member, build_room

pytestmark = pytest.mark.django_db

T0 = 1764633600000


def report_body(**kw: object) -> dict[str, object]:
    args: dict[str, object] = {"assessment": "a", "recommendations": "r", "minutes": 5,
                               "first_date": "2025-12-02", "last_date": "2025-12-02", **kw}
    return consult.report_body(**args)  # type: ignore[arg-type]


def time_body() -> dict[str, object]:
    return consult.time_entry_body(kind="manual", minutes=5, start_ms=T0, end_ms=T0)


def send(member: Member, content_type: str, body: dict[str, object]) -> int:
    envelope = member.state.seal(body, content_type=content_type)
    return message_send(user=member.user, device_id=member.device.device_id,
                        case_id=member.state.case_id, envelope=envelope).seq


def status_of(member: Member) -> str:
    return Case.objects.get(pk=member.state.case_id).status


def history(member: Member) -> list[tuple[str, str, str]]:
    return list(CaseStatusChange.objects.filter(case_id=member.state.case_id)
                .order_by("changed_at", "pk").values_list("from_status", "to_status", "reason"))


def refused(member: Member, content_type: str, body: dict[str, object]) -> str:
    before = (Message.objects.count(), AuditEvent.objects.count(), status_of(member))
    with pytest.raises(ServiceError) as raised:
        send(member, content_type, body)
    assert (Message.objects.count(), AuditEvent.objects.count(), status_of(member)) == before
    return raised.value.code


def test_report_from_a_consultant_accepts_and_answers_a_requested_case() -> None:
    opener, specialist = build_room(2)
    assert status_of(opener) == "requested"
    send(opener, "consult_request", consult.request_body(reason="r", question="q"))
    seq = send(specialist, "consult_report", report_body())
    assert status_of(opener) == "answered"
    assert history(opener) == [("requested", "accepted", "report"),
                               ("accepted", "answered", "report")]
    changes = AuditEvent.objects.filter(action=AuditAction.CASE_STATUS_CHANGED)
    assert [(e.details["to"], e.details["by"], e.actor_id) for e in changes] == [
        ("accepted", str(specialist.user.pk), specialist.user.pk),
        ("answered", str(specialist.user.pk), specialist.user.pk)]
    assert Message.objects.get(case_id=opener.state.case_id, seq=seq).sender_id == \
        specialist.user.pk
    assert Notification.objects.filter(user=opener.user,
                                       kind=NotificationKind.STATUS_CHANGED).count() == 2


def test_report_on_an_accepted_case_answers_it_once_and_a_newer_report_changes_nothing() -> None:
    opener, specialist = build_room(2)
    Case.objects.filter(pk=opener.state.case_id).update(status="accepted")
    first = send(specialist, "consult_report", report_body())
    send(specialist, "consult_report", report_body(supersedes=first))
    assert status_of(opener) == "answered"
    assert history(opener) == [("accepted", "answered", "report")]


def test_report_on_a_closed_case_is_stored_without_reopening_it() -> None:
    opener, specialist = build_room(2)
    Case.objects.filter(pk=opener.state.case_id).update(status="closed")
    send(specialist, "consult_report", report_body())
    assert status_of(opener) == "closed" and history(opener) == []


def test_time_entry_from_a_consultant_is_stored_and_changes_no_status() -> None:
    opener, specialist = build_room(2)
    send(specialist, "time_entry", time_body())
    assert status_of(opener) == "requested" and history(opener) == []


def test_report_by_the_requester_is_refused_and_changes_nothing() -> None:
    opener, _specialist = build_room(2)
    assert refused(opener, "consult_report", report_body()) == "not_consultant"


def test_time_entry_by_the_requester_is_refused_and_changes_nothing() -> None:
    opener, _specialist = build_room(2)
    assert refused(opener, "time_entry", time_body()) == "not_consultant"


@pytest.mark.parametrize("role", [Role.PATIENT, Role.ADMIN])
def test_report_or_time_by_a_member_who_is_not_a_provider_is_refused(role: str) -> None:
    opener, other = build_room(2)
    other.user.role = role
    other.user.save(update_fields=["role"])
    assert refused(other, "consult_report", report_body()) == "not_consultant"
    assert refused(other, "time_entry", time_body()) == "not_consultant"
    assert status_of(opener) == "requested"


def test_a_refused_report_in_a_batch_leaves_the_others_stored() -> None:
    opener, specialist = build_room(2)
    sends: list[tuple[Member, str, Mapping[str, object]]] = [
        (opener, "text", {"text": "hello"}),
        (opener, "consult_report", report_body()),
        (specialist, "consult_report", report_body()),
    ]
    requests = [
        SendRequest(m.user, m.device.device_id, m.state.case_id, m.state.seal(b, content_type=t))
        for m, t, b in sends
    ]
    results = message_send_batch(requests)
    assert isinstance(results[1], ServiceError) and results[1].code == "not_consultant"
    assert [getattr(r, "seq", None) for r in results] == [1, None, 2]
    assert status_of(opener) == "answered"
