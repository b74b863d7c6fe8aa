"""Routing: a consult requested from a specialty goes to its on-call provider first."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.test import override_settings
from django.utils import timezone

from collab.cases.models import Case, JoinRequest, Notification
from collab.oncall.models import ConsultOffer
from tests.oncall.support import at, derm_service, shift
from tests.support.actor import Actor

pytestmark = pytest.mark.django_db


def queue(actor: Actor) -> list[str]:
    response = actor.call("GET", "/api/consults/queue")
    assert response.status_code == 200, response.content
    return [item["case"] for item in response.json()["consults"]]


def offers(actor: Actor) -> list[str]:
    rows = Notification.objects.filter(user=actor.user, kind="consult_offered")
    return [str(n.case_id) for n in rows]


@pytest.fixture
def team() -> tuple[Actor, Actor, Actor, Actor]:
    pcp = Actor("pcp", specialty="Family medicine").register()
    ann = Actor("ann", specialty="Dermatology").register()
    bob = Actor("bob", specialty="Dermatology").register()
    cat = Actor("cat", specialty="Dermatology").register()
    return pcp, ann, bob, cat


def test_the_oncall_provider_receives_a_new_consult_first(team) -> None:
    pcp, ann, bob, cat = team
    start = timezone.now().replace(microsecond=0)
    with time_machine.travel(start, tick=False) as clock:
        shift(derm_service(), ann.user, at(-1, start), at(8, start), backup=bob.user)
        state = pcp.open_case(specialty="Dermatology")
        case = str(state.case_id)
        # Only the on-call provider is told, and only they see it in the queue.
        assert offers(ann) == [case] and offers(bob) == [] and offers(cat) == []
        assert queue(ann) == [case]
        assert queue(bob) == [] and queue(cat) == []
        mine = ann.call("GET", "/api/consults/queue").json()["consults"][0]
        assert mine["offered_until"] == (start + timedelta(minutes=10)).isoformat()
        # Others cannot claim it inside the window either (and nothing changes).
        early = cat.call("POST", f"/api/consults/{case}/claim")
        assert early.status_code == 409 and early.json()["error"] == "offered_to_oncall"
        assert early.json()["until"] == (start + timedelta(minutes=10)).isoformat()
        older = cat.call("POST", f"/api/cases/{case}/join-requests", {"kind": "claim"})
        assert older.status_code == 409 and older.json()["error"] == "offered_to_oncall"
        assert Case.objects.get(pk=state.case_id).claimed_by_id is None
        assert not JoinRequest.objects.filter(case_id=state.case_id).exists()
        clock.move_to(start + timedelta(minutes=9, seconds=59))
        assert queue(bob) == []
        # From the end of the window the whole specialty sees it.
        clock.move_to(start + timedelta(minutes=10))
        assert queue(bob) == [case] and queue(cat) == [case]
        assert queue(ann) == [case]
        # The window over, nobody's item says it is offered to them.
        for actor in (ann, bob):
            item = actor.call("GET", "/api/consults/queue").json()["consults"][0]
            assert "offered_until" not in item


def test_the_oncall_provider_can_claim_at_once(team) -> None:
    pcp, ann, bob, _ = team
    shift(derm_service(), ann.user, at(-1), at(8))
    state = pcp.open_case(specialty="Dermatology")
    claimed = ann.call("POST", f"/api/consults/{state.case_id}/claim")
    assert claimed.status_code == 201, claimed.content
    assert Case.objects.get(pk=state.case_id).claimed_by_id == ann.user.pk
    assert queue(bob) == []


def test_with_nobody_on_call_the_consult_goes_straight_to_the_queue(team) -> None:
    pcp, ann, bob, _ = team
    service = derm_service()
    shift(service, ann.user, at(1), at(8))  # a later shift covers nobody now
    state = pcp.open_case(specialty="Dermatology")
    assert not ConsultOffer.objects.exists()
    assert offers(ann) == [] and offers(bob) == []
    assert queue(bob) == [str(state.case_id)] and queue(ann) == [str(state.case_id)]


def test_a_case_without_a_specialty_or_another_specialty_is_not_offered(team) -> None:
    pcp, ann, _, _ = team
    shift(derm_service(), ann.user, at(-1), at(8))
    pcp.open_case(specialty="")
    pcp.open_case(specialty="Cardiology")
    assert not ConsultOffer.objects.exists() and offers(ann) == []


def test_the_backup_is_offered_a_request_the_primary_opened(team) -> None:
    _, ann, bob, cat = team
    shift(derm_service(), ann.user, at(-1), at(8), backup=bob.user)
    state = ann.open_case(specialty="Dermatology")
    assert offers(bob) == [str(state.case_id)] and offers(ann) == []
    assert queue(bob) == [str(state.case_id)] and queue(cat) == []


@override_settings(ONCALL_FIRST_MINUTES=0)
def test_a_zero_window_notifies_the_oncall_provider_but_hides_nothing(team) -> None:
    pcp, ann, bob, _ = team
    shift(derm_service(), ann.user, at(-1), at(8))
    state = pcp.open_case(specialty="Dermatology")
    assert offers(ann) == [str(state.case_id)]
    assert queue(bob) == [str(state.case_id)]
    assert bob.call("POST", f"/api/consults/{state.case_id}/claim").status_code == 201
