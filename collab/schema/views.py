"""The API descriptions, served as JSON to anyone (they hold nothing secret)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse

from collab.api import error
from collab.schema.loader import asyncapi_document, openapi_document

# Public and the same for every caller until the next deploy.
_CACHE_CONTROL = "public, max-age=300"


def _described(document: dict[str, object]) -> HttpResponse:
    response = JsonResponse(document)
    response["Cache-Control"] = _CACHE_CONTROL
    return response


def _get_only(request: HttpRequest) -> HttpResponse | None:
    if request.method not in {"GET", "HEAD"}:
        response = error("method_not_allowed", "Use GET.", 405)
        response["Allow"] = "GET, HEAD"
        return response
    return None


def openapi_view(request: HttpRequest) -> HttpResponse:
    return _get_only(request) or _described(openapi_document())


def asyncapi_view(request: HttpRequest) -> HttpResponse:
    refused = _get_only(request)
    if refused is not None:
        return refused
    document = asyncapi_document()
    if document is None:
        return error("not_found", "No AsyncAPI description is installed.", 404)
    return _described(document)
