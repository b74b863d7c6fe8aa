"""Escalation policy: validation codes (each changes nothing), who may read and write
the organisation default and a case's override, and the management command."""

from __future__ import annotations

import json
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from collab.audit.models import AuditAction, AuditEvent
from collab.escalation.models import CasePolicy, OrganisationPolicy
from collab.escalation.policy import organisation_policy
from tests.escalation.support import POLICY, consult_room
from tests.support.actor import Actor

pytestmark = pytest.mark.django_db

ORG = "/api/escalation/policy"


@pytest.fixture
def admin() -> Actor:
    return Actor("admin", role="admin").register()


@pytest.fixture
def pcp() -> Actor:
    return Actor("pcp", specialty="Family medicine").register()


@pytest.fixture
def derm() -> Actor:
    return Actor("derm", specialty="Dermatology").register()


def case_path(state: Any) -> str:
    return f"/api/cases/{state.case_id}/escalation-policy"


def test_the_built_in_default_is_tigerconnects(pcp: Actor) -> None:
    assert pcp.call("GET", ORG).json() == {
        "source": "organisation",
        "first_reminder_minutes": 2,
        "repeat_minutes": 2,
        "repeat_count": 10,
        "steps": [
            {"to": "oncall", "after_minutes": 10},
            {"to": "backup", "after_minutes": 20},
            {"to": "owner", "after_minutes": 30},
        ],
    }


def test_an_admin_sets_the_organisation_policy(admin: Actor, pcp: Actor) -> None:
    response = admin.call("PUT", ORG, POLICY)
    assert response.status_code == 200, response.content
    assert response.json() == {"source": "organisation", **POLICY}
    assert pcp.call("GET", ORG).json() == {"source": "organisation", **POLICY}
    assert OrganisationPolicy.objects.get().updated_by == admin.user


@pytest.mark.parametrize("role", ["provider", "patient"])
def test_only_an_admin_sets_the_organisation_policy(role: str) -> None:
    someone = Actor("someone", role=role).register()
    before = organisation_policy()
    response = someone.call("PUT", ORG, POLICY)
    assert (response.status_code, response.json()["error"]) == (403, "admins_only")
    assert organisation_policy() == before
    assert not AuditEvent.objects.filter(action=AuditAction.ESCALATION_POLICY_CHANGED).exists()


BAD: list[tuple[dict[str, Any], str]] = [
    ({**POLICY, "repeat_minutes": 0}, "bad_interval"),
    ({**POLICY, "repeat_minutes": 1441}, "bad_interval"),
    ({**POLICY, "repeat_minutes": "2"}, "bad_interval"),
    ({**POLICY, "repeat_minutes": True}, "bad_interval"),
    ({k: v for k, v in POLICY.items() if k != "repeat_minutes"}, "bad_interval"),
    ({**POLICY, "first_reminder_minutes": 0}, "bad_first_reminder"),
    ({**POLICY, "first_reminder_minutes": 2.5}, "bad_first_reminder"),
    ({**POLICY, "repeat_count": -1}, "bad_count"),
    ({**POLICY, "repeat_count": 51}, "bad_count"),
    ({**POLICY, "steps": "owner"}, "bad_steps"),
    ({**POLICY, "steps": [{"to": "owner"}]}, "bad_steps"),
    ({**POLICY, "steps": [{"to": "owner", "after_minutes": 5, "extra": 1}]}, "bad_steps"),
    ({**POLICY, "steps": [{"to": "owner", "after_minutes": m} for m in range(1, 7)]},
     "bad_steps"),
    ({**POLICY, "steps": [{"to": "chief", "after_minutes": 5}]}, "bad_step_kind"),
    ({**POLICY, "steps": [{"to": "owner", "after_minutes": 0}]}, "bad_step_time"),
    ({**POLICY, "steps": [{"to": "owner", "after_minutes": 10081}]}, "bad_step_time"),
    ({**POLICY, "steps": [{"to": "oncall", "after_minutes": 10},
                          {"to": "owner", "after_minutes": 10}]}, "bad_step_time"),
]


