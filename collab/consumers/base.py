"""Base for every socket: frame limits, rate limit, session watchdog, session-end close,
and the outbound bound for clients that stop reading."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Coroutine
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase
from django.db import DatabaseError, connection

from collab.accounts import policy
from collab.accounts.models import User
from collab.accounts.ws_auth import CLOSE_UNAUTHENTICATED, CLOSE_UNAVAILABLE, socket_verdict
from collab.consumers import outbound
from collab.realtime import LAYER, session_group, user_group

log = logging.getLogger("collab.realtime")

# Application close codes must be 1000 or 3000-4999 (autobahn), so mirror HTTP statuses.
CLOSE_TOO_BIG = 4413
CLOSE_RATE_LIMITED = 4429
# CLOSE_UNAVAILABLE (4503, from ws_auth): the session cannot be checked (database or
# channel layer unreachable): reconnect later.
# More than WS_MAX_OUTBOUND_BYTES queued for a client that does not read: resume later.
CLOSE_TOO_SLOW = 4507
# Socket frames count as activity, but the session is written at most this often.
ACTIVITY_WRITE_SECONDS = 30.0


# Why the server closes a socket: (error code, message, close code).
Refusal = tuple[str, str, int]


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
    # Frames that are a person's action and postpone automatic logoff (never automatic
    # ones such as read receipts or resume).
    activity_frames: frozenset[str] = frozenset()
    # Set once the socket is being closed by the server: nothing more is written.
    closing = False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()
        try:
            await super().__call__(scope, receive, send)
        finally:
            # Also when a handler crashed: no watchdog may outlive its connection.
            self.stop_tasks()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """A background task of this connection, cancelled when it ends."""
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(_task_done)
        task.add_done_callback(self.tasks.discard)
        return task

    def stop_tasks(self) -> None:
        for task in list(getattr(self, "tasks", ())):
            task.cancel()

    async def connect(self) -> None:
        self.user = self.scope["user"]
        self.session: SessionBase = self.scope["session"]
        self.meter = self.scope.get(outbound.SCOPE_KEY)
        self.bucket = TokenBucket(settings.WS_RATE_PER_SECOND, settings.WS_RATE_BURST)
        self.last_activity_write = time.monotonic()
        self.personal_groups: list[str] = []
        groups = [user_group(self.user.pk)]
        if self.session.session_key:
            groups.append(session_group(self.session.session_key))
        if not await self.join_groups(groups):
            return
        try:
            if not await self.authorise():
                return
            await self.accept()
            self.watchdog = self.spawn(self.watch_session())
            await self.on_open()
        except DatabaseError as error:
            log.warning("socket open failed, database unavailable: %r", error)
            await self.accept()
            await self.end("unavailable", "The server cannot reach its database now; "
                           "reconnect later.", CLOSE_UNAVAILABLE)

    async def accept(self, subprotocol: str | None = None) -> None:
        """Idempotent: refusals accept first so that the close code reaches the client."""
        if not getattr(self, "accepted", False):
            self.accepted = True
            await super().accept(subprotocol)

    async def join_groups(self, groups: list[str]) -> bool:
        """Subscribe to groups; if the layer is down, close 4503 (a socket that cannot
        hear its session end must not stay open) and return False."""
        try:
            for group in groups:
                await self.channel_layer.group_add(group, self.channel_name)
                self.personal_groups.append(group)
        except Exception as error:  # any layer failure
            LAYER.note_failure(error)
            await self.accept()
            await self.end("unavailable", "The server cannot serve sockets now; retry.",
                           CLOSE_UNAVAILABLE)
            return False
        return True

    async def authorise(self) -> bool:
        """Subclass hook: close with a code and return False to refuse."""
        return True

    async def on_open(self) -> None:
        """Subclass hook run after accept."""

    async def disconnect(self, code: int) -> None:
        # Never await the watchdog: a stored error must not stop the clean-up below.
        self.stop_tasks()
        for group in getattr(self, "personal_groups", []):
            try:
                await self.channel_layer.group_discard(group, self.channel_name)
            except Exception as error:  # the layer forgets us when it restarts
                LAYER.note_failure(error)

    async def watch_session(self) -> None:
        """Every SESSION_CHECK_SECONDS: may the socket stay open (check_still_allowed)?
        A database that cannot answer is retried; past twice the interval unchecked,
        close 4503."""
        interval = settings.SESSION_CHECK_SECONDS
        last_checked = time.monotonic()
        try:
            while not self.closing:
                await asyncio.sleep(interval)
                try:
                    refusal = await database_sync_to_async(self._still_allowed)()
                except Exception as error:  # DatabaseError and friends
                    unchecked = time.monotonic() - last_checked
                    log.warning("session check failed (%.1fs unchecked): %r", unchecked, error)
                    if unchecked >= 2 * interval:
                        await self.end("unavailable", "The server cannot check your session "
                                       "now; reconnect.", CLOSE_UNAVAILABLE)
                        return
                    continue
                last_checked = time.monotonic()
                if refusal is not None:
                    await self.end(*refusal)
                    return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("session watchdog stopped")
            with contextlib.suppress(Exception):
                await self.end("unavailable", "Reconnect.", CLOSE_UNAVAILABLE)

    def _still_allowed(self) -> Refusal | None:
        """The watchdog's check (in a thread): None while the socket may stay open."""
        try:
            return self.check_still_allowed()
        except DatabaseError:
            # A broken connection must not be reused by the next check.
            with contextlib.suppress(Exception):
                connection.close()
            raise

    def check_still_allowed(self) -> Refusal | None:
        """Subclasses add their own checks (a case room: device and roster)."""
        if not self._session_still_valid():
            return ("session_ended", "Your session has ended.", CLOSE_UNAUTHENTICATED)
        return None

    def _session_still_valid(self) -> bool:
        key = self.session.session_key
        if not key or not self.session.exists(key):
            return False
        fresh = self.session.__class__(session_key=key)
        # The user row itself: a deactivated user's sockets close.
        user = User.objects.filter(pk=self.user.pk).first()
        return user is not None and socket_verdict(user, fresh) is None

    async def session_ended(self, event: dict[str, Any]) -> None:
        await self.end("session_ended", "Your session has ended.", CLOSE_UNAUTHENTICATED)

    async def end(self, code: str, message: str, close_code: int) -> None:
        """The last error frame and the close; later frames are dropped."""
        if self.closing:
            return
        self.closing = True
        self.stop_tasks_except_current()
        with contextlib.suppress(Exception):
            await self.send(text_data=_dumps({"type": "error", "code": code, "message": message}))
        await self.close(code=close_code)

    def stop_tasks_except_current(self) -> None:
        current = asyncio.current_task()
        for task in list(getattr(self, "tasks", ())):
            if task is not current:
                task.cancel()

    async def notify(self, event: dict[str, Any]) -> None:
        """An in-app notification (collab.cases.services.notifications): id, kind, case."""
        await self.send_json(
            {"type": "notify", "id": event["id"], "kind": event["kind"], "case": event["case"]}
        )

    async def send_json(self, content: dict[str, Any]) -> None:
        if self.closing:
            return
        await self.send(text_data=_dumps(content))
        await self.check_outbound()

    async def check_outbound(self) -> None:
        """Close 4507 once the client has more than WS_MAX_OUTBOUND_BYTES unread."""
        pending = self.meter() if self.meter is not None else None
        if pending is not None and pending > settings.WS_MAX_OUTBOUND_BYTES:
            log.info("socket too slow: %d bytes queued", pending)
            await self.end("too_slow", "You are not reading fast enough; reconnect and "
                           "resume from your last seq.", CLOSE_TOO_SLOW)

    async def send_error(self, code: str, message: str, **extra: Any) -> None:
        await self.send_json({"type": "error", "code": code, "message": message, **extra})

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.closing:
            return  # closed by the server (session ended, too slow): nothing more is done
        try:
            frame = self.parse(text_data, bytes_data)
            handler = getattr(self, "handle_" + frame["type"].replace(".", "_"), None)
            if handler is None:
                raise FrameError("unknown_type", f"Unknown frame type {frame['type']!r}.")
            if self.is_activity(frame):
                await self.note_activity()
            await handler(frame)
        except FrameError as error:
            extra = {"ref": frame_ref} if (frame_ref := _ref(text_data)) else {}
            await self.send_error(error.code, error.message, **extra)
            if error.close_code is not None:
                await self.close(code=error.close_code)
        except DatabaseError as error:
            # Nothing was stored (or the retry will say so): the client may send again.
            log.warning("frame failed, database unavailable: %r", error)
            extra = {"ref": frame_ref} if (frame_ref := _ref(text_data)) else {}
            await self.send_error("unavailable", "The server cannot reach its database "
                                  "now; try again.", **extra)

    def is_activity(self, frame: dict[str, Any]) -> bool:
        """Does this frame postpone automatic logoff? Subclasses refine per frame."""
        return frame["type"] in self.activity_frames

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
        except (ValueError, RecursionError):  # RecursionError: nesting too deep
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
        if fresh.exists(key) and not policy.idle_expired(fresh) and not (
            policy.lifetime_expired(fresh)
        ):
            fresh[policy.LAST_ACTIVITY_KEY] = time.time()
            fresh.save()


def _ref(text_data: str | None) -> str | None:
    """Echo a client's frame reference in errors when it is cheap and safe to find."""
    if not text_data or len(text_data) > settings.WS_MAX_FRAME_BYTES:
        return None
    try:
        ref = json.loads(text_data).get("ref")
    except (ValueError, AttributeError, RecursionError):
        return None
    return ref if isinstance(ref, str) and len(ref) <= 64 else None


def _dumps(content: dict[str, Any]) -> str:
    return json.dumps(content, separators=(",", ":"))


def _task_done(task: asyncio.Task[Any]) -> None:
    # Retrieve (and log) any error so none is reported as "never retrieved".
    if not task.cancelled() and (error := task.exception()) is not None:
        log.error("socket task failed", exc_info=error)
