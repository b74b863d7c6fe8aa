"""The retention routes, the case answers' `retention` field and the commands: admins
only for changes, clear codes for bad input and repeats, and nothing changes when
refused."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO
from typing import TYPE_CHECKING

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from collab.audit.models import AuditEvent
from collab.cases.models import Case
from collab.retention.models import RetentionPolicy
from collab.retention.schedule import policy_current
from tests.retention.support import admin_client, close
from tests.support.actor import Actor
from tests.support.users import make_user, verified_client

if TYPE_CHECKING:
    # The stubs' name for what django.test.Client's methods answer (json() included).
    from django.test.client import _MonkeyPatchedWSGIResponse as TestResponse

pytestmark = pytest.mark.django_db

POLICY = "/api/retention/policy"


def audit_seq() -> int:
    last = AuditEvent.objects.order_by("-seq").first()
    return last.seq if last else 0


def put(client: Client, body: object) -> TestResponse:
    return client.put(POLICY, data=body, content_type="application/json")


def hold_path(case_id: object) -> str:
    return f"/api/retention/cases/{case_id}/hold"


# --- the policy -------------------------------------------------------------------------


def test_the_default_policy_keeps_everything_and_anyone_signed_in_reads_it() -> None:
    patient = make_user("pat", role="patient", totp=False)
    answer = verified_client(patient).get(POLICY)
    assert answer.status_code == 200
    assert answer.json() == {"lifespan_days": None, "updated_at": None, "updated_by": None}
    assert Client().get(POLICY).status_code == 401


def test_an_admin_sets_the_policy_and_back_to_never() -> None:
    admin, client = admin_client()
    answer = put(client, {"lifespan_days": 30})
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert body["lifespan_days"] == 30
    assert body["updated_by"] == {"id": str(admin.pk), "display_name": admin.display_name}
    assert policy_current().lifespan_days == 30
    assert put(client, {"lifespan_days": None}).json()["lifespan_days"] is None
    assert policy_current().lifespan_days is None
    # Others read the period, not who set it.
    seen = verified_client(make_user("doc")).get(POLICY).json()
    assert seen["lifespan_days"] is None and seen["updated_by"] is None
    assert client.get(POLICY).json()["updated_by"] == body["updated_by"]


def test_non_admins_cannot_set_the_policy() -> None:
    provider = make_user("doc")
    staff = make_user("staff")
    staff.is_staff = staff.is_superuser = True  # the Django admin site grants nothing here
    staff.save()
    patient = make_user("pat", role="patient", totp=False)
    seq = audit_seq()
    for user in (provider, staff, patient):
        answer = put(verified_client(user), {"lifespan_days": 1})
        assert (answer.status_code, answer.json()["error"]) == (403, "admins_only"), user
    assert not RetentionPolicy.objects.exists()
    assert audit_seq() == seq


@pytest.mark.hostile_input
@pytest.mark.parametrize(
    "body", [{}, {"lifespan_days": 0}, {"lifespan_days": -3}, {"lifespan_days": 36501},
             {"lifespan_days": "30"}, {"lifespan_days": 1.5}, {"lifespan_days": True}],
)
def test_a_bad_lifespan_is_refused_and_changes_nothing(body: dict[str, object]) -> None:
    _, client = admin_client()
    assert put(client, {"lifespan_days": 7}).status_code == 200
    seq = audit_seq()
    answer = put(client, body)
    assert (answer.status_code, answer.json()["error"]) == (400, "bad_lifespan")
    assert policy_current().lifespan_days == 7
    assert audit_seq() == seq


def test_setting_the_same_policy_again_is_no_change() -> None:
    _, client = admin_client()
    assert put(client, {"lifespan_days": 7}).status_code == 200
    seq = audit_seq()
    answer = put(client, {"lifespan_days": 7})
    assert (answer.status_code, answer.json()["error"]) == (409, "no_change")
    assert audit_seq() == seq
    fresh = RetentionPolicy.objects.get()
    answer = put(client, {"lifespan_days": 7})
    assert RetentionPolicy.objects.get().updated_at == fresh.updated_at


def test_the_policy_command_shows_and_sets_it() -> None:
    out = StringIO()
    call_command("retention_policy", stdout=out)
    assert out.getvalue().startswith("retention: never")
    call_command("retention_policy", "--days", "30", stdout=(out := StringIO()))
    assert out.getvalue() == "retention: 30 day(s) after a case is closed\n"
    with pytest.raises(CommandError, match=r"^bad_lifespan:"):
        call_command("retention_policy", "--days", "0", stdout=StringIO())
    with pytest.raises(CommandError, match=r"^no_change:"):
        call_command("retention_policy", "--days", "30", stdout=StringIO())
    call_command("retention_policy", "--never", stdout=(out := StringIO()))
    assert out.getvalue().startswith("retention: never")


# --- legal holds --------------------------------------------------------------------------


def test_an_admin_places_and_releases_a_hold_and_repeats_are_refused() -> None:
    pcp = Actor("pcp").register()
    state = pcp.open_case()
    admin, client = admin_client()
    placed = client.post(hold_path(state.case_id))
    assert placed.status_code == 200, placed.content
    assert placed.json()["retention"]["legal_hold"] is True
    case = Case.objects.get(pk=state.case_id)
    assert case.legal_hold_by_id == admin.pk and case.legal_hold_at is not None
    seq = audit_seq()
    again = client.post(hold_path(state.case_id))
    assert (again.status_code, again.json()["error"]) == (409, "already_on_hold")
    assert Case.objects.get(pk=state.case_id).legal_hold_at == case.legal_hold_at
    assert audit_seq() == seq
    released = client.delete(hold_path(state.case_id))
    assert released.status_code == 200
    assert released.json()["retention"]["legal_hold"] is False
    seq = audit_seq()
    again = client.delete(hold_path(state.case_id))
    assert (again.status_code, again.json()["error"]) == (409, "not_on_hold")
    assert audit_seq() == seq
    missing = client.post(hold_path("00000000-0000-4000-8000-000000000000"))
    assert (missing.status_code, missing.json()["error"]) == (404, "no_case")


def test_members_and_other_non_admins_cannot_place_or_release_a_hold() -> None:
    """Not even the case's owner: a hold is the organisation's decision."""
    pcp = Actor("pcp").register()
    state = pcp.open_case()
    patient = make_user("pat", role="patient", totp=False)
    seq = audit_seq()
    for client in (pcp.client, verified_client(make_user("other")), verified_client(patient)):
        for method in ("post", "delete"):
            answer = getattr(client, method)(hold_path(state.case_id))
            assert (answer.status_code, answer.json()["error"]) == (403, "admins_only")
        listed = client.get("/api/retention/cases")
        assert (listed.status_code, listed.json()["error"]) == (403, "admins_only")
    assert Case.objects.get(pk=state.case_id).legal_hold_at is None
    assert audit_seq() == seq


def test_the_hold_command_needs_an_admin_and_refuses_repeats() -> None:
    pcp = Actor("pcp").register()
    state = pcp.open_case()
    admin = make_user("admin", role="admin")
    case = str(state.case_id)
    with pytest.raises(CommandError, match=r"^admins_only:"):
        call_command("legal_hold", "place", case, "--by", "pcp", stdout=StringIO())
    with pytest.raises(CommandError, match=r"^no_user:"):
        call_command("legal_hold", "place", case, "--by", "nobody", stdout=StringIO())
    assert Case.objects.get(pk=state.case_id).legal_hold_at is None
    call_command("legal_hold", "place", case, "--by", admin.username, stdout=(out := StringIO()))
    assert out.getvalue() == f"case {case} is on legal hold\n"
    with pytest.raises(CommandError, match=r"^already_on_hold:"):
        call_command("legal_hold", "place", case, "--by", admin.username, stdout=StringIO())
    call_command("legal_hold", "release", case, "--by", admin.username, stdout=(out := StringIO()))
    assert out.getvalue() == f"case {case} is no longer on legal hold\n"
    with pytest.raises(CommandError, match=r"^not_on_hold:"):
        call_command("legal_hold", "release", case, "--by", admin.username, stdout=StringIO())


# --- what the case answers say ----------------------------------------------------------


def test_case_answers_say_what_will_be_deleted_and_when() -> None:
    start = timezone.now()
    with time_machine.travel(start, tick=False) as clock:
        pcp = Actor("pcp").register()
        state = pcp.open_case()
        _, admin = admin_client()
        put(admin, {"lifespan_days": 30})
        item = pcp.call("GET", "/api/cases").json()["cases"][0]["retention"]
        assert item == {
            "lifespan_days": 30, "closed_at": None, "delete_after": None,
            "legal_hold": False, "legal_hold_at": None, "purged_at": None,
        }
        clock.shift(timedelta(minutes=5))
        close(pcp, state.case_id)
        closed_at = Case.objects.get(pk=state.case_id).status_changed_at
        assert closed_at is not None
        detail = pcp.call("GET", f"/api/cases/{state.case_id}").json()["retention"]
        assert detail["closed_at"] == closed_at.isoformat()
        assert detail["delete_after"] == (closed_at + timedelta(days=30)).isoformat()
        assert pcp.call("GET", "/api/cases").json()["cases"][0]["retention"] == detail
        # A hold: nothing scheduled, whatever the period.
        assert admin.post(hold_path(state.case_id)).status_code == 200
        held = pcp.call("GET", f"/api/cases/{state.case_id}").json()["retention"]
        assert held["legal_hold"] is True and held["delete_after"] is None
        listed = admin.get("/api/retention/cases").json()["cases"]
        assert [(c["id"], c["retention"]["legal_hold"]) for c in listed] == [
            (str(state.case_id), True)
        ]


def test_the_retention_page_is_for_admins() -> None:
    _, admin = admin_client()
    assert admin.get("/retention/").status_code == 200
    assert verified_client(make_user("doc")).get("/retention/").status_code == 403
    assert Client().get("/retention/").status_code == 302
