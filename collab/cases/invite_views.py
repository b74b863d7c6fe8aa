"""The patient's invitation pages: /invite/<token>/ (landing and sign-up) and the welcome page.

The token is only in the path of these pages: responses are not cached and send no
Referer, so the link does not leak to other sites or shared caches.
"""

from __future__ import annotations

import time

from django import forms
from django.contrib.auth import login
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods

from collab.accounts.models import Role, User
from collab.accounts.policy import LAST_ACTIVITY_KEY
from collab.audit.services import AuditAction, RequestMeta, audit_record
from collab.cases.services import invitations
from collab.errors import Conflict
from collab.frontend import invite_assets

_MESSAGES = {
    invitations.InvitationState.UNKNOWN: (
        "This invitation link is not valid. Check that you copied the whole link, "
        "or ask your care team for a new one."
    ),
    invitations.InvitationState.EXPIRED: (
        "This invitation has expired. Ask your care team to send you a new one."
    ),
    invitations.InvitationState.USED: (
        "This invitation has already been used. If that was you, sign in instead; "
        "otherwise tell your care team."
    ),
    invitations.InvitationState.REVOKED: (
        "This invitation was withdrawn by your care team. Ask them for a new one."
    ),
}


class PatientSignUpForm(forms.Form):
    username = forms.RegexField(
        regex=r"^[\w.@+-]{3,150}$",
        max_length=150,
        error_messages={"invalid": "Use 3 to 150 letters, digits and @ . + - _ only."},
        widget=forms.TextInput(attrs={"autocomplete": "username", "autofocus": True}),
    )
    display_name = forms.CharField(
        max_length=150, label="Your name", widget=forms.TextInput(attrs={"autocomplete": "name"})
    )
    password1 = forms.CharField(
        label="Password",
        max_length=256,
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )
    password2 = forms.CharField(
        label="Password again",
        max_length=256,
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )

    def clean_username(self) -> str:
        username = str(self.cleaned_data["username"])
        if User.objects.filter(username__iexact=username).exists():
            raise ValidationError("That username is taken; choose another.")
        return username

    def clean(self) -> dict[str, object]:
        data = super().clean() or {}
        first, second = data.get("password1"), data.get("password2")
        if first and second and first != second:
            self.add_error("password2", "The two passwords differ.")
        elif first:
            candidate = User(
                username=str(data.get("username", "")),
                display_name=str(data.get("display_name", "")),
                role=Role.PATIENT,
            )
            try:
                validate_password(str(first), user=candidate)
            except ValidationError as error:
                self.add_error("password1", error)
        return data


def _private(response: HttpResponse) -> HttpResponse:
    response["Cache-Control"] = "no-store"
    # The URL carries the token: never send it to another origin. (no-referrer would make
    # browsers post the form with "Origin: null", which the CSRF check refuses.)
    response["Referrer-Policy"] = "same-origin"
    return response


def _unavailable(request: HttpRequest, state: invitations.InvitationState) -> HttpResponse:
    status = 404 if state is invitations.InvitationState.UNKNOWN else 410
    context = {"message": _MESSAGES[state], "state": state.value}
    return _private(render(request, "invite/unavailable.html", context, status=status))


@require_http_methods(["GET", "POST"])
def invite_view(request: HttpRequest, token: str) -> HttpResponse:
    meta = RequestMeta.from_request(request)
    user = request.user
    if isinstance(user, User) and user.role == Role.PATIENT:
        return _existing_patient(request, token, user, meta)
    if user.is_authenticated:
        # Only patients join through invitations; the link stays unused.
        return _private(render(request, "invite/signed_in.html", status=409))
    if request.method == "GET":
        try:
            invitations.invitation_open(raw_token=token, meta=meta)
        except invitations.InvitationUnavailable as refused:
            return _unavailable(request, refused.state)
        context = {"form": PatientSignUpForm(), **invite_assets()}
        return _private(render(request, "invite/signup.html", context))
    form = PatientSignUpForm(request.POST)
    if not form.is_valid():
        if invitations.token_hash(token) is None:
            return _unavailable(request, invitations.InvitationState.UNKNOWN)
        context = {"form": form, **invite_assets()}
        return _private(render(request, "invite/signup.html", context, status=400))
    try:
        patient = invitations.invitation_accept(
            raw_token=token,
            username=form.cleaned_data["username"],
            display_name=form.cleaned_data["display_name"],
            password=form.cleaned_data["password1"],
            meta=meta,
        )
    except invitations.InvitationUnavailable as refused:
        return _unavailable(request, refused.state)
    except Conflict:
        form.add_error("username", "That username is taken; choose another.")
        context = {"form": form, **invite_assets()}
        return _private(render(request, "invite/signup.html", context, status=400))
    login(request, patient, backend="django.contrib.auth.backends.ModelBackend")
    request.session[LAST_ACTIVITY_KEY] = time.time()
    audit_record(
        action=AuditAction.SIGN_IN, actor=patient, meta=meta, details={"factor": "invitation"}
    )
    return HttpResponseRedirect(reverse("invite-welcome"))


def _existing_patient(
    request: HttpRequest, token: str, patient: User, meta: RequestMeta
) -> HttpResponse:
    """A signed-in patient joins with the account they have: one click, no new account."""
    if request.method == "GET":
        try:
            invitations.invitation_open(raw_token=token, meta=meta)
        except invitations.InvitationUnavailable as refused:
            return _unavailable(request, refused.state)
        context = {"patient": patient, **invite_assets()}
        return _private(render(request, "invite/join_existing.html", context))
    try:
        invitations.invitation_accept(raw_token=token, patient=patient, meta=meta)
    except invitations.InvitationUnavailable as refused:
        return _unavailable(request, refused.state)
    except Conflict as conflict:
        context = {"message": conflict.message, "state": conflict.code}
        return _private(render(request, "invite/unavailable.html", context, status=409))
    return HttpResponseRedirect(reverse("invite-welcome"))


@require_GET
def welcome_view(request: HttpRequest) -> HttpResponse:
    user = request.user
    if not isinstance(user, User) or user.role != Role.PATIENT:
        return HttpResponseRedirect(reverse("home"))
    return _private(
        render(request, "invite/welcome.html", {"enrol_url": reverse("accounts:enrol")})
    )
