"""The API descriptions, served as JSON to anyone (they hold nothing secret)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse

from collab.api import error
from collab.methods import allow_methods
from collab.schema.loader import asyncapi_document, openapi_document

# Public and the same for every caller until the next deploy.
_CACHE_CONTROL = "public, max-age=300"


def _described(document: dict[str, object]) -> HttpResponse:
    response = JsonResponse(document)
    response["Cache-Control"] = _CACHE_CONTROL
    return response


@allow_methods("GET", "HEAD")
def openapi_view(request: HttpRequest) -> HttpResponse:
    return _described(openapi_document())


@allow_methods("GET", "HEAD")
def asyncapi_view(request: HttpRequest) -> HttpResponse:
    document = asyncapi_document()
    if document is None:
        return error("not_found", "No AsyncAPI description is installed.", 404)
    return _described(document)
