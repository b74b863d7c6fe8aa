from django.urls import path

from collab.audit import views

app_name = "audit"

urlpatterns = [
    path("export", views.export_view, name="export"),
    path("checkpoints", views.checkpoints_view, name="checkpoints"),
]
