from __future__ import annotations

import time

import pytest
from django.test import Client
from django.urls import reverse
from django_otp.oath import TOTP
from django_otp.plugins.otp_static.models import StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from collab.accounts.policy import LAST_ACTIVITY_KEY
from tests.support.users import PASSWORD, make_user, totp_code, verified_client

pytestmark = pytest.mark.django_db

LOGIN = reverse("accounts:login")
OTP = reverse("accounts:otp")
HOME = reverse("home")


def password_step(client: Client, username: str, password: str = PASSWORD, addr: str = "10.0.0.1"):
    return client.post(LOGIN, {"username": username, "password": password}, REMOTE_ADDR=addr)


def test_full_sign_in_with_password_and_totp_reaches_home() -> None:
    user = make_user("pcp")
    client = Client()
    assert password_step(client, "pcp").status_code == 302
    response = client.post(OTP, {"code": totp_code(user)})
    assert response.status_code == 302
    assert client.get(HOME).status_code == 200


def test_wrong_password_is_refused() -> None:
    make_user("pcp")
    client = Client()
    response = password_step(client, "pcp", "not-the-password")
    assert response.status_code == 401
    assert b"Wrong username or password" in response.content
    assert "_auth_user_id" not in client.session


def test_password_alone_does_not_reach_home() -> None:
    make_user("pcp")
    client = Client()
    password_step(client, "pcp")
    response = client.get(HOME)
    assert response.status_code == 302
    assert response["Location"] == OTP


def test_wrong_code_is_refused() -> None:
    user = make_user("pcp")
    client = Client()
    password_step(client, "pcp")
    good = totp_code(user)
    wrong = f"{(int(good) + 1) % 1_000_000:06d}"
    response = client.post(OTP, {"code": wrong})
    assert response.status_code == 401
    assert client.get(HOME).status_code == 302


def test_replayed_code_is_refused() -> None:
    user = make_user("pcp")
    code = totp_code(user)
    first = Client()
    password_step(first, "pcp")
    assert first.post(OTP, {"code": code}).status_code == 302
    second = Client()
    password_step(second, "pcp")
    response = second.post(OTP, {"code": code})
    assert response.status_code == 401
    assert second.get(HOME).status_code == 302


def test_otp_throttled_after_repeated_failures_even_for_a_right_code() -> None:
    user = make_user("pcp")
    client = Client()
    password_step(client, "pcp")
    wrong = "000000" if totp_code(user) != "000000" else "111111"
    assert client.post(OTP, {"code": wrong}).status_code == 401
    # django-otp now locks the device for an exponentially growing delay.
    response = client.post(OTP, {"code": totp_code(user)})
    assert response.status_code == 429
    assert b"Too many wrong codes" in response.content
    assert client.get(HOME).status_code == 302
    assert TOTPDevice.objects.get(user=user).throttling_failure_count == 1


def test_password_lockout_per_account() -> None:
    make_user("pcp")
    for i in range(5):
        password_step(Client(), "pcp", "wrong", addr=f"10.0.1.{i}")
    client = Client()
    response = password_step(client, "pcp", PASSWORD, addr="10.0.2.1")
    assert response.status_code == 429
    assert b"Too many failed sign-ins" in response.content
    assert "_auth_user_id" not in client.session


def test_password_lockout_per_address() -> None:
    make_user("victim")
    for i in range(5):
        password_step(Client(), f"guess{i}", "wrong", addr="10.9.9.9")
    response = password_step(Client(), "victim", PASSWORD, addr="10.9.9.9")
    assert response.status_code == 429
    # Another address may still sign in to the same account.
    assert password_step(Client(), "victim", PASSWORD, addr="10.9.9.10").status_code == 302


def test_unenrolled_provider_is_sent_to_enrolment_and_cannot_reach_anything_else() -> None:
    make_user("newdoc", totp=False)
    client = Client()
    assert password_step(client, "newdoc").status_code == 302
    for path in (HOME, "/admin/", OTP):
        response = client.get(path)
        assert response.status_code == 302
        assert response["Location"] == reverse("accounts:enrol")
    api = client.get("/api/anything/")
    assert api.status_code == 403
    assert api.json()["error"] == "second_factor_required"


