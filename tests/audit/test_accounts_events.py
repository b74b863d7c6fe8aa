"""Sign-in events beyond one step's emission (those are in tests/audit/emissions/
test_accounts.py): the lockout sequence, and a failure committed with an error answer."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from collab.audit.models import AuditEvent
from collab.audit.services import AuditAction
from tests.support.users import PASSWORD, make_user

pytestmark = pytest.mark.django_db

LOGIN = reverse("accounts:login")


def password_step(client: Client, username: str, password: str = PASSWORD, addr="10.0.0.1"):
    return client.post(
        LOGIN,
        {"username": username, "password": password},
        REMOTE_ADDR=addr,
        HTTP_USER_AGENT="pytest-browser",
    )


def actions() -> list[str]:
    return list(AuditEvent.objects.order_by("seq").values_list("action", flat=True))


def test_locked_out_sign_in_is_recorded_as_a_failure() -> None:
    make_user("pcp")
    for i in range(5):
        password_step(Client(), "pcp", "wrong", addr=f"10.0.1.{i}")
    assert password_step(Client(), "pcp", addr="10.0.2.1").status_code == 429
    reasons = list(AuditEvent.objects.values_list("reason", flat=True).order_by("seq"))
    # One event per attempt; axes locks as the fifth failure lands.
    assert len(reasons) == 6 and set(actions()) == {AuditAction.SIGN_IN_FAILED}
    assert reasons[0] == "bad_credentials" and reasons[-1] == "locked_out"


@pytest.mark.django_db(transaction=True)
def test_failure_event_is_committed_although_the_response_is_an_error() -> None:
    make_user("pcp")
    assert password_step(Client(), "pcp", "wrong-password").status_code == 401
    assert AuditEvent.objects.filter(action=AuditAction.SIGN_IN_FAILED).count() == 1
