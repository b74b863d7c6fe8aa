"""Which HTTP methods a JSON route answers: every other method gets the JSON error body
``405 method_not_allowed`` (protocol.md §2) with an ``Allow`` header, never Django's empty
HTML 405. A leaf: the audit app uses it too."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.http.response import HttpResponseBase

View = Callable[..., HttpResponseBase]


def method_not_allowed(methods: tuple[str, ...]) -> JsonResponse:
    """The 405 answer; ``Allow`` names the methods the route does answer (RFC 9110)."""
    response = JsonResponse(
        {"error": "method_not_allowed", "detail": f"Use {' or '.join(methods)}."}, status=405
    )
    response["Allow"] = ", ".join(methods)
    return response


def allow_methods(*methods: str) -> Callable[[View], View]:
    def decorate(view: View) -> View:
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if request.method not in methods:
                return method_not_allowed(methods)
            return view(request, *args, **kwargs)

        return wrapper

    return decorate
