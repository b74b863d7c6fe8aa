"""Channel-layer group names, after-commit publishing, and the layer's health.

The database is the source of truth; the channel layer is only a doorbell, rung
after the transaction that made the change has committed. A doorbell that cannot ring
(Redis down) must never undo or hide a stored change: publish failures are logged, the
process notes the outage, and when the layer works again every case-room socket this
process holds is told to catch up (a ``hello`` with ``resync: true``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
import weakref
from collections.abc import Sequence
from typing import Any, Protocol

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.db import transaction

try:
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError
except ImportError:  # pragma: no cover - the in-memory layer needs no redis
    RedisConnectionError = RedisTimeoutError = OSError  # type: ignore[assignment,misc]

log = logging.getLogger("collab.realtime")

# A publish that cannot reach the layer within this is abandoned (a partitioned Redis
# would otherwise hold the sender's acknowledgement hostage).
PUBLISH_TIMEOUT_SECONDS = 2.0
# How often each process checks the layer with a round trip through it (Redis only).
PROBE_SECONDS = 1.0
PROBE_PREFIX = "collab.probe."
# What an unreachable layer raises (builtin TimeoutError also covers a bound that ran out).
LAYER_ERRORS: tuple[type[BaseException], ...] = (
    OSError, RedisConnectionError, RedisTimeoutError,
)


class InMemoryLayer(InMemoryChannelLayer):  # type: ignore[misc]
    """channels' in-memory layer (the embedded default), its expiry sweep run at most
    once a second: upstream it walks every channel and group on every receive and
    group_send, so each delivery cost grew with the number of open sockets. Expiry is
    a minute; a sweep up to a second late changes nothing."""

    SWEEP_SECONDS = 1.0
    _swept = 0.0

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now - self._swept >= self.SWEEP_SECONDS:
            self._swept = now
            super()._clean_expired()


def session_group(session_key: str) -> str:
    # Hashed so the session key itself never travels through the channel layer.
    return "session." + hashlib.sha256(session_key.encode()).hexdigest()[:40]


def user_group(user_id: uuid.UUID) -> str:
    return f"user.{user_id.hex}"


def device_group(device_id: uuid.UUID) -> str:
    return f"device.{device_id.hex}"


def case_group(case_id: uuid.UUID) -> str:
    return f"case.{case_id.hex}"


def activity_group(case_id: uuid.UUID) -> str:
    """A case's content-free activity (new last_seq, status, roster users): joined by the
    inbox sockets of its members (collab.consumers.inbox), never by case rooms."""
    return f"activity.{case_id.hex}"


def inbox_group(user_id: uuid.UUID) -> str:
    """A user's inbox sockets only (a case they were added to); not every socket."""
    return f"inbox.{user_id.hex}"


class Resyncable(Protocol):
    async def layer_recovered(self) -> None: ...


