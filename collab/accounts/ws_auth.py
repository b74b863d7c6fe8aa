"""Socket authentication: django-otp's HTTP middleware never runs for WebSockets.

Accept-then-close so the client sees a close code that says why:
4401 no (or an expired) session, 4403 second factor not passed.
"""

from __future__ import annotations

import logging
from typing import Any

from channels.db import database_sync_to_async

from collab.accounts import policy
from collab.accounts.models import User

security_log = logging.getLogger("collab.security")

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403

Scope = dict[str, Any]


def socket_verdict(user: Any, session: Any) -> int | None:
    """None when the socket may open, else the close code."""
    if not isinstance(user, User) or not user.is_active or session is None:
        return CLOSE_UNAUTHENTICATED
    if policy.idle_expired(session):
        return CLOSE_UNAUTHENTICATED
    if not policy.second_factor_satisfied(user, session):
        return CLOSE_FORBIDDEN
    return None


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
        user = scope.get("user")
        if user is not None and hasattr(user, "_wrapped"):
            # Resolve channels' lazy user outside the event loop.
            await database_sync_to_async(lambda: user.is_authenticated)()
            user = user._wrapped
        code = await database_sync_to_async(socket_verdict)(user, scope.get("session"))
        if code is not None:
            security_log.info("socket refused code=%s path=%s", code, scope.get("path"))
            return await reject(receive, send, code)
        scope["user"] = user
        return await self.inner(scope, receive, send)
