"""Thin JSON view plumbing: authentication, body parsing, error mapping."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import re
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from typing import IO, Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
from django.shortcuts import render
from django.views import defaults

from collab.accounts import proofs
from collab.accounts.models import Device, User
from collab.cases.access import access_device
from collab.cases.services.blobs import MAX_PART_BYTES
from collab.crypto.errors import CryptoError
from collab.errors import ServiceError
from collab.methods import method_not_allowed

DEVICE_HEADER = "HTTP_X_COLLAB_DEVICE"
# Deeper JSON is refused: no legitimate body nests this far, and the parser (and
# anything walking the result) would otherwise recurse until RecursionError.
MAX_JSON_DEPTH = 64
# Blob parts stream through their own bound (collab/cases/services/blobs.py).
_PART_PATH = re.compile(r"^/api/blobs/[^/]+/parts/\d+$")


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
                return method_not_allowed(methods)
            if not request.user.is_authenticated:
                return error("unauthenticated", "Sign in first.", 401)
            response: HttpResponseBase
            try:
                response = view(request, *args, **kwargs)
            except ServiceError as failure:
                response = JsonResponse(failure.as_dict(), status=failure.status)
            except CryptoError as failure:
                response = error(failure.code, failure.message or failure.code)
            if getattr(request, "collab_wants_nonce", False):
                response[proofs.NONCE_RESPONSE_HEADER] = proofs.nonce_issue()
            return response

        return wrapper

    return decorate


def user_of(request: HttpRequest) -> User:
    assert isinstance(request.user, User)  # noqa: S101 - the api decorator guarantees it
    return request.user


def _depth_exceeds(value: object, limit: int) -> bool:
    """Whether ``value`` nests containers deeper than ``limit`` (iterative: no recursion)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: list[object] = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def json_body(request: HttpRequest) -> dict[str, Any]:
    # request.body raises RequestDataTooBig past DATA_UPLOAD_MAX_MEMORY_SIZE (413).
    try:
        data = json.loads(request.body or b"{}")
    except (ValueError, RecursionError):
        raise ServiceError("malformed_json", "The body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise ServiceError("malformed_json", "The body must be a JSON object.")
    if _depth_exceeds(data, MAX_JSON_DEPTH):
        raise ServiceError("malformed_json", f"The body nests deeper than {MAX_JSON_DEPTH}.")
    return data


# --- failures outside the views: every /api/ answer is the JSON error body --------


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def body_too_large(limit: int) -> JsonResponse:
    return error(
        "body_too_large", f"The request body is over {limit} bytes.", 413, max_bytes=limit
    )


def body_limit(path: str) -> int:
    """The most a request body to ``path`` may hold."""
    if _PART_PATH.match(path):
        return MAX_PART_BYTES
    limit: int = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return limit


def _buffered_size(request: HttpRequest) -> int:
    """The body the ASGI handler already received (it is spooled before any middleware
    runs, so a chunked body without Content-Length is measured here)."""
    stream = getattr(request, "_stream", None)
    if stream is None or not getattr(stream, "seekable", lambda: False)():
        return 0
    here = stream.tell()
    size = int(stream.seek(0, 2))
    stream.seek(here)
    return size


def body_limit_middleware(get_response: Callable[[HttpRequest], HttpResponse]) -> Callable[
    [HttpRequest], HttpResponse
]:
    """Refuse an oversized body (413 ``body_too_large``) before any other middleware
    or view reads it: by its declared Content-Length, then by what was received."""

    def middleware(request: HttpRequest) -> HttpResponse:
        limit = body_limit(request.path)
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0
        if declared > limit or _buffered_size(request) > limit:
            if _is_api(request):
                return body_too_large(limit)
            return HttpResponse("Request body too large.", status=413, content_type="text/plain")
        return get_response(request)

    return middleware


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None = None,
    credentials: dict[str, Any] | None = None,
) -> HttpResponse:
    """django-axes' answer to a locked-out attempt (AXES_LOCKOUT_CALLABLE): the JSON
    error body under /api/ (re-authentication there counts like a sign-in), the lockout
    page elsewhere, as axes would render it."""
    from axes.helpers import get_client_username, get_cool_off, get_failure_limit

    if _is_api(request):
        return error("locked_out", "Too many failed attempts; try again later.", 429)
    context: dict[str, Any] = {
        "failure_limit": get_failure_limit(request, credentials),
        "username": get_client_username(request, credentials) or "",
    }
    cool_off = get_cool_off(request)
    if cool_off:
        context["cooloff_timedelta"] = cool_off
    return render(request, settings.AXES_LOCKOUT_TEMPLATE, context, status=429)


