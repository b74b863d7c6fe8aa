"""HTTP transport: session cookie, CSRF token, device proofs, JSON and streamed binary calls.

Every request made as a device (``X-Collab-Device``) carries ``X-Collab-Proof:
<time_ms>.<nonce>.<jti>.<sig>``: an Ed25519 signature by the device's signing key (DSK)
over the method, the full path with its query string exactly as sent, the exact body
bytes, a server nonce and a fresh one-time id (collab.crypto.devproof). The nonce comes
from ``GET /api/device-nonce`` once, then from the ``X-Collab-Nonce`` header of every
proven answer; a 401 that carries a fresh ``nonce`` (expired nonce, clock, replay) is
retried once with it and a new jti. A jti is never reused: every attempt signs anew.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import http.cookiejar
import json
import secrets
import string
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from collab.client.errors import UnreachableError
from collab.crypto.devproof import JTI_LEN, sign_http_proof
from collab.crypto.primitives import random_bytes

CHUNK = 64 * 1024
SESSION_COOKIES = ("sessionid", "__Host-sessionid")
CSRF_COOKIES = ("csrftoken", "__Host-csrftoken")
NONCE_PATH = "/api/device-nonce"
NONCE_HEADER = "X-Collab-Nonce"
PROOF_HEADER = "X-Collab-Proof"
BACKGROUND_HEADER = "X-Collab-Background"  # an automatic write (protocol §2 activity)
# The server honours a nonce for 300 s; fetch a new one well before that.
NONCE_MAX_AGE = 240.0
# 401 codes after which one retry with the fresh nonce the answer carries can succeed.
PROOF_RETRY = ("bad_device_proof", "replayed_device_proof", "device_proof_required")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class ApiError(Exception):
    """A refusal from the server: HTTP status, stable error code and detail."""

    def __init__(self, status: int, code: str, detail: str, body: dict[str, Any]) -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.status = status
        self.code = code
        self.detail = detail
        self.body = body


@dataclass
class Response:
    status: int
    body: dict[str, Any]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class HttpSession:
    def __init__(self, base_url: str, device_id: str | None = None,
                 device_key: bytes | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.device_id = device_id
        # The device's DSK seed: with it, every device request carries a proof.
        self.device_key = device_key
        self._nonce: str | None = None
        self._nonce_at = 0.0
        self._nonce_lock = threading.Lock()
        self.proofs_sent = 0
        self.cookies = http.cookiejar.CookieJar()
        self._opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.cookies), _NoRedirect()
        )
        # Django accepts a 32-character alphanumeric secret as cookie and header alike.
        alphabet = string.ascii_letters + string.digits
        self._own_csrf = "".join(secrets.choice(alphabet) for _ in range(32))
        self._set_cookie("csrftoken", self._own_csrf)

    @property
    def _csrf(self) -> str:
        """The current CSRF secret: Django rotates it at sign-in, so follow its cookie."""
        for cookie in self.cookies:
            if cookie.name in CSRF_COOKIES and cookie.value:
                return cookie.value
        return self._own_csrf

    @property
    def origin(self) -> str:
        parts = urllib.parse.urlsplit(self.base_url)
        return f"{parts.scheme}://{parts.netloc}"

    # --- cookies ------------------------------------------------------------------
    def _set_cookie(self, name: str, value: str) -> None:
        host = urllib.parse.urlsplit(self.base_url).hostname or "127.0.0.1"
        self.cookies.set_cookie(http.cookiejar.Cookie(
            0, name, value, None, False, host, False, False, "/", True, False, None, False,
            None, None, {},
        ))

    def use_session(self, session_id: str, name: str = "sessionid") -> None:
        self._set_cookie(name, session_id)

    @property
    def session_id(self) -> str | None:
        return next((c.value for c in self.cookies if c.name in SESSION_COOKIES), None)

    @property
    def session_cookie_name(self) -> str:
        return next((c.name for c in self.cookies if c.name in SESSION_COOKIES), "sessionid")

    def cookie_header(self) -> str:
        return "; ".join(f"{c.name}={c.value}" for c in self.cookies if c.value is not None)

    # --- requests -----------------------------------------------------------------
    @property
    def proving(self) -> bool:
        return bool(self.device_id and self.device_key)

    def _request(
        self, method: str, path: str, data: bytes | None, content_type: str | None,
        *, prove: bool = True,
    ) -> urllib.request.Request:
        if not path.startswith("/"):
            raise ValueError("path must start with /")
        request = urllib.request.Request(  # noqa: S310 - http(s) base URL only
            self.base_url + path, data=data, method=method
        )
        request.add_header("X-CSRFToken", self._csrf)
        request.add_header("Referer", self.base_url + "/")
        if content_type:
            request.add_header("Content-Type", content_type)
        if self.device_id:
            request.add_header("X-Collab-Device", self.device_id)
            if prove and self.device_key:
                request.add_header(PROOF_HEADER, self.proof(method, path, data or b""))
        return request

    # --- device proofs ------------------------------------------------------------
    def full_path(self, path: str) -> str:
        """The path the server sees (``request.get_full_path()``): any path of the base
        URL, then ``path`` with its query string, exactly as sent."""
        return urllib.parse.urlsplit(self.base_url).path.rstrip("/") + path

    def proof(self, method: str, path: str, body: bytes) -> str:
        """A fresh ``X-Collab-Proof`` for one request (a new jti every time)."""
        assert self.device_id and self.device_key  # noqa: S101 - callers check proving
        nonce = self._current_nonce()
        time_ms = int(time.time() * 1000)
        jti = random_bytes(JTI_LEN)
        sig = sign_http_proof(
            self.device_key, device_id=uuid.UUID(self.device_id), time_ms=time_ms,
            method=method.upper(), path=self.full_path(path), body=body, nonce=nonce, jti=jti,
        )
        self.proofs_sent += 1
        return f"{time_ms}.{nonce}.{_b64url(jti)}.{_b64url(sig)}"

    def _take_nonce(self, nonce: object) -> None:
        if isinstance(nonce, str) and 0 < len(nonce) <= 128 and nonce.isascii() \
                and "." not in nonce:
            with self._nonce_lock:
                self._nonce, self._nonce_at = nonce, time.monotonic()

    def _current_nonce(self) -> str:
        with self._nonce_lock:
            nonce, fresh = self._nonce, time.monotonic() - self._nonce_at < NONCE_MAX_AGE
        if nonce is not None and fresh:
            return nonce
        with self._open(self._request("GET", NONCE_PATH, None, None, prove=False)) as r:
            body = json.loads(r.read() or b"{}")
        self._take_nonce(body.get("nonce") if isinstance(body, dict) else None)
        with self._nonce_lock:
            if self._nonce is None:
                raise ApiError(502, "no_nonce", "the server gave no device nonce", {})
            return self._nonce

    def _exchange(
        self, method: str, path: str, data: bytes | None, content_type: str | None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """Open one request; a proof the server refused with a fresh nonce is signed
        again with it (new jti) and sent once more."""
        for attempt in range(2):
            request = self._request(method, path, data, content_type)
            for name, value in (headers or {}).items():
                request.add_header(name, value)
            try:
                return self._open(request)
            except ApiError as refused:
                fresh = refused.body.get("nonce")
                if attempt == 0 and self.proving and refused.status == 401 \
                        and refused.code in PROOF_RETRY and isinstance(fresh, str):
                    self._take_nonce(fresh)
                    continue
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _open(self, request: urllib.request.Request) -> Any:
        try:
            response = self._opener.open(request, timeout=60)
        except urllib.error.HTTPError as failure:
            if failure.headers is not None:
                self._take_nonce(failure.headers.get(NONCE_HEADER))
            if failure.code in (301, 302, 303):
                return failure
            raw = failure.read()
            try:
                body = json.loads(raw)
            except ValueError:
                detail = raw[:200].decode(errors="replace")
                body = {"error": f"http_{failure.code}", "detail": detail}
            if not isinstance(body, dict):
                body = {"error": f"http_{failure.code}", "detail": ""}
            raise ApiError(
                failure.code, str(body.get("error")), str(body.get("detail", "")), body
            ) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as failure:
            reason = getattr(failure, "reason", failure)
            raise UnreachableError(f"cannot reach {self.base_url}: {reason}") from None
        self._take_nonce(response.headers.get(NONCE_HEADER))
        return response

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """A connection lost while the answer is read is unreachable too (the request
        may or may not have taken effect: callers that retry ask the server first)."""
        try:
            yield
        except (OSError, http.client.HTTPException) as failure:
            raise UnreachableError(f"lost the connection to {self.base_url}: {failure}") \
                from None

    def form(self, path: str, fields: dict[str, str]) -> tuple[int, str]:
        """POST an HTML form (sign-in pages); returns status and redirect target."""
        data = urllib.parse.urlencode({**fields, "csrfmiddlewaretoken": self._csrf}).encode()
        try:
            response = self._open(
                self._request("POST", path, data, "application/x-www-form-urlencoded")
            )
        except ApiError as failure:
            return failure.status, ""
        return response.status, response.headers.get("Location", "")

    def json(self, method: str, path: str, body: dict[str, Any] | None = None, *,
             background: bool = False) -> Response:
        """``background``: a write the client makes by itself, not a person's action
        (``X-Collab-Background: 1``: it does not postpone automatic logoff)."""
        data = json.dumps(body).encode() if body is not None else None
        content_type = "application/json" if data else None
        headers = {BACKGROUND_HEADER: "1"} if background else None
        with self._reading(), self._exchange(method, path, data, content_type, headers) as r:
            return Response(r.status, json.loads(r.read() or b"{}"))

    def put_bytes(self, path: str, data: bytes) -> Response:
        with self._reading(), self._exchange("PUT", path, data, "application/octet-stream") as r:
            return Response(r.status, json.loads(r.read() or b"{}"))

    def stream(self, path: str, headers: dict[str, str] | None = None) -> Iterator[bytes]:
        with self._reading(), self._exchange("GET", path, None, None, headers) as r:
            while block := r.read(CHUNK):
                yield block
