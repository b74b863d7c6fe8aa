from django.contrib import admin
from django.urls import include, path

from collab import views
from collab.accounts import views as accounts_views
from collab.cases import access_log_views, invite_views
from collab.escalation import pages as escalation_pages
from collab.oncall import pages as oncall_pages
from collab.retention import pages as retention_pages
from collab.schema import views as schema_views

urlpatterns = [
    path("", views.home, name="home"),
    path("cases/<uuid:case_id>/", views.case_room, name="case-room"),
    path("devices/", views.devices_page, name="devices"),
    path("keys/", views.keys_page, name="keys"),
    path("retention/", retention_pages.retention_page, name="retention"),
    path("oncall/", oncall_pages.oncall_page, name="oncall"),
    path("escalation/", escalation_pages.escalation_page, name="escalation"),
    path("accounts/", include("collab.accounts.urls")),
    # The admin signs in through accounts:login (audited, second factor), never its own form.
    path("admin/login/", accounts_views.admin_login_view, name="admin-login"),
    path("admin/", admin.site.urls),
    path("api/audit/", include("collab.audit.urls")),
    path(
        "api/cases/<uuid:case_id>/access-log",
        access_log_views.case_access_log,
        name="case-access-log",
    ),
    # Public descriptions of the API, before the api/ include (docs/protocol.md §3).
    path("api/openapi.json", schema_views.openapi_view, name="openapi"),
    path("api/asyncapi.json", schema_views.asyncapi_view, name="asyncapi"),
    path("api/retention/", include("collab.retention.urls")),
    path("api/oncall/", include("collab.oncall.urls")),
    path("api/", include("collab.escalation.urls")),
    path("api/", include("collab.cases.urls")),
    path("invite/welcome/", invite_views.welcome_view, name="invite-welcome"),
    path("invite/<str:token>/", invite_views.invite_view, name="invite"),
]

# Every /api/ failure answers the JSON error body (protocol.md §2); pages keep Django's.
handler400 = "collab.api.handler400"
handler403 = "collab.api.handler403"
handler404 = "collab.api.handler404"
handler500 = "collab.api.handler500"
