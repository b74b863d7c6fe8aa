from django.contrib import admin
from django.urls import include, path

from collab import views

urlpatterns = [
    path("", views.home, name="home"),
    path("accounts/", include("collab.accounts.urls")),
    path("admin/", admin.site.urls),
]
