"""The OpenAPI description names exactly the routes the URLconf has, with the methods
each view answers, validates as OpenAPI 3.1, and is served by the running server."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any, cast

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from openapi_spec_validator import validate

from collab.schema import loader
from tests.support.users import make_user, verified_client

HTTP_METHODS = ("get", "post", "put", "patch", "delete")
# Django's admin site is not part of the API (said in the description's info).
NOT_DESCRIBED = ("/admin/",)
_CONVERTER = re.compile(r"<(?:(?P<kind>[^>:]+):)?(?P<name>\w+)>")
# A value each converter matches, for requests to a templated path.
_SAMPLE = {"uuid": str(uuid.UUID(int=1)), "int": "1", "str": "x", None: "x"}


def _routes(resolver: URLResolver | None = None, prefix: str = "") -> list[tuple[str, Any]]:
    """Every (path template, view) of the URLconf, converters as ``<kind:name>``."""
    found: list[tuple[str, Any]] = []
    for entry in (resolver or get_resolver()).url_patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            found.extend(_routes(entry, route))
        elif isinstance(entry, URLPattern):
            found.append(("/" + route, entry.callback))
    return found


def _openapi_path(route: str) -> str:
    return _CONVERTER.sub(lambda m: "{" + m["name"] + "}", route)


def _sample_path(route: str) -> str:
    return _CONVERTER.sub(lambda m: _SAMPLE.get(m["kind"], "x"), route)


def _url_routes() -> dict[str, tuple[str, Any]]:
    return {
        _openapi_path(route): (route, view)
        for route, view in _routes()
        if not route.startswith(NOT_DESCRIBED)
    }


def _described_methods(item: dict[str, Any]) -> set[str]:
    return {method.upper() for method in HTTP_METHODS if method in item}


def _declared_methods(view: Any) -> set[str] | None:
    """The methods a view's decorator admits: ``api((...))`` keeps them as ``methods``,
    Django's ``require_http_methods`` as ``request_method_list``. None: no decorator
    restricts the method (a login-required page)."""
    fn = view
    while fn is not None:
        closure = getattr(fn, "__closure__", None) or ()
        names = getattr(getattr(fn, "__code__", None), "co_freevars", ())
        cells = dict(zip(names, (c.cell_contents for c in closure), strict=False))
        for key in ("methods", "request_method_list"):
            if isinstance(cells.get(key), list | tuple):
                return {str(m).upper() for m in cells[key]} - {"HEAD"}
        fn = getattr(fn, "__wrapped__", None)
    return None


def test_every_route_is_described_and_nothing_else() -> None:
    paths = loader.openapi_document()["paths"]
    routes = _url_routes()
    missing = sorted(set(routes) - set(paths))
    extra = sorted(set(paths) - set(routes))
    assert not missing, f"routes with no description: {missing}"
    assert not extra, f"described paths the URLconf lacks: {extra}"


def test_described_methods_match_the_views_decorators() -> None:
    paths = loader.openapi_document()["paths"]
    wrong = {}
    for path, (_route, view) in _url_routes().items():
        if path not in paths:
            continue  # reported by the test above
        declared = _declared_methods(view)
        described = _described_methods(paths[path])
        # A page that no decorator restricts is described as the GET it is for.
        expected = declared if declared is not None else {"GET"}
        if described != expected:
            wrong[path] = (sorted(described), sorted(expected))
    assert not wrong, f"described vs accepted methods: {wrong}"


@pytest.mark.django_db
@pytest.mark.hostile_input  # sends the methods the description leaves out, on purpose
def test_api_routes_refuse_exactly_the_methods_not_described() -> None:
    """What the server answers, not what the decorators say: every /api/ route answers
    405 ``method_not_allowed`` (the JSON error body) for each method the description
    leaves out, and something else for each it names."""
    client = verified_client(make_user("schema-routes", role="provider"))
    paths = loader.openapi_document()["paths"]
    wrong: list[tuple[str, str, int | str]] = []
    for path, (route, _view) in _url_routes().items():
        if not path.startswith("/api/") or path not in paths:
            continue
        url = _sample_path(route)
        described = _described_methods(paths[path])
        for method in HTTP_METHODS:
            response = client.generic(
                method.upper(), url, data=b"{}", content_type="application/json"
            )
            refused = response.status_code == 405
            if refused and json.loads(response.content).get("error") != "method_not_allowed":
                wrong.append((method.upper(), url, 405))  # without the JSON error body
            elif refused and set(response.get("Allow", "").split(", ")) - {"HEAD"} != described:
                wrong.append((method.upper(), url, f"405 Allow: {response.get('Allow')}"))
            elif refused == (method.upper() in described):
                wrong.append((method.upper(), url, response.status_code))
    assert not wrong, f"(method, url, status) that disagree with the description: {wrong}"


def test_the_document_validates_as_openapi_3_1() -> None:
    document = loader.openapi_document()
    assert document["openapi"].startswith("3.1")
    validate(cast("Mapping[Hashable, Any]", document))  # raises on an invalid document


def test_every_operation_names_its_security_and_responses() -> None:
    missing = []
    for path, item in loader.openapi_document()["paths"].items():
        for method in HTTP_METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            if "security" not in operation or not operation.get("responses"):
                missing.append(f"{method.upper()} {path}")
    assert not missing, f"operations without security or responses: {missing}"


def test_a_duplicate_path_or_component_names_both_files(tmp_path: Path) -> None:
    base = tmp_path / "base.yaml"
    base.write_text(
        "openapi: 3.1.0\ninfo: {title: t, version: '1'}\npaths: {}\n"
        "components: {schemas: {Error: {type: object}}}\n"
    )
    one = tmp_path / "one.yaml"
    one.write_text("paths: {/a: {}}\n")
    two = tmp_path / "two.yaml"
    two.write_text("paths: {/a: {}}\n")
    with pytest.raises(loader.SchemaError, match=r"one\.yaml and two\.yaml"):
        loader.openapi_merge([base, one, two])
    clash = tmp_path / "clash.yaml"
    clash.write_text("paths: {}\ncomponents: {schemas: {Error: {type: string}}}\n")
    with pytest.raises(loader.SchemaError, match=r"base\.yaml and clash\.yaml"):
        loader.openapi_merge([base, clash])
    merged = loader.openapi_merge([base, one])
    assert set(merged["paths"]) == {"/a"}


@pytest.mark.django_db
def test_the_server_serves_the_description_without_sign_in() -> None:
    response = Client().get("/api/openapi.json")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert "public" in response["Cache-Control"]
    assert response.json() == loader.openapi_document()


@pytest.mark.django_db
def test_the_description_is_served_before_the_second_factor() -> None:
    """A session that passed the password but not TOTP gets every other /api/ route
    refused (403 second_factor_required), and still the descriptions."""
    user = make_user("half-signed", role="provider")
    client = Client()
    client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
    assert client.get("/api/devices").json()["error"] == "second_factor_required"
    assert client.get("/api/openapi.json").status_code == 200
    assert client.get("/api/asyncapi.json").status_code in {200, 404}


@pytest.mark.django_db
def test_the_asyncapi_route_answers_the_document_or_a_json_404() -> None:
    response = Client().get("/api/asyncapi.json")
    document = loader.asyncapi_document()
    if document is None:
        assert response.status_code == 404
        assert response.json()["error"] == "not_found"
    else:
        assert response.status_code == 200
        assert response.json() == document


@pytest.mark.django_db
@pytest.mark.hostile_input  # sends a method the description leaves out, on purpose
def test_the_description_routes_refuse_other_methods_as_json() -> None:
    client = Client(enforce_csrf_checks=False)
    for url in ("/api/openapi.json", "/api/asyncapi.json"):
        response = client.post(url)
        assert response.status_code == 405
        assert response.json()["error"] == "method_not_allowed"
        assert response["Allow"] == "GET, HEAD"
