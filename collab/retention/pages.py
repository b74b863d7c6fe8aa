"""The admin's retention page (the browser client's /retention/)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

from collab.accounts.policy import is_admin
from collab.views import _app_page


@login_required
def retention_page(request: HttpRequest) -> HttpResponse:
    """The retention period and the legal holds: for admins only (403 otherwise)."""
    if not is_admin(request.user):
        raise PermissionDenied("Only an administrator manages retention.")
    return _app_page(request, "retention")
