"""The browser client's page shells and the directory search (no browser needed)."""

from __future__ import annotations

import base64
import hashlib
import re
import uuid

import pytest
from django.contrib.staticfiles import finders
from django.test import Client

from collab import frontend
from tests.support.users import make_user, verified_client

pytestmark = pytest.mark.django_db

PAGES = ["/", "/devices/", "/keys/", f"/cases/{uuid.uuid4()}/"]


def sha384(name: str) -> str:
    path = finders.find(name)
    assert isinstance(path, str), name
    with open(path, "rb") as handle:
        digest = hashlib.sha384(handle.read()).digest()
    return "sha384-" + base64.b64encode(digest).decode()


@pytest.mark.parametrize("path", PAGES)
def test_app_pages_give_every_script_integrity_under_a_strict_csp(path: str) -> None:
    client = verified_client(make_user("pcp"))
    response = client.get(path)
    assert response.status_code == 200
    html = response.content.decode()
    csp = response["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "<script>" not in html  # no inline script
    scripts = re.findall(r"<script ([^>]*)>", html)
    assert len(scripts) == 3  # tweetnacl and qrcode-generator (classic), the entry module
    for attrs in scripts:
        src = re.search(r'src="/static/([^"]+)"', attrs)
        integrity = re.search(r'integrity="([^"]+)"', attrs)
        assert src and integrity, attrs
        assert integrity.group(1) == sha384(src.group(1))
    preloads = dict(
        re.findall(r'<link rel="modulepreload" href="/static/([^"]+)" integrity="([^"]+)"', html)
    )
    graph = {a.name for a in frontend.module_graph("collab/app/main.js")}
    assert set(preloads) == graph
    assert "collab/cr1/envelope.js" in graph and "collab/app/room-page.js" in graph
    for name, integrity in preloads.items():
        assert integrity == sha384(name)
    token = re.search(r'<meta name="csrf-token" content="([^"]+)">', html)
    assert token and len(token.group(1)) >= 32


def test_app_pages_need_a_signed_in_user_with_second_factor() -> None:
    for path in PAGES:
        assert Client().get(path).status_code == 302
    client = Client()
    client.force_login(make_user("half"), backend="django.contrib.auth.backends.ModelBackend")
    for path in PAGES:
        response = client.get(path)
        assert response.status_code == 302 and "/accounts/otp/" in response["Location"]


def test_directory_lists_providers_matching_the_query() -> None:
    viewer = verified_client(make_user("pcp"))
    derm = make_user("okafor", specialty="Dermatology")
    make_user("okafor_patient", role="patient", totp=False)
    answer = viewer.get("/api/directory?q=okaf").json()
    assert answer == {
        "users": [
            {
                "id": str(derm.pk),
                "display_name": "Okafor",
                "specialty": "Dermatology",
                "organisation": "",
            }
        ]
    }
    assert viewer.get("/api/directory?q=derma").json()["users"][0]["id"] == str(derm.pk)
    assert viewer.get("/api/directory?q=o").json() == {"users": []}  # too short


def test_patients_cannot_search_the_directory() -> None:
    patient = verified_client(make_user("pat", role="patient", totp=False))
    response = patient.get("/api/directory?q=okafor")
    assert response.status_code == 403
    assert response.json()["error"] == "patients_no_directory"


def test_directory_needs_a_session() -> None:
    assert Client().get("/api/directory?q=okafor").status_code == 401
