from django.contrib import admin
from django.urls import include, path

from collab import views
from collab.audit import views as audit_views
from collab.cases import invite_views

urlpatterns = [
    path("", views.home, name="home"),
    path("cases/<uuid:case_id>/", views.case_room, name="case-room"),
    path("devices/", views.devices_page, name="devices"),
    path("keys/", views.keys_page, name="keys"),
    path("accounts/", include("collab.accounts.urls")),
    path("admin/", admin.site.urls),
    path("api/audit/", include("collab.audit.urls")),
    path(
        "api/cases/<uuid:case_id>/access-log",
        audit_views.access_log_view,
        {"member_check": "collab.cases.access.is_case_member"},
        name="case-access-log",
    ),
    path("api/", include("collab.cases.urls")),
    path("invite/welcome/", invite_views.welcome_view, name="invite-welcome"),
    path("invite/<str:token>/", invite_views.invite_view, name="invite"),
]

# Every /api/ failure answers the JSON error body (protocol.md §2); pages keep Django's.
handler400 = "collab.api.handler400"
handler403 = "collab.api.handler403"
handler404 = "collab.api.handler404"
handler500 = "collab.api.handler500"
