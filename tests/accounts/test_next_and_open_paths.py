"""Where a sign-in may send the browser next, and which paths skip the second factor."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from django.test import Client
from django.urls import reverse

from tests.support.users import PASSWORD, make_user, totp_code

pytestmark = pytest.mark.django_db

LOGIN = reverse("accounts:login")
OTP = reverse("accounts:otp")


def _sign_in_password(client: Client, next_url: str):
    return client.post(
        f"{LOGIN}?next={next_url}", {"username": "pcp", "password": PASSWORD}
    )


def test_next_travels_to_the_second_factor_as_one_encoded_parameter() -> None:
    """A ``next`` smuggling a second ``next`` stays one value, and an off-site target
    is dropped at the second factor too."""
    user = make_user("pcp")
    client = Client()
    smuggled = "/cases/%26next%3Dhttps%3A%2F%2Fevil.example%2F"
    response = _sign_in_password(client, smuggled)
    assert response.status_code == 302
    query = parse_qs(urlsplit(response["Location"]).query)
    assert query == {"next": ["/cases/&next=https://evil.example/"]}
    done = client.post(response["Location"], {"code": totp_code(user)})
    assert done.status_code == 302
    assert not urlsplit(done["Location"]).netloc  # never off the site


def test_an_off_site_next_is_replaced_by_home() -> None:
    make_user("pcp")
    response = _sign_in_password(Client(), "https://evil.example/")
    query = parse_qs(urlsplit(response["Location"]).query)
    assert query == {"next": [reverse("home")]}


def test_only_the_exact_description_paths_skip_the_second_factor() -> None:
    make_user("pcp")
    client = Client()
    assert _sign_in_password(client, "/").status_code == 302  # password only
    assert client.get("/api/openapi.json").status_code == 200
    assert client.get("/api/asyncapi.json").status_code == 200
    for path in ("/api/openapi.jsonx", "/api/openapi.json/", "/api/asyncapi.json.bak"):
        refused = client.get(path)
        assert refused.status_code == 403, path
        assert refused.json()["error"] == "second_factor_required"
