"""The on-call page of the browser client (/oncall/): who is on call, and for admins,
editing the schedules (frontend/static/collab/app/oncall-page.js)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse

from collab.views import _app_page


@login_required
def oncall_page(request: HttpRequest) -> HttpResponse:
    return _app_page(request, "oncall")
