"""A member whose identity an operator reset asks to rejoin; the case manager's browser
shows the changed key and readmits them only after the change is accepted explicitly,
replacing the roster entry (remove_user, then add_user with the new key)."""

from __future__ import annotations

import io
import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.core.management import call_command

from collab.accounts.models import IdentityKey
from collab.cases import models as m
from collab.cases.selectors import head_entry
from collab.crypto.actions import Action
from collab.crypto.roster import Role
from tests.browser.conftest import PageProblems
from tests.browser.test_case_room_browser import (
    admit_from_dialog,
    named,
    set_up_first_device,
    sign_in,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def actions(case_id: uuid.UUID) -> list[str]:
    rows = m.LogEntry.objects.filter(case_id=case_id).order_by("epoch")
    return [Action(r.action).name.lower() for r in rows]


def test_manager_readmits_a_reset_member_only_after_accepting_the_new_key(
    server: str, new_page: Callable[[str], Any], problems: PageProblems
) -> None:
    gp_user = named("gp_reset", "Dr Gil Park", "General practice")
    gp = new_page("gp")
    sign_in(gp, gp_user)
    set_up_first_device(gp)
    gp.goto("/")
    gp.get_by_label("Requested specialty").fill("Dermatology")
    gp.get_by_label("Clinical question").fill("Itchy rash on both forearms.")
    gp.get_by_role("button", name="Open case").click()
    gp.wait_for_url(re.compile(r"/cases/[0-9a-f-]{36}/$"))
    gp.locator("#conn-state", has_text="Connected").wait_for()
    case_id = uuid.UUID(gp.url.rstrip("/").rsplit("/", 1)[1])

    derm_user = named("derm_reset", "Dr Dee Rowe", "Dermatology")
    derm = new_page("derm")
    sign_in(derm, derm_user)
    set_up_first_device(derm)
    m.JoinRequest.objects.create(
        case_id=case_id, user=derm_user, kind=m.JoinKind.INVITE, requested_by=gp_user
    )
    gp.reload()
    dialog = admit_from_dialog(gp, "Dr Dee Rowe")
    dialog.get_by_role("button", name="Admit").click()
    gp.locator("#members li", has_text="Dr Dee Rowe").wait_for()
    old_uik = bytes(IdentityKey.objects.get(user=derm_user).uik_pub)
    gp.get_by_label("Message", exact=True).fill("Before the reset")
    gp.get_by_role("button", name="Send", exact=True).click()
    gp.locator("li.message.own", has_text="Before the reset").wait_for()

    # The operator resets derm's identity; derm signs in again in the same browser,
    # which sets up a new identity with the first-use flow. Derm's page is away first:
    # a page still open would get the reset's answer to its next call (401, logged).
    derm.goto("about:blank")
    call_command("identity_reset", "derm_reset", "--yes", "--by", "ops", stdout=io.StringIO())
    derm.goto("/")
    derm.wait_for_url(re.compile(r"/accounts/login/"))
    sign_in(derm, derm_user, offset_steps=1)
    set_up_first_device(derm)
    new_uik = bytes(IdentityKey.objects.get(user=derm_user).uik_pub)
    assert new_uik != old_uik
    # Until readmitted, derm's browser refuses the case: its roster lists derm under a
    # key that is not theirs.
    derm.goto(f"/cases/{case_id}/")
    derm.locator("#room-fatal").wait_for()
    assert "identity key that is not yours" in derm.locator("#room-fatal").inner_text()

    # The rejoin request is listed although the roster holds them (under the old key);
    # the dialog says CHANGED and Admit waits for the explicit acceptance.
    gp.reload()
    gp.locator("#conn-state", has_text="Connected").wait_for()
    dialog = admit_from_dialog(gp, "Dr Dee Rowe")
    assert dialog.locator("[data-pin]").get_attribute("data-pin") == "changed"
    assert "identity reset" in dialog.inner_text()
    admit = dialog.get_by_role("button", name="Admit")
    assert admit.is_disabled()
    assert actions(case_id) == ["create", "add_user"]
    dialog.get_by_label("Accept the new identity key for this person").check()
    admit.click()
    gp.locator("#members-status", has_text="was added").wait_for()
    assert actions(case_id) == ["create", "add_user", "remove_user", "add_user"]
    member = head_entry(m.Case.objects.get(pk=case_id)).roster.user(derm_user.pk)
    assert member is not None and member.uik_pub == new_uik != old_uik
    assert member.role == Role.MEMBER

    # The readmitted member's browser opens the case and reads what is sent from now on.
    gp.get_by_label("Message", exact=True).fill("Welcome back")
    gp.get_by_role("button", name="Send", exact=True).click()
    gp.locator("li.message.own", has_text="Welcome back").wait_for()
    derm.goto(f"/cases/{case_id}/")
    derm.locator("#conn-state", has_text="Connected").wait_for()
    derm.locator("#messages li", has_text="Welcome back").wait_for()
    # What was sent before the readmission is not served to the new identity's devices:
    # its keys were only on the old devices (and in the key backup the reset deleted).
    assert derm.locator("#messages li").count() == 1
    problems.assert_none()