class LayerWatch:
    """Process-local: is the channel layer working, and who to tell when it recovers."""

    def __init__(self) -> None:
        self.healthy = True
        self.sockets: weakref.WeakSet[Any] = weakref.WeakSet()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Task[None] | None = None
        self.recoveries = 0  # how many outages this process has seen end

    def register(self, socket: Resyncable) -> None:
        """A case-room socket of this process (held weakly; its disconnect unregisters)."""
        self.sockets.add(socket)
        self.loop = asyncio.get_running_loop()
        if _is_remote_layer():
            self._ensure_probe()

    def unregister(self, socket: Resyncable) -> None:
        self.sockets.discard(socket)

    def note_failure(self, error: BaseException) -> None:
        """Called on the event loop when a publish (or probe) fails."""
        if self.healthy:
            log.warning("channel layer unavailable: %r", error)
        self.healthy = False
        self._ensure_probe()

    def _ensure_probe(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self.loop is not None and loop is not self.loop:
            return  # a throwaway loop (async_to_sync outside the server): not ours to watch
        self.loop = loop
        if self.task is None or self.task.done():
            self.task = loop.create_task(self._probe_loop())

    async def _probe_loop(self) -> None:
        probe = _Probe()
        while True:
            ok = await probe.round_trip()
            if ok and not self.healthy:
                self.healthy = True
                self.recoveries += 1
                log.warning("channel layer available again; resyncing %d sockets",
                            len(self.sockets))
                await self._resync()
            elif not ok and self.healthy:
                self.healthy = False
            if self.healthy and not _is_remote_layer():
                return  # in-memory layer: nothing to watch once it works
            await asyncio.sleep(PROBE_SECONDS)

    async def _resync(self) -> None:
        sockets = list(self.sockets)
        results = await asyncio.gather(
            *(socket.layer_recovered() for socket in sockets), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                log.warning("resync hello failed: %r", result)


class _Probe:
    """A round trip through the layer: publish to a channel of our own and read it back.
    A publish alone would succeed while this process's subscriptions are still down."""

    def __init__(self) -> None:
        self.channel: str | None = None
        self.counter = 0

    async def round_trip(self) -> bool:
        layer = get_channel_layer()
        if layer is None:
            return True
        self.counter += 1
        try:
            if self.channel is None:
                self.channel = await self._new_channel(layer)
            await asyncio.wait_for(
                layer.send(self.channel, {"type": "probe", "n": self.counter}),
                PUBLISH_TIMEOUT_SECONDS,
            )
            async with asyncio.timeout(PUBLISH_TIMEOUT_SECONDS):
                while (await layer.receive(self.channel)).get("n") != self.counter:
                    pass  # a late answer to an earlier probe
            return True
        except Exception:  # any failure of the layer is an outage
            # A timed-out receive unsubscribes the channel: start over with a new one.
            self.channel = None
            return False


    @staticmethod
    async def _new_channel(layer: Any) -> str:
        known = set(getattr(layer, "channels", None) or ())
        try:
            return str(await asyncio.wait_for(layer.new_channel(PROBE_PREFIX),
                                              PUBLISH_TIMEOUT_SECONDS))
        except BaseException:
            # channels_redis registers the channel before subscribing: forget a probe
            # channel that never subscribed, or every second of an outage leaves one.
            table = getattr(layer, "channels", None)
            if isinstance(table, dict):
                for name in set(table) - known:
                    if PROBE_PREFIX in name:
                        table.pop(name, None)
            raise


def _is_remote_layer() -> bool:
    layer = get_channel_layer()
    return layer is not None and "redis" in type(layer).__module__


LAYER = LayerWatch()

_channel_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


async def open_channel(layer: Any, prefix: str = "specific.") -> str:
    """A consumer's own channel name. While the layer is down (or does not answer within
    PUBLISH_TIMEOUT_SECONDS) the outage is noted and the name is still returned:
    channels_redis's pub/sub layer registers a channel's local queue before subscribing,
    so group frames reach it once its groups are joined. Other errors propagate."""
    if not _is_remote_layer():
        return str(await layer.new_channel(prefix))
    loop = asyncio.get_running_loop()
    lock = _channel_locks.setdefault(loop, asyncio.Lock())
    async with lock:  # one at a time, so the name a failed subscribe left is ours alone
        known = set(getattr(layer, "channels", None) or ())
        try:
            return str(await asyncio.wait_for(layer.new_channel(prefix),
                                              PUBLISH_TIMEOUT_SECONDS))
        except LAYER_ERRORS as error:
            table = getattr(layer, "channels", None)
            fresh = [name for name in set(table or ()) - known if prefix in name]
            if len(fresh) != 1:
                raise
            LAYER.note_failure(error)
            return str(fresh[0])


async def group_join(layer: Any, group: str, channel: str) -> bool:
    """group_add bounded by PUBLISH_TIMEOUT_SECONDS; False (outage noted) when the layer
    cannot be reached. Other errors propagate."""
    try:
        await asyncio.wait_for(layer.group_add(group, channel), PUBLISH_TIMEOUT_SECONDS)
    except LAYER_ERRORS as error:
        LAYER.note_failure(error)
        return False
    return True


async def publish(group: str, event: dict[str, Any]) -> bool:
    """Ring a group; False (logged, outage noted) when the layer cannot be reached."""
    layer = get_channel_layer()
    if layer is None:
        return True
    try:
        await asyncio.wait_for(layer.group_send(group, event), PUBLISH_TIMEOUT_SECONDS)
    except Exception as error:  # a doorbell failure never undoes a change
        log.warning("publish to %s failed: %r", group.split(".")[0], error)
        LAYER.note_failure(error)
        return False
    return True


def publish_now(group: str, event: dict[str, Any]) -> None:
    try:
        async_to_sync(publish)(group, event)
    except Exception:  # the change is stored; a missed doorbell is caught up by resync
        log.exception("publish to %s failed", group.split(".")[0])


def publish_after_commit(group: str, event: dict[str, Any]) -> None:
    transaction.on_commit(lambda: publish_now(group, event))


async def publish_many(events: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """Ring several groups at once; each group's events keep their order."""
    by_group: dict[str, list[dict[str, Any]]] = {}
    for group, event in events:
        by_group.setdefault(group, []).append(event)

    async def ring(group: str, queue: list[dict[str, Any]]) -> None:
        for event in queue:
            await publish(group, event)

    await asyncio.gather(*(ring(group, queue) for group, queue in by_group.items()))


def publish_many_after_commit(events: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """The doorbells of one transaction (e.g. a stored batch, one event per case) in one
    hop to the event loop, concurrently, instead of one round trip after another."""
    pending = list(events)

    def ring() -> None:
        try:
            async_to_sync(publish_many)(pending)
        except Exception:  # the change is stored; a missed doorbell is caught up by resync
            log.exception("publish of %d events failed", len(pending))

    if pending:
        transaction.on_commit(ring)
