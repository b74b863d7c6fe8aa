from django.urls import path

from collab.accounts import device_views
from collab.cases import views

urlpatterns = [
    path("identity", device_views.identity),
    path("identity/backup", device_views.identity_backup),
    path("identity/pins", device_views.identity_pins),
    path("devices", device_views.device_list),
    path("devices/<uuid:device_id>/revoke", device_views.device_revoke),
    path("users/<uuid:user_id>/keys", device_views.user_keys),
    path("directory", device_views.directory),
    path("cases", views.case_list),
    path("cases/<uuid:case_id>", views.case_detail),
    path("cases/<uuid:case_id>/log", views.case_log),
    path("cases/<uuid:case_id>/wraps", views.case_wraps),
    path("cases/<uuid:case_id>/join-requests", views.case_join_requests),
    path("join-requests", views.my_join_requests),
    path("join-requests/<int:join_id>/decline", views.join_request_decline),
    path("join-requests/<int:join_id>/withdraw", views.join_request_withdraw),
    path("cases/<uuid:case_id>/messages", views.case_messages),
    path("cases/<uuid:case_id>/blobs", views.blob_create),
    path("blobs/<uuid:blob_id>/parts/<int:offset>", views.blob_part),
    path("blobs/<uuid:blob_id>/complete", views.blob_complete),
    path("blobs/<uuid:blob_id>", views.blob_download),
    path("cases/<uuid:case_id>/invitations", views.case_invitations),
    path("invitations/mine", views.my_invitations),
    path("invitations/<uuid:invitation_id>/revoke", views.invitation_revoke),
    path("invitations/<uuid:invitation_id>/proof", views.invitation_proof),
    path("cases/<uuid:case_id>/status", views.case_status),
    path("cases/<uuid:case_id>/urgent", views.case_urgent),
    path("cases/<uuid:case_id>/leave", views.case_leave),
    path("consults/queue", views.consult_queue),
    path("consults/<uuid:case_id>/claim", views.consult_claim),
    path("notifications", views.notification_list),
    path("notifications/<int:notification_id>/read", views.notification_read),
]
