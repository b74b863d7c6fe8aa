"""Group commit for the sends of one process (one event loop).

While a batch is being stored, the sends that arrive queue; when it is done, everything
queued (up to BATCH_MAX) goes as the next batch, in one transaction
(``messages.message_send_batch``). One batch is in flight per process, so a busy process
stores many messages per commit and an idle one stores each at once. Every submitter
gets its own answer: its Ack, its ServiceError, or the batch's DatabaseError. Durability
is the service's: it returns only after the transaction has committed.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from channels.db import database_sync_to_async
from django.conf import settings

from collab.cases.services import messages
from collab.cases.services.messages import Ack, SendRequest
from collab.errors import ServiceError
from collab.loop_local import LoopLocal

log = logging.getLogger("collab.realtime")

# The most sends stored in one transaction (bounds its time and its locks).
BATCH_MAX = 256

Outcome = Ack | ServiceError
Store = Callable[[Sequence[SendRequest]], Awaitable[list[Outcome]]]


async def store_batch(requests: Sequence[SendRequest]) -> list[Outcome]:
    # Looked up per call, so that tests (and settings) see the current service.
    return await database_sync_to_async(  # type: ignore[no-any-return]
        messages.message_send_batch, thread_sensitive=settings.DB_SINGLE_WRITER
    )(requests)


@dataclass
class _Waiting:
    request: SendRequest
    future: asyncio.Future[Ack]


@dataclass
class SendPipeline:
    store: Store = store_batch
    batch_max: int = BATCH_MAX
    # Counters: how many batches were stored, and how many sends they held.
    batches: int = 0
    items: int = 0
    largest: int = 0
    queue: list[_Waiting] = field(default_factory=list)
    worker: asyncio.Task[None] | None = None

    async def submit(self, request: SendRequest) -> Ack:
        """Store one send with whatever else is waiting; its Ack once committed.
        Raises its ServiceError, or the DatabaseError that failed its batch."""
        loop = asyncio.get_running_loop()
        waiting = _Waiting(request, loop.create_future())
        self.queue.append(waiting)
        if self.worker is None or self.worker.done():
            # A context of its own: not the first submitter's (its socket may close).
            self.worker = loop.create_task(self._run(), context=contextvars.Context())
        # A cancelled submitter cancels only its own future: still queued, it is
        # dropped; already in flight, it is stored and its answer is discarded (a retry
        # by client_msg_id gets the same Ack).
        return await waiting.future

    async def _run(self) -> None:
        try:
            while self.queue:
                batch = [w for w in self.queue[: self.batch_max] if not w.future.done()]
                del self.queue[: self.batch_max]
                if batch:
                    await self._store(batch)
        except BaseException as error:  # cancelled (loop closing): nobody waits forever
            for waiting in self.queue:
                waiting.future.cancel()
            self.queue.clear()
            if not isinstance(error, asyncio.CancelledError):
                log.exception("send pipeline stopped")
            raise

    async def _store(self, batch: list[_Waiting]) -> None:
        self.batches += 1
        self.items += len(batch)
        self.largest = max(self.largest, len(batch))
        try:
            outcomes = await self.store([w.request for w in batch])
            if len(outcomes) != len(batch):
                raise RuntimeError(f"{len(outcomes)} outcomes for a batch of {len(batch)}")
        except asyncio.CancelledError:
            for waiting in batch:
                waiting.future.cancel()
            raise
        except Exception as error:  # the whole batch failed: each submitter hears why
            for waiting in batch:
                if not waiting.future.done():
                    waiting.future.set_exception(error)
            return
        for waiting, outcome in zip(batch, outcomes, strict=True):
            if waiting.future.done():
                continue
            if isinstance(outcome, ServiceError):
                waiting.future.set_exception(outcome)
            else:
                waiting.future.set_result(outcome)


_pipelines: LoopLocal[SendPipeline] = LoopLocal(SendPipeline)


def pipeline() -> SendPipeline:
    """This event loop's pipeline (one per process under daphne)."""
    return _pipelines.get()


async def submit(request: SendRequest) -> Ack:
    return await pipeline().submit(request)
