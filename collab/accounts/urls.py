from django.urls import path

from collab.accounts import views

app_name = "accounts"

urlpatterns = [
    path("login/", views.login_view, name="login"),
    path("otp/", views.otp_view, name="otp"),
    path("enrol/", views.enrol_view, name="enrol"),
    path("enrol/backup-codes/", views.backup_codes_view, name="backup_codes"),
    path("logout/", views.logout_view, name="logout"),
]
