"""Sign-in pages: parse, call one service, answer."""

from __future__ import annotations

import base64

import qrcode
import qrcode.image.svg
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.views.decorators.http import require_http_methods, require_POST

from collab.accounts import policy, services
from collab.accounts.forms import CodeForm, PasswordForm
from collab.accounts.models import User

_BACKUP_CODES_KEY = "collab_new_backup_codes"


def _user(request: HttpRequest) -> User:
    assert isinstance(request.user, User)  # noqa: S101 - guaranteed by login_required
    return request.user


def _next_url(request: HttpRequest) -> str:
    target = request.GET.get("next") or request.POST.get("next") or ""
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return reverse("home")


@require_http_methods(["GET", "POST"])
def admin_login_view(request: HttpRequest) -> HttpResponse:
    """Django's admin signs in through the project's own sign-in, which records every
    failure (SIGN_IN_FAILED) and asks for the second factor; the admin's own password-only
    form is never shown. ``next`` (default: the admin index) is checked by the sign-in."""
    target = request.GET.get("next") or reverse("admin:index")
    return HttpResponseRedirect(f"{reverse('accounts:login')}?{urlencode({'next': target})}")


@require_http_methods(["GET", "POST"])
def login_view(request: HttpRequest) -> HttpResponse:
    form = PasswordForm(request.POST or None)
    status = 200
    if request.method == "POST" and form.is_valid():
        outcome = services.password_sign_in(
            request=request,
            username=form.cleaned_data["username"],
            password=form.cleaned_data["password"],
        )
        if outcome is services.SignInOutcome.OK:
            return HttpResponseRedirect(
                f"{reverse('accounts:otp')}?{urlencode({'next': _next_url(request)})}"
            )
        if outcome is services.SignInOutcome.LOCKED_OUT:
            form.add_error(None, "Too many failed sign-ins. Try again in a few minutes.")
            status = 429
        else:
            form.add_error(None, "Wrong username or password.")
            status = 401
    context = {"form": form, "idle": request.GET.get("reason") == "idle"}
    return render(request, "accounts/login.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def otp_view(request: HttpRequest) -> HttpResponse:
    user = _user(request)
    if policy.second_factor_satisfied(user, request.session):
        return HttpResponseRedirect(_next_url(request))
    if policy.requires_totp(user) and not policy.has_confirmed_totp(user):
        return HttpResponseRedirect(reverse("accounts:enrol"))
    form = CodeForm(request.POST or None)
    status = 200
    if request.method == "POST" and form.is_valid():
        result = services.otp_verify(request=request, user=user, code=form.cleaned_data["code"])
        if result.outcome is services.OtpOutcome.OK:
            return HttpResponseRedirect(_next_url(request))
        if result.outcome is services.OtpOutcome.THROTTLED:
            form.add_error(
                None,
                f"Too many wrong codes. Wait {result.retry_after_seconds} seconds and try again.",
            )
            status = 429
        else:
            form.add_error(None, "That code is not valid (wrong, expired or already used).")
            status = 401
    return render(request, "accounts/otp.html", {"form": form}, status=status)


def _qr_svg(uri: str) -> str:
    image = qrcode.make(uri, image_factory=qrcode.image.svg.SvgPathImage, box_size=8)
    return image.to_string(encoding="unicode")


@login_required
@require_http_methods(["GET", "POST"])
def enrol_view(request: HttpRequest) -> HttpResponse:
    user = _user(request)
    if policy.has_confirmed_totp(user) and not policy.second_factor_satisfied(
        user, request.session
    ):
        # Re-enrolment needs the current second factor first.
        return HttpResponseRedirect(reverse("accounts:otp"))
    device = services.totp_enrolment_device(user=user)
    form = CodeForm(request.POST or None)
    status = 200
    if request.method == "POST" and form.is_valid():
        codes = services.totp_enrol_confirm(
            request=request, user=user, code=form.cleaned_data["code"]
        )
        if codes is not None:
            request.session[_BACKUP_CODES_KEY] = codes
            return HttpResponseRedirect(reverse("accounts:backup_codes"))
        form.add_error(None, "That code did not match. Check the time on your phone and try again.")
        status = 400
    secret = base64.b32encode(device.bin_key).decode().rstrip("=")
    context = {"form": form, "qr_svg": _qr_svg(device.config_url), "secret": secret}
    return render(request, "accounts/enrol.html", context, status=status)


@login_required
def backup_codes_view(request: HttpRequest) -> HttpResponse:
    codes = request.session.pop(_BACKUP_CODES_KEY, None)
    if not codes:
        return HttpResponseRedirect(reverse("home"))
    return render(request, "accounts/backup_codes.html", {"codes": codes})


@require_POST
def logout_view(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        services.sign_out(request=request, reason="user")
    return HttpResponseRedirect(reverse("accounts:login"))