@pytest.mark.hostile_input
@pytest.mark.parametrize(("body", "code"), BAD)
def test_a_bad_policy_gets_its_code_and_changes_nothing(
    admin: Actor, pcp: Actor, body: dict[str, Any], code: str
) -> None:
    state = consult_room(pcp)
    before = organisation_policy()
    for actor, path in ((admin, ORG), (pcp, case_path(state))):
        response = actor.call("PUT", path, body)
        assert (response.status_code, response.json()["error"]) == (400, code), path
    assert organisation_policy() == before
    assert not CasePolicy.objects.exists()
    assert not AuditEvent.objects.filter(action=AuditAction.ESCALATION_POLICY_CHANGED).exists()


@pytest.mark.hostile_input
def test_a_policy_that_is_not_an_object_is_refused(admin: Actor) -> None:
    response = admin.send("PUT", ORG, b"[1]", "application/json")
    assert (response.status_code, response.json()["error"]) == (400, "malformed_json")


def test_a_case_owner_overrides_and_clears_the_case_policy(pcp: Actor, derm: Actor) -> None:
    state = consult_room(pcp, derm)
    path = case_path(state)
    custom = {**POLICY, "repeat_count": 1}
    assert derm.call("GET", path).json()["source"] == "organisation"
    assert pcp.call("PUT", path, custom).json() == {"source": "case", **custom}
    assert derm.call("GET", path).json() == {"source": "case", **custom}
    cleared = pcp.call("DELETE", path)
    assert cleared.status_code == 200
    assert cleared.json()["source"] == "organisation"
    assert not CasePolicy.objects.exists()
    # Clearing again changes and records nothing.
    before = AuditEvent.objects.count()
    assert pcp.call("DELETE", path).status_code == 200
    assert AuditEvent.objects.count() == before


def test_a_member_who_is_not_a_manager_cannot_override(pcp: Actor, derm: Actor) -> None:
    state = consult_room(pcp, derm)
    for method in ("PUT", "DELETE"):
        response = derm.call(method, case_path(state), POLICY)
        assert (response.status_code, response.json()["error"]) == (403, "not_manager")
    assert not CasePolicy.objects.exists()


def test_an_outsider_cannot_read_or_override_a_case_policy(pcp: Actor) -> None:
    state = consult_room(pcp)
    outsider = Actor("outsider", specialty="Dermatology").register()
    admin = Actor("admin", role="admin").register()  # an organisation admin is no member
    for actor in (outsider, admin):
        for method in ("GET", "PUT", "DELETE"):
            response = actor.call(method, case_path(state), POLICY if method == "PUT" else None)
            assert (response.status_code, response.json()["error"]) == (403, "not_member")
    assert not CasePolicy.objects.exists()


def test_the_command_prints_and_sets_the_policy() -> None:
    out = StringIO()
    call_command(
        "escalation_policy", "--first", "3", "--every", "1", "--count", "4",
        "--step", "owner:9", stdout=out,
    )
    assert json.loads(out.getvalue()) == {
        "first_reminder_minutes": 3, "repeat_minutes": 1, "repeat_count": 4,
        "steps": [{"to": "owner", "after_minutes": 9}],
    }
    out = StringIO()
    call_command("escalation_policy", "--no-steps", stdout=out)
    assert json.loads(out.getvalue())["steps"] == []
    event = AuditEvent.objects.filter(action=AuditAction.ESCALATION_POLICY_CHANGED).last()
    assert event is not None and event.actor_id is None


@pytest.mark.parametrize(
    ("args", "code"),
    [(["--every", "0"], "bad_interval"), (["--step", "chief:5"], "bad_step_kind"),
     (["--step", "owner:soon"], "bad_step_time")],
)
def test_the_command_refuses_a_bad_policy(args: list[str], code: str) -> None:
    before = organisation_policy()
    with pytest.raises(CommandError, match=code):
        call_command("escalation_policy", *args, stdout=StringIO())
    assert organisation_policy() == before
