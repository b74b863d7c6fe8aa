"""Thin JSON view plumbing: authentication, body parsing, error mapping."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import IO, Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.http.response import HttpResponseBase

from collab.accounts import proofs
from collab.accounts.models import Device, User
from collab.cases.access import access_device
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
