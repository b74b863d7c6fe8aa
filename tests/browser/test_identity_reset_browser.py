"""A member whose identity an operator reset asks to rejoin; the case manager's browser
shows the changed key and readmits them only after the change is accepted explicitly,
replacing the roster entry (remove_user, then add_user with the new key)."""

from __future__ import annotations

import io
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from collab.accounts.models import User
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
from tests.support.clients import new_member, signed_in

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def actions(case_id: uuid.UUID) -> list[str]:
    rows = m.LogEntry.objects.filter(case_id=case_id).order_by("epoch")
    return [Action(r.action).name.lower() for r in rows]


def test_manager_readmits_a_reset_member_only_after_accepting_the_new_key(
    server: str, new_page: Callable[[str], Any], problems: PageProblems, tmp_path: Path
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

    derm = new_member(server, "derm_reset", tmp_path, specialty="Dermatology")
    User.objects.filter(pk=derm.user_id).update(display_name="Dr Dee Rowe")
    derm_user = User.objects.get(pk=derm.user_id)
    m.JoinRequest.objects.create(
        case_id=case_id, user=derm_user, kind=m.JoinKind.INVITE, requested_by=gp_user
    )
    gp.reload()
    dialog = admit_from_dialog(gp, "Dr Dee Rowe")
    dialog.get_by_role("button", name="Admit").click()
    gp.locator("#members li", has_text="Dr Dee Rowe").wait_for()
    old_uik = derm.identity.uik_pub

    call_command("identity_reset", "derm_reset", "--yes", "--by", "ops", stdout=io.StringIO())
    derm = signed_in(server, derm_user, tmp_path / "new", offset_steps=1)
    derm.init(device_name="derm-new-laptop")
    assert derm.rejoin_cases() == {case_id: "already_requested"}  # the reset filed it
    new_uik = derm.identity.uik_pub

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

    # The readmitted member reads what is sent from now on.
    gp.get_by_label("Message", exact=True).fill("Welcome back")
    gp.get_by_role("button", name="Send", exact=True).click()
    gp.locator("li.message.own", has_text="Welcome back").wait_for()
    texts = [r.text for r in derm.history(case_id)]
    assert texts[-1] == "Welcome back"
    problems.assert_none()
