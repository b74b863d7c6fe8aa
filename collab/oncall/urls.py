from django.urls import path

from collab.oncall import views

urlpatterns = [
    path("services", views.service_collection),
    path("services/<int:service_id>/shifts", views.service_shifts),
    path("services/<int:service_id>/providers", views.service_providers),
    path("shifts/<int:shift_id>/remove", views.shift_remove),
    path("now", views.oncall_now),
]
