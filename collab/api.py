"""Thin JSON view plumbing: authentication, body parsing, error mapping."""

from __future__ import annotations

import asyncio
import functools
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import IO, Any

from django.http import HttpRequest, JsonResponse
from django.http.response import HttpResponseBase

from collab.accounts.models import User
from collab.crypto.errors import CryptoError
from collab.errors import ServiceError

MAX_JSON_BYTES = 2 * 1024 * 1024
DEVICE_HEADER = "HTTP_X_COLLAB_DEVICE"

View = Callable[..., HttpResponseBase]


async def stream_file(
    handle: IO[bytes], limit: int, block: int = 64 * 1024
) -> AsyncIterator[bytes]:
    """Serve ``limit`` bytes a block at a time: Django's ASGI handler would first read
    a synchronous iterator (FileResponse) wholly into memory."""
    try:
        while limit > 0 and (data := await asyncio.to_thread(handle.read, min(block, limit))):
            limit -= len(data)
            yield data
    finally:
        await asyncio.to_thread(handle.close)


def error(code: str, detail: str, status: int = 400, **extra: Any) -> JsonResponse:
    return JsonResponse({"error": code, "detail": detail, **extra}, status=status)


def api(methods: tuple[str, ...]) -> Callable[[View], View]:
    """JSON endpoint for a signed-in user (the second factor is enforced by middleware)."""

    def decorate(view: View) -> View:
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if request.method not in methods:
                return error("method_not_allowed", f"Use {' or '.join(methods)}.", 405)
            if not request.user.is_authenticated:
                return error("unauthenticated", "Sign in first.", 401)
            try:
                return view(request, *args, **kwargs)
            except ServiceError as failure:
                return JsonResponse(failure.as_dict(), status=failure.status)
            except CryptoError as failure:
                return error(failure.code, failure.message or failure.code)

        return wrapper

    return decorate


def user_of(request: HttpRequest) -> User:
    assert isinstance(request.user, User)  # noqa: S101 - the api decorator guarantees it
    return request.user


def json_body(request: HttpRequest) -> dict[str, Any]:
    if len(request.body) > MAX_JSON_BYTES:
        raise ServiceError("too_large", "The request body is too large.")
    try:
        data = json.loads(request.body or b"{}")
    except ValueError:
        raise ServiceError("malformed_json", "The body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise ServiceError("malformed_json", "The body must be a JSON object.")
    return data


def proven_device(request: HttpRequest) -> uuid.UUID:
    """The caller's device, named in the X-Collab-Device header."""
    return parse_uuid(request.META.get(DEVICE_HEADER, ""), "X-Collab-Device")


def parse_uuid(value: object, name: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise ServiceError("bad_field", f"{name} must be a UUID.") from None


def int_param(request: HttpRequest, name: str, default: int, low: int, high: int) -> int:
    raw = request.GET.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ServiceError("bad_field", f"{name} must be an integer.") from None
    if not low <= value <= high:
        raise ServiceError("bad_field", f"{name} must be between {low} and {high}.")
    return value
