"""Emission tests for reading the audit trail itself: the export (endpoint and command),
the checkpoint list and a case's access log, the checkpoint command, and the refusals."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client

from collab.audit.models import AuditAction, AuditCheckpoint, AuditEvent, AuditHead
from tests.audit.emissions import emits
from tests.audit.emissions.accounts_support import assert_no_secret, head, only_event, written
from tests.support.actor import Actor
from tests.support.users import make_user, verified_client

pytestmark = pytest.mark.django_db

ADDR = "10.0.0.9"
AGENT = "pytest-admin"


def get(client: Any, path: str) -> Any:
    return client.get(path, REMOTE_ADDR=ADDR, HTTP_USER_AGENT=AGENT)


def assert_request(event: AuditEvent) -> None:
    assert (event.client_address, event.user_agent) == (ADDR, AGENT)


@pytest.fixture
def case_with_events() -> tuple[Actor, uuid.UUID]:
    """A case whose opening left events on the trail."""
    pcp = Actor("pcp").register()
    return pcp, pcp.open_case().case_id


@emits(AuditAction.AUDIT_EXPORTED)
def test_export_records_its_filters_and_count(case_with_events: Any) -> None:
    _, case_id = case_with_events
    admin = make_user("boss", role="admin")
    client = verified_client(admin)
    matching = AuditEvent.objects.filter(case_id=case_id).count()
    assert matching >= 1
    before = head()
    response = get(client, f"/api/audit/export?case={case_id}&from=2025-01-01")
    assert response.status_code == 200
    assert len(response.json()["entry"]) == matching
    event = only_event(before, AuditAction.AUDIT_EXPORTED)
    assert event.actor_id == admin.pk
    assert (event.device_id, event.case_id) == (None, case_id)
    assert (event.outcome, event.reason, event.target) == ("success", "", "audit:export")
    assert event.details == {
        "case": str(case_id),
        "from": "2025-01-01T00:00:00+00:00",
        "count": matching,
    }
    assert_request(event)
    assert_no_secret(event, client.cookies["sessionid"].value)


@emits(AuditAction.AUDIT_EXPORTED)
@pytest.mark.usefixtures("case_with_events")
def test_export_command_records_no_actor(tmp_path: Path) -> None:
    before = head()
    output = tmp_path / "export.json"
    call_command("audit_export", "--action", "CASE_OPENED", "--output", str(output))
    assert len(json.loads(output.read_text())["entry"]) == 1
    event = only_event(before, AuditAction.AUDIT_EXPORTED)
    assert (event.actor_id, event.device_id, event.case_id) == (None, None, None)
    assert (event.outcome, event.reason, event.target) == ("success", "", "audit:export")
    assert event.details == {"action": "case_opened", "count": 1}
    assert (event.client_address, event.user_agent) == ("", "")


@emits(AuditAction.AUDIT_VIEWED)
def test_listing_checkpoints_is_recorded_with_the_count() -> None:
    admin = make_user("boss", role="admin")
    client = verified_client(admin)
    call_command("audit_checkpoint", stdout=io.StringIO())
    before = head()
    response = get(client, "/api/audit/checkpoints")
    assert len(response.json()["checkpoints"]) == 1
    event = only_event(before, AuditAction.AUDIT_VIEWED)
    assert event.actor_id == admin.pk
    assert (event.device_id, event.case_id) == (None, None)
    assert (event.outcome, event.reason, event.target) == ("success", "", "audit:checkpoints")
    assert event.details == {"count": 1}
    assert_request(event)
    signature = AuditCheckpoint.objects.get().signature
    assert_no_secret(event, signature, client.cookies["sessionid"].value)


@emits(AuditAction.AUDIT_VIEWED)
def test_reading_a_cases_access_log_is_recorded_on_the_case(case_with_events: Any) -> None:
    pcp, case_id = case_with_events
    before = head()
    response = get(pcp.client, f"/api/cases/{case_id}/access-log?page=1")
    assert response.status_code == 200 and response.json()["count"] >= 1
    event = only_event(before, AuditAction.AUDIT_VIEWED)
    assert event.actor_id == pcp.user.pk
    assert (event.device_id, event.case_id) == (None, case_id)
    assert (event.outcome, event.reason, event.target) == ("success", "", "case:access-log")
    assert event.details == {"page": 1}
    assert_request(event)
    assert_no_secret(event, pcp.session_id)


@emits(AuditAction.CHECKPOINT_SIGNED)
def test_checkpoint_command_records_the_signed_position() -> None:
    verified_client(make_user("boss", role="admin")).post("/accounts/logout/")
    signed = AuditHead.objects.get()
    before = head()
    assert before == signed.seq >= 1
    out = io.StringIO()
    call_command("audit_checkpoint", stdout=out)
    checkpoint = AuditCheckpoint.objects.get()
    assert (checkpoint.seq, checkpoint.event_hash) == (signed.seq, signed.hash)
    event = only_event(before, AuditAction.CHECKPOINT_SIGNED)
    assert (event.actor_id, event.device_id, event.case_id) == (None, None, None)
    assert (event.outcome, event.reason, event.target) == ("success", "", "audit:checkpoint")
    assert event.details == {"seq": signed.seq, "hash": signed.hash}
    assert (event.client_address, event.user_agent) == ("", "")
    assert_no_secret(event, checkpoint.signature)


@emits(AuditAction.ACCESS_DENIED)
@pytest.mark.parametrize("path", ["/api/audit/export", "/api/audit/checkpoints"])
def test_a_non_admin_reading_the_trail_is_refused_and_recorded(path: str) -> None:
    pcp = make_user("pcp")
    client = verified_client(pcp)
    before = head()
    response = get(client, f"{path}?action=SIGN_IN")
    assert (response.status_code, response.json()["error"]) == (403, "forbidden")
    event = only_event(before, AuditAction.ACCESS_DENIED)
    assert event.actor_id == pcp.pk
    assert (event.device_id, event.case_id) == (None, None)
    assert (event.outcome, event.reason) == ("failure", "forbidden")
    assert event.target == path.replace("/api/audit/", "audit:")
    assert event.details == {}
    assert_request(event)
    assert_no_secret(event, client.cookies["sessionid"].value)


def test_an_admin_short_of_the_second_factor_is_refused_before_and_not_recorded() -> None:
    admin = make_user("boss", role="admin")
    client = Client()
    client.force_login(admin, backend="django.contrib.auth.backends.ModelBackend")
    before = head()
    for path in ("/api/audit/export", "/api/audit/checkpoints"):
        response = get(client, path)
        assert (response.status_code, response.json()["error"]) == (403, "second_factor_required")
    assert written(before) == []


@emits(AuditAction.ACCESS_DENIED)
def test_a_stranger_reading_a_cases_access_log_is_refused_on_the_case(
    case_with_events: Any,
) -> None:
    _, case_id = case_with_events
    stranger = make_user("stranger")
    client = verified_client(stranger)
    before = head()
    response = get(client, f"/api/cases/{case_id}/access-log")
    assert response.status_code == 403
    event = only_event(before, AuditAction.ACCESS_DENIED)
    assert event.actor_id == stranger.pk
    assert (event.device_id, event.case_id) == (None, case_id)
    assert (event.outcome, event.reason, event.target) == (
        "failure",
        "forbidden",
        "case:access-log",
    )
    assert event.details == {}
    assert_request(event)
    assert_no_secret(event, client.cookies["sessionid"].value)
