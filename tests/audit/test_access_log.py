from __future__ import annotations

import uuid

import pytest

from collab.audit import selectors
from collab.audit.models import AuditEvent
from collab.audit.services import AuditAction, audit_record
from collab.cases import access
from tests.support.users import make_user, verified_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def members(monkeypatch: pytest.MonkeyPatch):
    """Membership comes from the cases app; here a set of (user, case) pairs controls it."""
    allowed: set[tuple[uuid.UUID, uuid.UUID]] = set()
    monkeypatch.setattr(
        access, "is_case_member", lambda *, user, case_id: (user.pk, case_id) in allowed
    )
    return allowed


def url(case_id: uuid.UUID) -> str:
    return f"/api/cases/{case_id}/access-log"


def test_patient_member_sees_who_accessed_the_case(members) -> None:
    pcp = make_user("pcp")
    pat = make_user("pat", role="patient", totp=False)
    case_id = uuid.uuid4()
    members.add((pat.pk, case_id))
    audit_record(action=AuditAction.CASE_OPENED, actor=pcp, case_id=case_id)
    audit_record(action=AuditAction.ATTACHMENT_DOWNLOADED, actor=pcp, case_id=case_id)
    audit_record(action=AuditAction.HISTORY_READ, actor=pcp, case_id=uuid.uuid4())
    response = verified_client(pat).get(url(case_id))
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2 and body["page"] == 1
    assert [e["action"] for e in body["entries"]] == ["attachment_downloaded", "case_opened"]
    assert body["entries"][0]["actor"] == {"id": str(pcp.pk), "display": "Pcp"}
    assert "client_address" not in body["entries"][0]
    viewed = AuditEvent.objects.get(action=AuditAction.AUDIT_VIEWED)
    assert (viewed.actor_id, viewed.case_id) == (pat.pk, case_id)


def test_access_log_is_paged(members, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(selectors, "ACCESS_LOG_PAGE_SIZE", 2)
    pcp = make_user("pcp")
    case_id = uuid.uuid4()
    members.add((pcp.pk, case_id))
    for _ in range(5):
        audit_record(action=AuditAction.HISTORY_READ, actor=pcp, case_id=case_id)
    client = verified_client(pcp)
    page3 = client.get(url(case_id), {"page": "3"}).json()
    assert (page3["pages"], len(page3["entries"]), page3["entries"][0]["seq"]) == (3, 1, 1)
    assert client.get(url(case_id), {"page": "zero"}).status_code == 400


def test_non_member_gets_403_and_the_attempt_is_audited(members) -> None:
    outsider = make_user("outsider")
    case_id = uuid.uuid4()
    audit_record(action=AuditAction.CASE_OPENED, case_id=case_id)
    response = verified_client(outsider).get(url(case_id))
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    denied = AuditEvent.objects.get(action=AuditAction.ACCESS_DENIED)
    assert (denied.actor_id, denied.case_id, denied.outcome) == (outsider.pk, case_id, "failure")


def test_signed_out_client_gets_401(client) -> None:
    assert client.get(url(uuid.uuid4())).status_code == 401
