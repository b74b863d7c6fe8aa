from django.urls import path

from collab.retention import views

urlpatterns = [
    path("policy", views.policy),
    path("cases", views.cases),
    path("cases/<uuid:case_id>/hold", views.hold),
]