def test_enrolment_shows_qr_and_gives_single_use_backup_codes() -> None:
    user = make_user("newdoc", totp=False)
    client = Client()
    password_step(client, "newdoc")
    page = client.get(reverse("accounts:enrol"))
    assert page.status_code == 200
    assert b"<svg" in page.content
    device = TOTPDevice.objects.get(user=user, confirmed=False)
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    response = client.post(reverse("accounts:enrol"), {"code": f"{totp.token():06d}"})
    assert response.status_code == 302
    codes_page = client.get(reverse("accounts:backup_codes"))
    tokens = list(StaticToken.objects.filter(device__user=user).values_list("token", flat=True))
    assert len(tokens) == 10
    assert all(t.encode() in codes_page.content for t in tokens)
    assert client.get(HOME).status_code == 200
    # The codes page shows them once only.
    assert client.get(reverse("accounts:backup_codes")).status_code == 302

    backup = tokens[0]
    other = Client()
    password_step(other, "newdoc")
    assert other.post(OTP, {"code": backup}).status_code == 302
    again = Client()
    password_step(again, "newdoc")
    assert again.post(OTP, {"code": backup}).status_code == 401


def test_wrong_enrolment_code_does_not_confirm_device() -> None:
    user = make_user("newdoc", totp=False)
    client = Client()
    password_step(client, "newdoc")
    client.get(reverse("accounts:enrol"))
    device = TOTPDevice.objects.get(user=user)
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    wrong = f"{(totp.token() + 1) % 1_000_000:06d}"
    response = client.post(reverse("accounts:enrol"), {"code": wrong})
    assert response.status_code == 400
    device.refresh_from_db()
    assert not device.confirmed
    assert client.get(HOME).status_code == 302


def test_patient_without_totp_signs_in_with_password_alone() -> None:
    make_user("pat", role="patient", totp=False)
    client = Client()
    password_step(client, "pat")
    assert client.get(HOME).status_code == 200


def test_patient_who_enrolled_must_use_the_code() -> None:
    make_user("pat", role="patient", totp=True)
    client = Client()
    password_step(client, "pat")
    assert client.get(HOME).status_code == 302


def test_inactivity_logs_out(settings) -> None:
    user = make_user("pcp")
    client = verified_client(user)
    assert client.get(HOME).status_code == 200
    session = client.session
    session[LAST_ACTIVITY_KEY] = time.time() - settings.IDLE_TIMEOUT_SECONDS - 5
    session.save()
    response = client.get(HOME)
    assert response.status_code == 302
    assert response["Location"] == f"{LOGIN}?reason=idle"
    assert "_auth_user_id" not in client.session
    notice = client.get(response["Location"])
    assert b"signed out after a period of inactivity" in notice.content


def test_activity_keeps_session_alive(settings) -> None:
    user = make_user("pcp")
    client = verified_client(user)
    session = client.session
    session[LAST_ACTIVITY_KEY] = time.time() - settings.IDLE_TIMEOUT_SECONDS + 60
    session.save()
    assert client.get(HOME).status_code == 200
    assert client.get(HOME).status_code == 200


def test_logout_ends_session_and_requires_post() -> None:
    user = make_user("pcp")
    client = verified_client(user)
    assert client.get(reverse("accounts:logout")).status_code == 405
    assert client.post(reverse("accounts:logout")).status_code == 302
    assert client.get(HOME).status_code == 302


def test_open_redirect_is_refused() -> None:
    user = make_user("pcp")
    client = Client()
    client.post(LOGIN + "?next=https://evil.example/", {"username": "pcp", "password": PASSWORD})
    response = client.post(OTP + "?next=https://evil.example/", {"code": totp_code(user)})
    assert response["Location"] == HOME


def test_passwords_are_hashed_with_argon2() -> None:
    user = make_user("pcp")
    assert user.password.startswith("argon2$")
