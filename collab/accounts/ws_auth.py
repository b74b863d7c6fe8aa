"""Socket authentication: django-otp's HTTP middleware never runs for WebSockets.

Accept-then-close so the client sees a close code that says why:
4401 no (or an expired) session, 4403 second factor not passed. A foreign ``Origin``
is refused at the handshake (HTTP 403) before any of that.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from channels.db import database_sync_to_async
from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.db import DatabaseError
from django.http.request import split_domain_port, validate_host

from collab.accounts import policy
from collab.accounts.models import User

security_log = logging.getLogger("collab.security")

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_UNAVAILABLE = 4503

Scope = dict[str, Any]


def socket_verdict(
    user: Any, session: Any, facts: policy.SecondFactorFacts | None = None
) -> int | None:
    """None when the socket may open (or stay open), else the close code. ``session``
    is a session store or its decoded data; ``facts`` as policy.second_factor_satisfied."""
    if not isinstance(user, User) or not user.is_active or session is None:
        return CLOSE_UNAUTHENTICATED
    if policy.idle_expired(session) or policy.lifetime_expired(session):
        return CLOSE_UNAUTHENTICATED
    if not policy.second_factor_satisfied(user, session, facts):
        return CLOSE_FORBIDDEN
    return None


def _scope_verdict(scope: Scope) -> tuple[Any, int | None]:
    """The scope's user (channels' lazy user resolved, outside the event loop) and
    socket_verdict for it."""
    user = scope.get("user")
    if user is not None and hasattr(user, "_wrapped"):
        user.is_authenticated  # noqa: B018 - resolves the lazy object
        user = user._wrapped
    return user, socket_verdict(user, scope.get("session"))


async def reject(receive: Any, send: Any, code: int) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": code})


class SecondFactorMiddleware:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> Any:
        if scope["type"] != "websocket":
            return await self.inner(scope, receive, send)
        try:
            # One trip to the sync thread per socket: the user and the verdict.
            user, code = await database_sync_to_async(_scope_verdict)(scope)
        except DatabaseError:
            # The session cannot be checked now: the client retries (not an HTTP 500).
            security_log.warning("socket refused: database unavailable")
            return await reject(receive, send, CLOSE_UNAVAILABLE)
        if code is not None:
            security_log.info("socket refused code=%s path=%s", code, scope.get("path"))
            return await reject(receive, send, code)
        scope["user"] = user
        return await self.inner(scope, receive, send)


# --- Origin ---------------------------------------------------------------------------

_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin_tuple(origin: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an origin, the port made explicit; None if malformed."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/"):
        return None
    return scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme]


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            try:
                return str(value.decode("latin1"))
            except UnicodeDecodeError:
                return None
    return None


def _socket_scheme(scope: Scope) -> str:
    """The scheme the browser used: behind the documented TLS proxy, the one it reports
    in the header Django trusts for HTTP too (SECURE_PROXY_SSL_HEADER)."""
    proxy = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy:
        name, secure_value = proxy
        header = name.removeprefix("HTTP_").lower().replace("_", "-").encode()
        if _header(scope, header) == secure_value:
            return "https"
    return "https" if scope.get("scheme") == "wss" else "http"


def origin_allowed(scope: Scope) -> bool:
    """Scheme, host and port of ``Origin`` must equal one of ``CSRF_TRUSTED_ORIGINS``
    or this socket's own origin (its scheme and an allowed ``Host``, port included)."""
    origin = _header(scope, b"origin")
    wanted = _origin_tuple(origin) if origin else None
    if wanted is None:
        return False
    trusted = {_origin_tuple(o) for o in settings.CSRF_TRUSTED_ORIGINS}
    if wanted in trusted:
        return True
    host = _header(scope, b"host")
    if not host:
        return False
    domain, _ = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return False
    return wanted == _origin_tuple(f"{_socket_scheme(scope)}://{host}")


class OriginMiddleware:
    """Refuses a socket whose Origin is not exactly an allowed origin (HTTP 403)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> Any:
        if scope["type"] == "websocket" and not origin_allowed(scope):
            security_log.info("socket refused: origin path=%s", scope.get("path"))
            return await WebsocketDenier()(scope, receive, send)
        return await self.inner(scope, receive, send)


class DatabaseGuard:
    """A database that fails before the socket is answered (channels' AuthMiddleware
    loads the session and user eagerly) closes 4503 instead of an HTTP 500, so clients
    know to retry. A failure after the answer is the consumer's to handle."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> Any:
        if scope["type"] != "websocket":
            return await self.inner(scope, receive, send)
        state = {"answered": False, "connect_taken": False}

        async def tracked_receive() -> Any:
            message = await receive()
            if message["type"] == "websocket.connect":
                state["connect_taken"] = True
            return message

        async def tracked_send(message: Any) -> None:
            state["answered"] = True
            await send(message)

        try:
            return await self.inner(scope, tracked_receive, tracked_send)
        except DatabaseError:
            if state["answered"]:
                raise
            security_log.warning("socket refused: database unavailable")
            if state["connect_taken"]:
                await send({"type": "websocket.accept"})
                await send({"type": "websocket.close", "code": CLOSE_UNAVAILABLE})
                return None
            return await reject(receive, send, CLOSE_UNAVAILABLE)
