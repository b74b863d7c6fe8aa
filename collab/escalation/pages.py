"""The escalation page of the browser client (/escalation/): the organisation's policy,
which admins edit (frontend/static/collab/app/escalation-page.js)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse

from collab.views import _app_page


@login_required
def escalation_page(request: HttpRequest) -> HttpResponse:
    return _app_page(request, "escalation")
