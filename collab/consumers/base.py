"""Base for every socket: frame limits, rate limit, session watchdog, session-end close."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase

from collab.accounts import policy
from collab.accounts.models import User
from collab.accounts.ws_auth import CLOSE_UNAUTHENTICATED, socket_verdict
from collab.realtime import session_group, user_group

# Application close codes must be 1000 or 3000-4999 (autobahn), so mirror HTTP statuses.
CLOSE_TOO_BIG = 4413
CLOSE_RATE_LIMITED = 4429
# Socket frames count as activity, but the session is written at most this often.
ACTIVITY_WRITE_SECONDS = 30.0


class FrameError(Exception):
    """A frame that is refused; the socket stays open unless ``close_code`` is set."""

    def __init__(self, code: str, message: str, close_code: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.close_code = close_code


class TokenBucket:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.capacity = float(burst)
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class AuthenticatedConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
    """Subclasses implement ``handle_<type>`` coroutines taking the parsed frame."""

    user: User
    activity_frames: frozenset[str] = frozenset()

    async def connect(self) -> None:
        self.user = self.scope["user"]
        self.session: SessionBase = self.scope["session"]
        self.bucket = TokenBucket(settings.WS_RATE_PER_SECOND, settings.WS_RATE_BURST)
        self.last_activity_write = time.monotonic()
        self.personal_groups = [user_group(self.user.pk)]
        if self.session.session_key:
            self.personal_groups.append(session_group(self.session.session_key))
        for group in self.personal_groups:
            await self.channel_layer.group_add(group, self.channel_name)
        if not await self.authorise():
            return
        await self.accept()
        self.watchdog = asyncio.ensure_future(self.watch_session())
        await self.on_open()

    async def authorise(self) -> bool:
        """Subclass hook: close with a code and return False to refuse."""
        return True

    async def on_open(self) -> None:
        """Subclass hook run after accept."""

    async def disconnect(self, code: int) -> None:
        watchdog = getattr(self, "watchdog", None)
        if watchdog is not None:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
        for group in getattr(self, "personal_groups", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def watch_session(self) -> None:
        while True:
            await asyncio.sleep(settings.SESSION_CHECK_SECONDS)
            if not await database_sync_to_async(self._session_still_valid)():
                await self.send_error("session_ended", "Your session has ended.")
                await self.close(code=CLOSE_UNAUTHENTICATED)
                return

    def _session_still_valid(self) -> bool:
        key = self.session.session_key
        if not key or not self.session.exists(key):
            return False
        fresh = self.session.__class__(session_key=key)
        return socket_verdict(self.user, fresh) is None

    async def session_ended(self, event: dict[str, Any]) -> None:
        await self.send_error("session_ended", "Your session has ended.")
        await self.close(code=CLOSE_UNAUTHENTICATED)

    async def notify(self, event: dict[str, Any]) -> None:
        """An in-app notification (collab.cases.services.notifications): id, kind, case."""
        await self.send_json(
            {"type": "notify", "id": event["id"], "kind": event["kind"], "case": event["case"]}
        )

    async def send_json(self, content: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(content, separators=(",", ":")))

    async def send_error(self, code: str, message: str, **extra: Any) -> None:
        await self.send_json({"type": "error", "code": code, "message": message, **extra})

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            frame = self.parse(text_data, bytes_data)
            handler = getattr(self, "handle_" + frame["type"].replace(".", "_"), None)
            if handler is None:
                raise FrameError("unknown_type", f"Unknown frame type {frame['type']!r}.")
            if frame["type"] in self.activity_frames:
                await self.note_activity()
            await handler(frame)
        except FrameError as error:
            extra = {"ref": frame_ref} if (frame_ref := _ref(text_data)) else {}
            await self.send_error(error.code, error.message, **extra)
            if error.close_code is not None:
                await self.close(code=error.close_code)

    def parse(self, text_data: str | None, bytes_data: bytes | None) -> dict[str, Any]:
        if bytes_data is not None:
            raise FrameError("binary_not_supported", "Frames are JSON text.")
        if text_data is None:
            raise FrameError("malformed_frame", "Empty frame.")
        if len(text_data.encode()) > settings.WS_MAX_FRAME_BYTES:
            raise FrameError("frame_too_large", "Frame exceeds the size limit.", CLOSE_TOO_BIG)
        if not self.bucket.take():
            raise FrameError("rate_limited", "Too many frames; slow down.", CLOSE_RATE_LIMITED)
        try:
            frame = json.loads(text_data)
        except ValueError:
            raise FrameError("malformed_json", "Frame is not valid JSON.") from None
        if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
            raise FrameError("malformed_frame", "Frame must be an object with a type.")
        return frame

    async def note_activity(self) -> None:
        now = time.monotonic()
        if now - self.last_activity_write < ACTIVITY_WRITE_SECONDS:
            return
        self.last_activity_write = now
        await database_sync_to_async(self._touch_session)()

    def _touch_session(self) -> None:
        key = self.session.session_key
        if not key:
            return
        fresh = self.session.__class__(session_key=key)
        if fresh.exists(key) and not policy.idle_expired(fresh):
            fresh[policy.LAST_ACTIVITY_KEY] = time.time()
            fresh.save()


def _ref(text_data: str | None) -> str | None:
    """Echo a client's frame reference in errors when it is cheap and safe to find."""
    if not text_data or len(text_data) > settings.WS_MAX_FRAME_BYTES:
        return None
    try:
        ref = json.loads(text_data).get("ref")
    except (ValueError, AttributeError):
        return None
    return ref if isinstance(ref, str) and len(ref) <= 64 else None
