"""Each sign-in step leaves exactly one audit event, written by the accounts services."""

from __future__ import annotations

import time

import pytest
from django.test import Client
from django.urls import reverse
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from collab.accounts.policy import LAST_ACTIVITY_KEY
from collab.audit.models import AuditEvent
from collab.audit.services import AuditAction
from collab.audit.verify import chain_verify
from tests.support.users import PASSWORD, make_user, totp_code, verified_client

pytestmark = pytest.mark.django_db

LOGIN = reverse("accounts:login")
OTP = reverse("accounts:otp")
HOME = reverse("home")


def password_step(client: Client, username: str, password: str = PASSWORD, addr="10.0.0.1"):
    return client.post(
        LOGIN,
        {"username": username, "password": password},
        REMOTE_ADDR=addr,
        HTTP_USER_AGENT="pytest-browser",
    )


def actions() -> list[str]:
    return list(AuditEvent.objects.order_by("seq").values_list("action", flat=True))


def test_full_sign_in_leaves_one_sign_in_event() -> None:
    user = make_user("pcp")
    client = Client()
    password_step(client, "pcp")
    assert client.post(OTP, {"code": totp_code(user)}, REMOTE_ADDR="10.0.0.1").status_code == 302
    assert actions() == [AuditAction.SIGN_IN]
    event = AuditEvent.objects.get()
    assert event.actor_id == user.pk and event.outcome == "success"
    assert event.client_address == "10.0.0.1"
    assert event.details == {"factor": "totp"}
    assert chain_verify().ok


def test_patient_signing_in_with_password_alone_leaves_one_sign_in_event() -> None:
    make_user("pat", role="patient", totp=False)
    password_step(Client(), "pat")
    event = AuditEvent.objects.get()
    assert (event.action, event.details) == (AuditAction.SIGN_IN, {"factor": "password"})
    assert event.user_agent == "pytest-browser"


def test_wrong_password_leaves_one_failure_event() -> None:
    user = make_user("pcp")
    assert password_step(Client(), "pcp", "wrong-password").status_code == 401
    event = AuditEvent.objects.get()
    assert (event.action, event.outcome, event.reason) == (
        AuditAction.SIGN_IN_FAILED,
        "failure",
        "bad_credentials",
    )
    assert event.actor_id == user.pk


def test_unknown_username_is_not_stored() -> None:
    password_step(Client(), "my-password-by-mistake", "x")
    event = AuditEvent.objects.get()
    assert event.actor_id is None
    assert "my-password-by-mistake" not in str(event.details) + event.target + event.reason


def test_locked_out_sign_in_is_recorded_as_a_failure() -> None:
    make_user("pcp")
    for i in range(5):
        password_step(Client(), "pcp", "wrong", addr=f"10.0.1.{i}")
    assert password_step(Client(), "pcp", addr="10.0.2.1").status_code == 429
    reasons = list(AuditEvent.objects.values_list("reason", flat=True).order_by("seq"))
    # One event per attempt; axes locks as the fifth failure lands.
    assert len(reasons) == 6 and set(actions()) == {AuditAction.SIGN_IN_FAILED}
    assert reasons[0] == "bad_credentials" and reasons[-1] == "locked_out"


def test_wrong_code_leaves_one_otp_failure() -> None:
    user = make_user("pcp")
    client = Client()
    password_step(client, "pcp")
    wrong = f"{(int(totp_code(user)) + 1) % 1_000_000:06d}"
    assert client.post(OTP, {"code": wrong}).status_code == 401
    assert actions() == [AuditAction.OTP_FAILED]
    assert AuditEvent.objects.get().actor_id == user.pk


def test_throttled_code_leaves_one_throttle_event() -> None:
    user = make_user("pcp")
    client = Client()
    password_step(client, "pcp")
    wrong = "000000" if totp_code(user) != "000000" else "111111"
    client.post(OTP, {"code": wrong})
    assert client.post(OTP, {"code": totp_code(user)}).status_code == 429
    assert actions() == [AuditAction.OTP_FAILED, AuditAction.OTP_THROTTLED]
    throttled = AuditEvent.objects.get(action=AuditAction.OTP_THROTTLED)
    assert throttled.reason == "throttled" and throttled.details["retry_after_seconds"] >= 1


def test_enrolment_leaves_one_enrolment_event() -> None:
    user = make_user("newdoc", totp=False)
    client = Client()
    password_step(client, "newdoc")
    client.get(reverse("accounts:enrol"))
    device = TOTPDevice.objects.get(user=user, confirmed=False)
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    assert (
        client.post(reverse("accounts:enrol"), {"code": f"{totp.token():06d}"}).status_code == 302
    )
    assert actions() == [AuditAction.TOTP_ENROLLED]
    event = AuditEvent.objects.get()
    assert event.actor_id == user.pk and event.details == {"backup_codes": 10}


def test_manual_sign_out_leaves_one_sign_out_event() -> None:
    user = make_user("pcp")
    client = verified_client(user)
    assert client.post(reverse("accounts:logout")).status_code == 302
    assert actions() == [AuditAction.SIGN_OUT]
    assert AuditEvent.objects.get().actor_id == user.pk


def test_inactivity_leaves_one_automatic_sign_out_event(settings) -> None:
    user = make_user("pcp")
    client = verified_client(user)
    session = client.session
    session[LAST_ACTIVITY_KEY] = time.time() - settings.IDLE_TIMEOUT_SECONDS - 5
    session.save()
    assert client.get(HOME).status_code == 302
    assert actions() == [AuditAction.AUTO_SIGN_OUT]
    event = AuditEvent.objects.get()
    assert event.actor_id == user.pk and event.reason == "inactivity"


def test_no_secret_reaches_the_audit_trail() -> None:
    user = make_user("pcp")
    client = Client()
    password_step(client, "pcp", "wrong-password")
    password_step(client, "pcp")
    code = totp_code(user)
    client.post(OTP, {"code": code})
    dumped = " ".join(
        str(row) for row in AuditEvent.objects.values_list("target", "reason", "details")
    )
    assert PASSWORD not in dumped and "wrong-password" not in dumped and code not in dumped


@pytest.mark.django_db(transaction=True)
def test_failure_event_is_committed_although_the_response_is_an_error() -> None:
    make_user("pcp")
    assert password_step(Client(), "pcp", "wrong-password").status_code == 401
    assert AuditEvent.objects.filter(action=AuditAction.SIGN_IN_FAILED).count() == 1
