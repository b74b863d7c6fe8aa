"""Emission tests for sign-in, the second factor, enrolment and sign-out: the sign-in
pages driven through Django's test client with real passwords and TOTP codes."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django_otp.oath import TOTP
from django_otp.plugins.otp_static.models import StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from collab.accounts.models import User
from collab.accounts.policy import LAST_ACTIVITY_KEY, SIGNED_IN_KEY
from collab.accounts.services import backup_codes_regenerate
from collab.audit.models import AuditAction, AuditEvent
from collab.audit.verify import chain_verify
from collab.crypto.wire import b64e
from tests.audit.emissions import emits
from tests.audit.emissions.accounts_support import (
    assert_no_secret,
    head,
    only_event,
    written,
)
from tests.cases.patients import invite
from tests.support.actor import Actor
from tests.support.users import PASSWORD, make_user, totp_code, verified_client

pytestmark = pytest.mark.django_db

LOGIN = reverse("accounts:login")
OTP = reverse("accounts:otp")
ENROL = reverse("accounts:enrol")
LOGOUT = reverse("accounts:logout")
HOME = reverse("home")
ADDR = "10.0.0.7"
AGENT = "pytest-browser"


def password_step(client: Client, username: str, password: str = PASSWORD) -> Any:
    return client.post(
        LOGIN,
        {"username": username, "password": password},
        REMOTE_ADDR=ADDR,
        HTTP_USER_AGENT=AGENT,
    )


def code_step(client: Client, code: str) -> Any:
    return client.post(OTP, {"code": code}, REMOTE_ADDR=ADDR, HTTP_USER_AGENT=AGENT)


def wrong_code(user: Any) -> str:
    return f"{(int(totp_code(user)) + 1) % 1_000_000:06d}"


def assert_fields(
    event: AuditEvent,
    *,
    actor: Any,
    outcome: str = "success",
    reason: str = "",
    target: str = "",
    details: dict[str, Any],
) -> None:
    assert (event.outcome, event.reason) == (outcome, reason)
    assert event.actor_id == (actor.pk if actor is not None else None)
    assert (event.device_id, event.case_id) == (None, None)
    assert event.target == target
    assert event.details == details
    assert (event.client_address, event.user_agent) == (ADDR, AGENT)


@emits(AuditAction.SIGN_IN)
def test_sign_in_is_recorded_after_the_second_factor() -> None:
    user = make_user("pcp")
    client = Client()
    before = head()
    assert password_step(client, "pcp").status_code == 302
    assert written(before) == []  # the password alone does not sign a provider in
    code = totp_code(user)
    assert code_step(client, code).status_code == 302
    event = only_event(before, AuditAction.SIGN_IN)
    assert_fields(event, actor=user, details={"factor": "totp"})
    assert_no_secret(event, PASSWORD, code, client.cookies["sessionid"].value)
    assert chain_verify().ok


@emits(AuditAction.SIGN_IN)
def test_sign_in_with_a_backup_code_names_that_factor() -> None:
    user = make_user("pcp")
    codes = backup_codes_regenerate(user=user)
    client = Client()
    assert password_step(client, "pcp").status_code == 302
    before = head()
    assert code_step(client, codes[0]).status_code == 302
    event = only_event(before, AuditAction.SIGN_IN)
    assert_fields(event, actor=user, details={"factor": "backup_code"})
    assert_no_secret(event, PASSWORD, codes[0], client.cookies["sessionid"].value)
    assert not StaticToken.objects.filter(token=codes[0]).exists()  # used up


@emits(AuditAction.SIGN_IN)
def test_patient_without_a_second_factor_is_signed_in_by_the_password() -> None:
    patient = make_user("pat", role="patient", totp=False)
    client = Client()
    before = head()
    assert password_step(client, "pat").status_code == 302
    event = only_event(before, AuditAction.SIGN_IN)
    assert_fields(event, actor=patient, details={"factor": "password"})
    assert_no_secret(event, PASSWORD, client.cookies["sessionid"].value)


@emits(AuditAction.SIGN_IN)
def test_patient_signing_up_through_an_invitation_is_signed_in_by_it() -> None:
    pcp = Actor("pcp").register()
    token = invite(pcp, pcp.open_case())
    before = head()
    browser = Client()
    response = browser.post(
        f"/invite/{token}/",
        {"username": "pat", "display_name": "Pat", "password1": PASSWORD, "password2": PASSWORD},
        REMOTE_ADDR=ADDR,
        HTTP_USER_AGENT=AGENT,
    )
    assert response.status_code == 302
    # The acceptance and its join request are the invitation's own events (tested there).
    assert [e.action for e in written(before)] == [
        AuditAction.INVITATION_ACCEPTED,
        AuditAction.JOIN_REQUESTED,
        AuditAction.SIGN_IN,
    ]
    event = written(before)[-1]
    assert_fields(event, actor=User.objects.get(username="pat"), details={"factor": "invitation"})
    assert_no_secret(event, PASSWORD, token, browser.cookies["sessionid"].value)


@emits(AuditAction.SIGN_IN_FAILED)
def test_wrong_password_for_a_known_account_names_it() -> None:
    user = make_user("pcp")
    before = head()
    assert password_step(Client(), "pcp", "wrong-password-42").status_code == 401
    event = only_event(before, AuditAction.SIGN_IN_FAILED)
    assert_fields(
        event,
        actor=user,
        outcome="failure",
        reason="bad_credentials",
        details={"known_user": True},
    )
    assert_no_secret(event, "wrong-password-42", PASSWORD)


@emits(AuditAction.SIGN_IN_FAILED)
def test_failed_sign_in_with_an_unknown_name_stores_no_name() -> None:
    before = head()
    assert password_step(Client(), "my-secret-typed-here", "x-y-z-123").status_code == 401
    event = only_event(before, AuditAction.SIGN_IN_FAILED)
    assert_fields(
        event,
        actor=None,
        outcome="failure",
        reason="bad_credentials",
        details={"known_user": False},
    )
    assert_no_secret(event, "my-secret-typed-here", "x-y-z-123")


@emits(AuditAction.OTP_FAILED)
def test_wrong_code_is_recorded_as_an_otp_failure() -> None:
    user = make_user("pcp")
    client = Client()
    assert password_step(client, "pcp").status_code == 302
    before = head()
    wrong = wrong_code(user)
    assert code_step(client, wrong).status_code == 401
    event = only_event(before, AuditAction.OTP_FAILED)
    assert_fields(
        event, actor=user, outcome="failure", reason="wrong_code", details={"factor": "totp"}
    )
    assert_no_secret(event, wrong, PASSWORD, client.cookies["sessionid"].value)


@emits(AuditAction.OTP_FAILED)
def test_a_backup_code_from_a_user_without_backup_codes_is_an_otp_failure() -> None:
    # An authenticator set up without backup codes (the demo, Django's admin): a code
    # shaped like a backup code matches no device, and is still a refused attempt.
    user = make_user("pcp")
    client = Client()
    assert password_step(client, "pcp").status_code == 302
    before = head()
    assert code_step(client, "abcdef1234").status_code == 401
    event = only_event(before, AuditAction.OTP_FAILED)
    assert_fields(
        event,
        actor=user,
        outcome="failure",
        reason="wrong_code",
        details={"factor": "backup_code"},
    )
    assert_no_secret(event, "abcdef1234", PASSWORD, client.cookies["sessionid"].value)


@emits(AuditAction.OTP_THROTTLED)
def test_code_while_throttled_is_refused_and_recorded(settings: Any) -> None:
    # A minute's throttle after one wrong code, so a slow machine cannot outwait it.
    settings.OTP_TOTP_THROTTLE_FACTOR = 60
    user = make_user("pcp")
    client = Client()
    assert password_step(client, "pcp").status_code == 302
    assert code_step(client, wrong_code(user)).status_code == 401
    before = head()
    code = totp_code(user)
    assert code_step(client, code).status_code == 429
    event = only_event(before, AuditAction.OTP_THROTTLED)
    wait = event.details["retry_after_seconds"]
    assert isinstance(wait, int) and 50 <= wait <= 60
    assert_fields(
        event,
        actor=user,
        outcome="failure",
        reason="throttled",
        details={"factor": "totp", "retry_after_seconds": wait},
    )
    assert_no_secret(event, code, PASSWORD, client.cookies["sessionid"].value)


@emits(AuditAction.TOTP_ENROLLED)
def test_enrolment_is_recorded_with_the_device_and_the_number_of_backup_codes() -> None:
    user = make_user("newdoc", totp=False)
    client = Client()
    assert password_step(client, "newdoc").status_code == 302
    assert client.get(ENROL).status_code == 200
    device = TOTPDevice.objects.get(user=user, confirmed=False)
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    code = f"{totp.token():06d}"
    before = head()
    response = client.post(ENROL, {"code": code}, REMOTE_ADDR=ADDR, HTTP_USER_AGENT=AGENT)
    assert response.status_code == 302
    event = only_event(before, AuditAction.TOTP_ENROLLED)
    assert_fields(
        event,
        actor=user,
        target=f"otp_device:{device.persistent_id}",
        details={"backup_codes": 10},
    )
    backup_codes = list(
        StaticToken.objects.filter(device__user=user).values_list("token", flat=True)
    )
    assert len(backup_codes) == 10
    assert_no_secret(
        event,
        code,
        device.key,
        device.bin_key,
        PASSWORD,
        client.cookies["sessionid"].value,
        *backup_codes,
    )


@emits(AuditAction.SIGN_OUT)
def test_sign_out_is_recorded_with_reason_user() -> None:
    user = make_user("pcp")
    client = verified_client(user)
    cookie = client.cookies["sessionid"].value
    before = head()
    assert client.post(LOGOUT, REMOTE_ADDR=ADDR, HTTP_USER_AGENT=AGENT).status_code == 302
    event = only_event(before, AuditAction.SIGN_OUT)
    assert_fields(event, actor=user, reason="user", details={})
    assert_no_secret(event, cookie)
    # Signed out: a second sign-out records nothing.
    again = head()
    assert client.post(LOGOUT).status_code == 302 and written(again) == []


@emits(AuditAction.AUTO_SIGN_OUT)
def test_inactivity_is_recorded_as_an_automatic_sign_out(settings: Any) -> None:
    user = make_user("pcp")
    client = verified_client(user)
    cookie = client.cookies["sessionid"].value
    session = client.session
    session[LAST_ACTIVITY_KEY] = time.time() - settings.IDLE_TIMEOUT_SECONDS - 5
    session.save()
    before = head()
    assert client.get(HOME, REMOTE_ADDR=ADDR, HTTP_USER_AGENT=AGENT).status_code == 302
    event = only_event(before, AuditAction.AUTO_SIGN_OUT)
    assert_fields(event, actor=user, reason="inactivity", details={})
    assert_no_secret(event, cookie)


@emits(AuditAction.SIGN_OUT)
def test_the_end_of_the_sessions_lifetime_is_recorded_as_a_sign_out(settings: Any) -> None:
    user = make_user("pcp")
    client = verified_client(user)
    cookie = client.cookies["sessionid"].value
    session = client.session
    session[SIGNED_IN_KEY] = time.time() - settings.SESSION_ABSOLUTE_SECONDS - 1
    session.save()
    before = head()
    assert client.get(HOME, REMOTE_ADDR=ADDR, HTTP_USER_AGENT=AGENT).status_code == 302
    event = only_event(before, AuditAction.SIGN_OUT)
    assert_fields(event, actor=user, reason="lifetime", details={})
    assert_no_secret(event, cookie)


def test_the_secret_check_catches_a_leak_in_any_form() -> None:
    secret = bytes(range(1, 33))
    for details in ({"sealed": b64e(secret)}, {"k": secret.hex()}, {"password": "x"}):
        leaky = AuditEvent(action=AuditAction.SIGN_IN, details=details)
        with pytest.raises(AssertionError):
            assert_no_secret(leaky, secret)
    with pytest.raises(AssertionError):
        assert_no_secret(AuditEvent(action=AuditAction.SIGN_IN, target="otp:123456"), "123456")
    assert_no_secret(AuditEvent(action=AuditAction.SIGN_IN, details={"n": 1}), secret)
