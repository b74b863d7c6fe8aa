import uuid

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import get_token
from django.shortcuts import render

from collab import frontend


def _app_page(request: HttpRequest, page: str, **data: str) -> HttpResponse:
    """A page of the browser client: a server-rendered shell the ES modules fill in."""
    user = request.user
    context = {
        "page": page,
        "page_data": data,
        "csrf_value": get_token(request),
        "idle_timeout": settings.IDLE_TIMEOUT_SECONDS,
        "user_id": str(user.pk),
        "user_role": getattr(user, "role", ""),
        **frontend.page_assets(),
    }
    return render(request, "app.html", context)


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """The case list and the form to open a case."""
    return _app_page(request, "cases")


@login_required
def case_room(request: HttpRequest, case_id: uuid.UUID) -> HttpResponse:
    return _app_page(request, "room", case=str(case_id),
                     recall_window=str(settings.RECALL_WINDOW_MINUTES))


@login_required
def devices_page(request: HttpRequest) -> HttpResponse:
    return _app_page(request, "devices")


@login_required
def keys_page(request: HttpRequest) -> HttpResponse:
    """First sign-in on this browser: create or recover the identity, register the device."""
    return _app_page(request, "keys")


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    if request.path.startswith("/api/"):
        return JsonResponse(
            {"error": "csrf_failed", "detail": "Missing or bad CSRF token."}, status=403
        )
    return render(request, "csrf_failure.html", status=403)
