"""Page-side session rules: automatic logoff after inactivity and the second factor gate."""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.urls import reverse

from collab.accounts import policy, services

# Paths a signed-in user may reach before passing the second factor.
_OPEN_PREFIXES = (
    "/static/",
    "/accounts/otp/",
    "/accounts/enrol/",
    "/accounts/logout/",
)
# The API descriptions are public (collab/schema/views.py): these exact paths only.
_OPEN_PATHS = frozenset({"/api/openapi.json", "/api/asyncapi.json"})


def _wants_json(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


class InactivityLogoutMiddleware:
    """Automatic logoff: after IDLE_TIMEOUT_SECONDS without a person's action
    (policy.request_is_activity), and SESSION_ABSOLUTE_SECONDS after sign-in."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.user.is_authenticated and not request.path.startswith("/static/"):
            session = request.session
            idle = policy.idle_expired(session)
            if idle or policy.lifetime_expired(session):
                services.sign_out(request=request, reason="inactivity" if idle else "lifetime")
                if _wants_json(request):
                    return JsonResponse(
                        {"error": "session_expired", "detail": "Sign in again."}, status=401
                    )
                query = urlencode({"reason": "idle" if idle else "expired"})
                return HttpResponseRedirect(f"{reverse('accounts:login')}?{query}")
            if policy.SIGNED_IN_KEY not in session:
                # A session from before the absolute lifetime existed: it runs from now.
                session[policy.SIGNED_IN_KEY] = time.time()
            if policy.request_is_activity(request):
                session[policy.LAST_ACTIVITY_KEY] = time.time()
        return self.get_response(request)


class RequireSecondFactorMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = request.user
        if (
            user.is_authenticated
            and not request.path.startswith(_OPEN_PREFIXES)
            and request.path not in _OPEN_PATHS
            and not policy.second_factor_satisfied(user, request.session)
        ):
            if _wants_json(request):
                return JsonResponse(
                    {"error": "second_factor_required", "detail": "Verify the second factor."},
                    status=403,
                )
            needs_enrolment = policy.requires_totp(user) and not policy.has_confirmed_totp(user)
            target = "accounts:enrol" if needs_enrolment else "accounts:otp"
            return HttpResponseRedirect(reverse(target))
        return self.get_response(request)
