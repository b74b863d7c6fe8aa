"""manage.py oncall add|list|remove: the operator's way to edit schedules."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from collab.oncall.models import OnCallService, Shift
from collab.oncall.services import oncall_now
from tests.oncall.support import at, derm_user

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command("oncall", *args, stdout=out)
    return out.getvalue()


def add(primary: str, start: float, end: float, *extra: str) -> str:
    return run("add", "--specialty", "Dermatology", "--primary", primary,
               "--start", at(start).isoformat(), "--end", at(end).isoformat(), *extra)


def test_add_list_and_remove_a_shift() -> None:
    ann, bob = derm_user("ann"), derm_user("bob")
    out = add("ann", -1, 8, "--backup", str(bob.pk), "--service-name", "Dermatology consults")
    service, added = OnCallService.objects.get(), Shift.objects.get()
    assert f"service {service.pk} 'Dermatology consults' created" in out
    assert f"shift {added.pk}: Dermatology" in out and "primary Ann (ann)" in out
    now = oncall_now("Dermatology")
    assert now is not None and (now.primary, now.backup) == (ann, bob)
    # A second shift reuses the service.
    add("bob", 8, 16)
    assert OnCallService.objects.count() == 1 and Shift.objects.count() == 2
    listing = run("list")
    assert "service" in listing and "on call now: Ann (ann), backup Bob (bob)" in listing
    assert listing.count("  shift ") == 2
    assert run("remove", str(added.pk)) == f"shift {added.pk} removed\n"
    assert "on call now: nobody" in run("list", "--specialty", "Dermatology")
    assert list(Shift.objects.values_list("primary__username", flat=True)) == ["bob"]


def test_refused_input_is_a_command_error_that_changes_nothing() -> None:
    derm_user("ann")
    add("ann", 0, 8)
    before = (OnCallService.objects.count(), Shift.objects.count())
    for args, message in (
        (("ann", 4, 12), "shift_overlap"),
        (("ann", 10, 9), "bad_hours"),
        (("nobody", 10, 12), "no user 'nobody'"),
    ):
        with pytest.raises(CommandError, match=message):
            add(*args)
    with pytest.raises(CommandError, match="bad_time"):
        run("add", "--specialty", "Dermatology", "--primary", "ann",
            "--start", "2026-12-01T08:00", "--end", "2026-12-01T09:00")
    with pytest.raises(CommandError, match="no_shift"):
        run("remove", "999")
    assert (OnCallService.objects.count(), Shift.objects.count()) == before


def test_list_with_no_services() -> None:
    assert run("list") == "no on-call services\n"
