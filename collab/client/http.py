"""HTTP transport: session cookie, CSRF token, JSON and streamed binary calls."""

from __future__ import annotations

import http.cookiejar
import json
import secrets
import string
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from collab.client.errors import UnreachableError

CHUNK = 64 * 1024
SESSION_COOKIES = ("sessionid", "__Host-sessionid")
CSRF_COOKIES = ("csrftoken", "__Host-csrftoken")


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
    def __init__(self, base_url: str, device_id: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.device_id = device_id
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
    def _request(
        self, method: str, path: str, data: bytes | None, content_type: str | None
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
        return request

    def _open(self, request: urllib.request.Request) -> Any:
        try:
            return self._opener.open(request, timeout=60)
        except urllib.error.HTTPError as failure:
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
        except (urllib.error.URLError, OSError) as failure:
            reason = getattr(failure, "reason", failure)
            raise UnreachableError(f"cannot reach {self.base_url}: {reason}") from None

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

    def json(self, method: str, path: str, body: dict[str, Any] | None = None) -> Response:
        data = json.dumps(body).encode() if body is not None else None
        content_type = "application/json" if data else None
        with self._open(self._request(method, path, data, content_type)) as r:
            return Response(r.status, json.loads(r.read() or b"{}"))

    def put_bytes(self, path: str, data: bytes) -> Response:
        with self._open(self._request("PUT", path, data, "application/octet-stream")) as r:
            return Response(r.status, json.loads(r.read() or b"{}"))

    def stream(self, path: str, headers: dict[str, str] | None = None) -> Iterator[bytes]:
        request = self._request("GET", path, None, None)
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        with self._open(request) as r:
            while block := r.read(CHUNK):
                yield block
