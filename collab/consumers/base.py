"""Base for every socket: frame limits, rate limit, the session sweep's checks,
session-end close, and the outbound bound for clients that stop reading."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import Coroutine
from typing import Any

from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from channels.utils import await_many_dispatch
from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase
from django.db import DatabaseError, InterfaceError, OperationalError

from collab.accounts import live_sessions, policy
from collab.accounts.models import User
from collab.accounts.ws_auth import CLOSE_UNAVAILABLE
from collab.consumers import outbound, sweep
from collab.realtime import (
    LAYER,
    PUBLISH_TIMEOUT_SECONDS,
    group_join,
    open_channel,
    session_group,
    user_group,
)

log = logging.getLogger("collab.realtime")

# Application close codes must be 1000 or 3000-4999 (autobahn), so mirror HTTP statuses.
CLOSE_TOO_BIG = 4413
CLOSE_RATE_LIMITED = 4429
# CLOSE_UNAVAILABLE (4503, from ws_auth): the session cannot be checked (database
# unreachable): reconnect later. A channel layer that is down does not close sockets.
# More than WS_MAX_OUTBOUND_BYTES queued for a client that does not read: resume later.
CLOSE_TOO_SLOW = 4507
# Socket frames count as activity, but the session is written at most this often.
ACTIVITY_WRITE_SECONDS = 30.0


# Why the server closes a socket: (error code, message, close code).
Refusal = tuple[str, str, int]


class FrameError(Exception):
    """A frame that is refused; the socket stays open unless ``close_code`` is set."""

    def __init__(self, code: str, message: str, close_code: int | None = None,
                 **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.close_code = close_code
        self.extra = extra  # structured fields a client acts on (e.g. last_sender_seq)


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
    # When the sweep last found this socket allowed (time.monotonic()).
    last_checked = 0.0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()
        # Groups joined, and groups the channel layer could not take yet (joined when it
        # recovers: join_missing_groups).
        self.joined_groups: list[str] = []
        self.missing_groups: list[str] = []
        try:
            await self._run(scope, receive, send)
        finally:
            # Also when a handler crashed: nothing may go on checking a closed socket.
            self.stop_tasks()
            sweep.current().discard(self)

    async def _run(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """AsyncConsumer.__call__, but a channel layer that is down when the socket opens
        does not refuse it (HTTP 500): its own channel comes from open_channel."""
        self.scope = scope
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        self.base_send = send
        sources = [receive]
        if self.channel_layer is not None:
            self.channel_name = await open_channel(self.channel_layer)
            self.channel_receive = functools.partial(
                self.channel_layer.receive, self.channel_name
            )
            sources.append(self.channel_receive)
        with contextlib.suppress(StopConsumer):
            await await_many_dispatch(sources, self.dispatch)

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
        groups = [user_group(self.user.pk)]
        if self.session.session_key:
            groups.append(session_group(self.session.session_key))
        await self.join_groups(groups)
        try:
            if not await self.authorise():
                return
            await self.accept()
            sweep.current().add(self)
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

    async def join_groups(self, groups: list[str]) -> None:
        """Subscribe to groups. Groups the layer cannot take now (Redis down, or not
        answering within the publish timeout) are kept in missing_groups and the socket
        opens anyway: its frames are answered over the socket, and what it misses is
        covered by the session sweep (it also re-checks device and roster) and, once
        the layer recovers, by joining them and the resync hello."""
        for group in groups:
            if group in self.joined_groups or group in self.missing_groups:
                continue
            # Once the layer has failed this socket, do not wait on it again now.
            if not self.missing_groups and await group_join(
                self.channel_layer, group, self.channel_name
            ):
                self.joined_groups.append(group)
            else:
                self.missing_groups.append(group)
        if self.missing_groups:
            LAYER.register(self)  # layer_recovered joins them
            if LAYER.healthy:  # it recovered meanwhile: no resync will come for us
                await self.join_missing_groups()

    async def join_missing_groups(self) -> bool:
        """Join the groups the layer could not take; True once none is missing."""
        for group in list(self.missing_groups):
            if not await group_join(self.channel_layer, group, self.channel_name):
                return False
            self.missing_groups.remove(group)
            self.joined_groups.append(group)
        return True

    async def layer_recovered(self) -> None:
        """The channel layer works again (LAYER's probe): join what is missing."""
        if not self.closing:
            await self.join_missing_groups()

    async def authorise(self) -> bool:
        """Subclass hook: close with a code and return False to refuse."""
        return True

    async def on_open(self) -> None:
        """Subclass hook run after accept."""

    async def disconnect(self, code: int) -> None:
        # Never await a task of ours: a stored error must not stop the clean-up below.
        self.stop_tasks()
        sweep.current().discard(self)
        LAYER.unregister(self)
        # Missing ones too: the layer may hold this channel in its local group table.
        for group in getattr(self, "joined_groups", []) + getattr(self, "missing_groups", []):
            try:
                await asyncio.wait_for(self.channel_layer.group_discard(group, self.channel_name),
                                       PUBLISH_TIMEOUT_SECONDS)
            except Exception as error:  # the layer forgets us when it restarts
                LAYER.note_failure(error)

    def session_of(self) -> live_sessions.SessionOf:
        """This socket's session key and user id, as the sweep checks them."""
        return (self.session.session_key or "", self.user.pk)

    @classmethod
    def sweep_refusals(
        cls, sockets: list[AuthenticatedConsumer]
    ) -> dict[AuthenticatedConsumer, Refusal]:
        """In a thread, for the sweep: refusals beyond the session's, for many sockets of
        this kind whose sessions are still valid, in a fixed number of queries.
        Subclasses add their own (a case room: device and roster)."""
        return {}

    @classmethod
    def sweep_reads(
        cls, sockets: list[AuthenticatedConsumer]
    ) -> dict[AuthenticatedConsumer, Any]:
        """In a thread, for the sweep: what sockets of this kind that stay open read
        afresh each interval (an inbox: its user's cases), in a fixed number of queries;
        each socket gets its own in on_swept."""
        return {}

    async def on_swept(self, read: Any) -> None:
        """What sweep_reads read for this socket (subclasses act on it)."""

    def _still_allowed(self) -> Refusal | None:
        """This socket's checks now (in a thread), as the sweep makes them for all:
        None while the socket may stay open."""
        with sweep.dropping_broken_connection():
            return self.check_still_allowed()

    def check_still_allowed(self) -> Refusal | None:
        """Subclasses add their own checks (a case room: device and roster)."""
        session = self.session_of()
        if not session[0] or session not in live_sessions.sessions_still_valid([session]):
            return sweep.SESSION_ENDED
        return None

    async def session_ended(self, event: dict[str, Any]) -> None:
        await self.end(*sweep.SESSION_ENDED)

    async def end(self, code: str, message: str, close_code: int) -> None:
        """The last error frame and the close; later frames are dropped."""
        if self.closing:
            return
        self.closing = True
        self.stop_tasks_except_current()
        sweep.current().discard(self)  # nothing more to check
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

    async def handle_ping(self, frame: dict[str, Any]) -> None:
        """Liveness, on every socket: ``pong``, echoing the frame's ``ref`` like any answer."""
        ref = frame_ref(frame)
        await self.send_json({"type": "pong", **({"ref": ref} if ref else {})})

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
            extra = {"ref": echo} if (echo := _ref(text_data)) else {}
            await self.send_error(error.code, error.message, **error.extra, **extra)
            if error.close_code is not None:
                await self.close(code=error.close_code)
        except (OperationalError, InterfaceError) as error:
            # Nothing was stored (or the retry will say so): the client may send again.
            log.warning("frame failed, database unavailable: %r (cause %r)",
                        error, error.__cause__)
            extra = {"ref": echo} if (echo := _ref(text_data)) else {}
            await self.send_error("unavailable", "The server cannot reach its database "
                                  "now; try again.", **extra)
        except DatabaseError:
            # Not an outage (a constraint, bad data): a fault of ours, logged in full.
            log.exception("frame failed on a database error")
            extra = {"ref": echo} if (echo := _ref(text_data)) else {}
            await self.send_error("internal_error", "The server could not do that; "
                                  "try again.", **extra)

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


def frame_ref(frame: dict[str, Any]) -> str | None:
    """The frame's ``ref`` as every answer echoes it: a string of at most 64 characters,
    anything else is not echoed (the AsyncAPI description's ``Ref``)."""
    ref = frame.get("ref")
    return ref if isinstance(ref, str) and len(ref) <= 64 else None


def _ref(text_data: str | None) -> str | None:
    """Echo a client's frame reference in errors when it is cheap and safe to find."""
    if not text_data or len(text_data) > settings.WS_MAX_FRAME_BYTES:
        return None
    try:
        frame = json.loads(text_data)
    except (ValueError, RecursionError):
        return None
    return frame_ref(frame) if isinstance(frame, dict) else None


def _dumps(content: dict[str, Any]) -> str:
    return json.dumps(content, separators=(",", ":"))


def _task_done(task: asyncio.Task[Any]) -> None:
    # Retrieve (and log) any error so none is reported as "never retrieved".
    if not task.cancelled() and (error := task.exception()) is not None:
        log.error("socket task failed", exc_info=error)
