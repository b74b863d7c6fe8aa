"""Emission tests for the retention policy, legal holds and the purge. Each drives the
real route (an admin's verified session) or the management command and asserts every
field of what was written; refusals write nothing, and no content is in the events."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
import time_machine
from django.core.management import call_command
from django.utils import timezone

from collab.audit.models import AuditAction
from collab.cases.models import Case
from tests.audit.emissions import emits
from tests.audit.emissions.test_cases import (
    assert_no_content,
    expected,
    fields,
    head_seq,
    only,
    written,
)
from tests.retention.support import admin_client, case_with_content, close
from tests.support.actor import Actor
from tests.support.users import make_user, verified_client

pytestmark = pytest.mark.django_db

UA = "emission-test/1.0"


@emits(AuditAction.RETENTION_POLICY_CHANGED)
def test_retention_policy_changed_by_an_admin_and_the_command() -> None:
    admin, client = admin_client()
    before = head_seq()
    answer = client.put("/api/retention/policy", data={"lifespan_days": 30},
                        content_type="application/json", HTTP_USER_AGENT=UA)
    assert answer.status_code == 200, answer.content
    event = only(before, AuditAction.RETENTION_POLICY_CHANGED)
    assert fields(event) == expected(
        AuditAction.RETENTION_POLICY_CHANGED, actor=admin, target="retention:policy",
        details={"from_days": None, "to_days": 30},
    )
    assert event.user_agent == UA
    # The operator at the command line: no actor.
    before = head_seq()
    call_command("retention_policy", "--never", stdout=StringIO())
    event = only(before, AuditAction.RETENTION_POLICY_CHANGED)
    assert fields(event) == expected(
        AuditAction.RETENTION_POLICY_CHANGED, target="retention:policy",
        details={"from_days": 30, "to_days": None},
    )
    # Refused (a provider; the same value again): nothing recorded.
    before = head_seq()
    doc = verified_client(make_user("doc"))
    assert doc.put("/api/retention/policy", data={"lifespan_days": 1},
                   content_type="application/json").status_code == 403
    assert client.put("/api/retention/policy", data={"lifespan_days": None},
                      content_type="application/json").status_code == 409
    assert written(before) == []


@emits(AuditAction.LEGAL_HOLD_PLACED, AuditAction.LEGAL_HOLD_RELEASED)
def test_legal_hold_placed_and_released() -> None:
    pcp = Actor("pcp").register()
    state = pcp.open_case()
    admin, client = admin_client()
    path = f"/api/retention/cases/{state.case_id}/hold"
    before = head_seq()
    assert client.post(path, HTTP_USER_AGENT=UA).status_code == 200
    event = only(before, AuditAction.LEGAL_HOLD_PLACED)
    assert fields(event) == expected(
        AuditAction.LEGAL_HOLD_PLACED, actor=admin, case=state.case_id,
        target=f"case:{state.case_id}", details={"status": "requested"},
    )
    assert event.user_agent == UA
    placed_at = Case.objects.get(pk=state.case_id).legal_hold_at
    assert placed_at is not None
    before = head_seq()
    assert client.post(path).status_code == 409
    assert pcp.client.post(path).status_code == 403
    assert written(before) == []
    before = head_seq()
    assert client.delete(path).status_code == 200
    event = only(before, AuditAction.LEGAL_HOLD_RELEASED)
    assert fields(event) == expected(
        AuditAction.LEGAL_HOLD_RELEASED, actor=admin, case=state.case_id,
        target=f"case:{state.case_id}",
        details={"placed_at": placed_at.isoformat(), "placed_by": str(admin.pk)},
    )
    before = head_seq()
    assert client.delete(path).status_code == 409
    assert pcp.client.delete(path).status_code == 403
    assert written(before) == []


@emits(AuditAction.CASE_CONTENT_PURGED)
def test_case_content_purged_by_the_command_once() -> None:
    with time_machine.travel(timezone.now(), tick=False) as clock:
        pcp, derm = Actor("pcp").register(), Actor("derm", specialty="Dermatology").register()
        content = case_with_content(pcp, derm)
        call_command("retention_policy", "--days", "30", stdout=StringIO())
        close(pcp, content.case_id)
        closed_at = Case.objects.get(pk=content.case_id).status_changed_at
        assert closed_at is not None
        clock.shift(timedelta(days=30))
        # A dry run records nothing.
        before = head_seq()
        call_command("purge_expired", "--dry-run", stdout=StringIO())
        assert written(before) == []
        call_command("purge_expired", stdout=StringIO())
        event = only(before, AuditAction.CASE_CONTENT_PURGED)
        assert fields(event) == expected(
            AuditAction.CASE_CONTENT_PURGED, case=content.case_id,
            target=f"case:{content.case_id}",
            details={"messages": 3, "blobs": 3, "closed_at": closed_at.isoformat(),
                     "lifespan_days": 30},
        )
        assert_no_content(event, *content.ciphertexts, "private note")
        # Purged once: the next run records nothing.
        before = head_seq()
        call_command("purge_expired", stdout=StringIO())
        assert written(before) == []