def handler400(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if isinstance(exception, RequestDataTooBig):
        limit = body_limit(request.path)
        if _is_api(request):
            return body_too_large(limit)
        return HttpResponse("Request body too large.", status=413, content_type="text/plain")
    if _is_api(request):
        return error("bad_request", "The request could not be understood.", 400)
    return defaults.bad_request(request, exception)  # type: ignore[arg-type]


def handler403(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        return error("forbidden", "Not allowed.", 403)
    return defaults.permission_denied(request, exception)  # type: ignore[arg-type]


def handler404(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        return error("not_found", "No such endpoint.", 404)
    return defaults.page_not_found(request, exception)


def handler500(request: HttpRequest) -> HttpResponse:
    """Called by Django while it handles the exception (which it has logged), so the
    exception is still ``sys.exc_info()``. The database being unreachable is 503
    ``unavailable`` (retry later); anything else is 500 ``internal_error``."""
    failure = sys.exc_info()[1]
    unavailable = isinstance(failure, OperationalError | InterfaceError)
    if not _is_api(request):
        return defaults.server_error(request)
    if unavailable:
        response = error("unavailable", "The service cannot answer now; retry shortly.", 503)
        response["Retry-After"] = "5"
        return response
    return error("internal_error", "The server failed to answer this request.", 500)


def _named_device(request: HttpRequest) -> tuple[Device, str | None]:
    """The caller's active device named in ``X-Collab-Device``, and the proof header."""
    request.collab_wants_nonce = True  # type: ignore[attr-defined]
    raw_device = request.META.get(DEVICE_HEADER)
    header = request.META.get(proofs.PROOF_HEADER)
    if raw_device is None and settings.DEVICE_PROOF_REQUIRED:
        raise proofs.proof_error(
            "device_proof_required", "Send X-Collab-Device and X-Collab-Proof."
        )
    device = access_device(user_of(request), parse_uuid(raw_device or "", "X-Collab-Device"))
    if header is None and settings.DEVICE_PROOF_REQUIRED:
        raise proofs.proof_error("device_proof_required", "Send X-Collab-Proof.")
    return device, header


def _prove(request: HttpRequest, device: Device, header: str, body: bytes,
           body_hash: bytes | None = None) -> None:
    proofs.http_proof_check(
        device=device,
        header=header,
        method=request.method or "GET",
        path=request.get_full_path(),
        body=body,
        body_hash=body_hash,
    )
    proofs.session_device_record(
        session_key=request.session.session_key, device_id=device.pk, proven=True
    )


def proven_device(request: HttpRequest) -> uuid.UUID:
    """The one device check for HTTP: the caller's active device named in
    ``X-Collab-Device``, proven by ``X-Collab-Proof`` (a signature by its DSK over this
    request, collab.accounts.proofs). A proof that is sent is always verified; a missing
    one is refused only while ``DEVICE_PROOF_REQUIRED`` is on. Records the session as
    one this device acted in, and marks the answer to carry a fresh ``X-Collab-Nonce``."""
    device, header = _named_device(request)
    if header is not None:
        _prove(request, device, header, request.body)
    device_id: uuid.UUID = device.pk
    return device_id


def optional_proven_device(request: HttpRequest) -> uuid.UUID | None:
    """For calls older clients make without a device (blob completion): None when no
    device is named and proofs are not required; otherwise ``proven_device``."""
    if DEVICE_HEADER not in request.META and not settings.DEVICE_PROOF_REQUIRED:
        return None
    return proven_device(request)


class StreamedBody:
    """A large request body (a blob part) read as a stream and hashed as it is read, so
    the server never holds it to check the device proof. ``verify`` reads what is left,
    then checks the proof over the hash; the service calls it before it commits, and
    the view before any refusal is answered."""

    def __init__(self, request: HttpRequest, device: Device | None, header: str | None) -> None:
        self._request, self._device, self._header = request, device, header
        self._hash = hashlib.sha512()
        self._verified = False

    def read(self, size: int = -1) -> bytes:
        data = self._request.read(size)
        self._hash.update(data)
        return data

    def verify(self) -> None:
        if self._verified:
            return
        while self.read(65536):
            pass
        if self._device is not None and self._header is not None:
            _prove(self._request, self._device, self._header, b"", self._hash.digest())
        self._verified = True


def proven_streamed_device(request: HttpRequest) -> tuple[uuid.UUID | None, StreamedBody]:
    """``optional_proven_device`` for a streamed body: the proof is checked by the
    returned body's ``verify`` once the body has been read."""
    if DEVICE_HEADER not in request.META and not settings.DEVICE_PROOF_REQUIRED:
        return None, StreamedBody(request, None, None)
    device, header = _named_device(request)
    device_id: uuid.UUID = device.pk
    return device_id, StreamedBody(request, device, header)


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
