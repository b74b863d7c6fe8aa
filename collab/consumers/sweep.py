"""The session sweep: one task per process (per event loop) that, every
SESSION_CHECK_SECONDS, asks for all the process's open sockets at once whether each
may stay open, and closes those that may not.

It replaces a task and five or six queries per socket: 10,000 idle sockets cost one
thread hop and a few queries per SWEEP_CHUNK sockets an interval, and no task of their
own. What is checked is what a handshake checks (the session, the user, the second
factor; a case room adds its device and roster), so a change whose doorbell was lost
(channel layer down) still closes the socket within an interval. Kinds of socket may
also read something afresh for all their sockets at once (an inbox: its user's cases,
AuthenticatedConsumer.sweep_reads). A database that cannot
answer is retried each interval; a socket left unchecked for twice the interval closes
4503.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import DatabaseError, connection

from collab.accounts import live_sessions
from collab.accounts.ws_auth import CLOSE_UNAUTHENTICATED, CLOSE_UNAVAILABLE
from collab.loop_local import LoopLocal

if TYPE_CHECKING:
    from collab.consumers.base import AuthenticatedConsumer, Refusal

log = logging.getLogger("collab.realtime")

SESSION_ENDED: Refusal = ("session_ended", "Your session has ended.", CLOSE_UNAUTHENTICATED)
# Sockets checked per batch of queries: keeps every IN list well inside SQLite's limit
# on query parameters.
SWEEP_CHUNK = 500
TASK_NAME = "session-sweep"


class Sweep:
    """The open sockets of one event loop, and the task that checks them."""

    def __init__(self) -> None:
        self.sockets: set[AuthenticatedConsumer] = set()
        self.task: asyncio.Task[None] | None = None
        self.interval = 0.0
        # When the current tick began (or the task started): a socket that opens is
        # counted as checked then, so that none goes unchecked past twice the interval.
        self.last_tick = 0.0

    def add(self, socket: AuthenticatedConsumer) -> None:
        self.sockets.add(socket)
        interval = settings.SESSION_CHECK_SECONDS
        if self.task is None or self.task.done() or interval != self.interval:
            if self.task is not None:  # a changed setting counts from now
                self.task.cancel()
            self.interval = interval
            self.last_tick = time.monotonic()
            # A context of its own: the task outlives the socket that started it.
            self.task = asyncio.get_running_loop().create_task(
                self.run(interval), name=TASK_NAME, context=contextvars.Context()
            )
        socket.last_checked = self.last_tick

    def discard(self, socket: AuthenticatedConsumer) -> None:
        self.sockets.discard(socket)
        if not self.sockets and self.task is not None:  # no task while no socket is open
            self.task.cancel()
            self.task = None

    async def run(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.last_tick = time.monotonic()
            batch = [socket for socket in self.sockets if not socket.closing]
            # One trip to the database thread per chunk, so that handshakes and sends
            # go on between them.
            for start in range(0, len(batch), SWEEP_CHUNK):
                try:
                    await self.check(batch[start:start + SWEEP_CHUNK], interval)
                except Exception:  # a fault of ours: logged, the next tick tries again
                    log.exception("session sweep failed")

    async def check(self, batch: list[AuthenticatedConsumer], interval: float) -> None:
        tick = self.last_tick
        try:
            found, reads = await database_sync_to_async(sweep_once)(batch)
        except Exception as error:  # DatabaseError and friends
            log.warning("session sweep of %d sockets failed: %r", len(batch), error)
            for socket in self.still_open(batch):
                if tick - socket.last_checked >= 2 * interval:
                    socket.spawn(socket.end(
                        "unavailable", "The server cannot check your session now; "
                        "reconnect.", CLOSE_UNAVAILABLE))
            return
        for socket in self.still_open(batch):
            socket.last_checked = tick
            refusal = found.get(socket)
            if refusal is not None:
                socket.spawn(socket.end(*refusal))
            elif socket in reads:
                socket.spawn(socket.on_swept(reads[socket]))

    def still_open(self, batch: list[AuthenticatedConsumer]) -> list[AuthenticatedConsumer]:
        """Those of the batch that did not close while it was being checked."""
        return [s for s in batch if not s.closing and s in self.sockets]


Refusals = dict["AuthenticatedConsumer", "Refusal"]
Reads = dict["AuthenticatedConsumer", Any]


def sweep_once(sockets: Sequence[AuthenticatedConsumer]) -> tuple[Refusals, Reads]:
    """In a thread, for at most SWEEP_CHUNK sockets: the refusal of every socket that
    may not stay open, and what the others' kinds read afresh (sweep_reads)."""
    with dropping_broken_connection():
        return _sweep_chunk(sockets)


@contextlib.contextmanager
def dropping_broken_connection() -> Iterator[None]:
    """A check that fails on a database error closes this thread's connection, so the
    next check does not reuse a broken one."""
    try:
        yield
    except DatabaseError:
        with contextlib.suppress(Exception):
            connection.close()
        raise


def _sweep_chunk(sockets: Sequence[AuthenticatedConsumer]) -> tuple[Refusals, Reads]:
    valid = live_sessions.sessions_still_valid(
        s.session_of() for s in sockets if s.session.session_key
    )
    found: Refusals = {}
    by_kind: dict[type[AuthenticatedConsumer], list[AuthenticatedConsumer]] = {}
    for socket in sockets:
        if not socket.session.session_key or socket.session_of() not in valid:
            found[socket] = SESSION_ENDED
        else:
            by_kind.setdefault(type(socket), []).append(socket)
    reads: Reads = {}
    for kind, group in by_kind.items():  # a case room adds device and roster
        found.update(kind.sweep_refusals(group))
        reads.update(kind.sweep_reads([s for s in group if s not in found]))
    return found, reads


_SWEEPS: LoopLocal[Sweep] = LoopLocal(Sweep)


def current() -> Sweep:
    """The running event loop's sweep."""
    return _SWEEPS.get()


def sockets_open() -> Any:
    """The sockets the running loop's sweep watches (for tests and diagnostics)."""
    return frozenset(current().sockets)
