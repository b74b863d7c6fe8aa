from django.urls import path

from collab.escalation import views

urlpatterns = [
    path("escalation/policy", views.organisation_policy),
    path("cases/<uuid:case_id>/escalation-policy", views.case_policy),
]
