"""Group commit under real processes: many sends stored per transaction must still give
every message one row, one gapless seq, one audit event, and an ack only once committed.

The senders pipeline (several sends on the wire before the first ack is read) on several
sockets at once, so a server that batches concurrent sends really has batches to store;
a server that does not batch must pass the same checks. Faults: a daphne process killed
(SIGKILL) mid-stream, and PostgreSQL restarted under the senders.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import uuid
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from websockets.exceptions import WebSocketException

from collab.audit.models import AuditAction, AuditEvent
from collab.cases.models import Message
from collab.client.sdk import CollabClient, Sent
from collab.crypto.envelope import Envelope
from collab.crypto.wire import b64d
from tests.faults.harness import (
    BOUND,
    Stack,
    Watcher,
    assert_audit_verifies,
    assert_no_lost_tasks,
    assert_watch_complete,
    compact,
    db,
    raw_socket,
    run,
    send_all,
    texts,
)
from tests.support.ws import RoomSocket

pytestmark = [pytest.mark.postgres, pytest.mark.faults, pytest.mark.e2e]

# Sends a socket has on the wire before it reads an ack.
WINDOW = 8


class PipelinedSender:
    """A member's messages, sealed up front with its verified case state, sent on a plain
    socket with up to ``WINDOW`` awaiting their acks. After a lost connection it opens a
    new one (the server may be a restarted process) and sends every envelope not yet
    acknowledged again, oldest first, unchanged (same client_msg_id and sender_seq): one
    already stored must answer duplicate with its original seq."""

    def __init__(self, client: CollabClient, case_id: uuid.UUID, url: str, intended: list[str],
                 on_ack: Callable[[], None] | None = None) -> None:
        self.client = client
        self.case_id = case_id
        self.url = url
        self.intended = intended
        self.on_ack = on_ack
        self.envelopes: list[Envelope] = []
        # Index of the envelope -> (connection it came on, the ack frame).
        self.acks: dict[int, tuple[int, dict[str, Any]]] = {}
        # Envelopes sent again on a later connection: unacknowledged when one was lost.
        self.resent: set[int] = set()
        self.connection = 0
        self.sock: RoomSocket | None = None
        self._sent_on: dict[int, int] = {}
        # Cleared: acks are left unread on the wire (the server goes on storing).
        self.reading = asyncio.Event()
        self.reading.set()

    @property
    def name(self) -> str:
        return self.intended[0].split("-")[0]

    @property
    def waiting(self) -> int:
        """Sent and not (yet) acknowledged."""
        return sum(1 for i in self._sent_on if i not in self.acks)

    async def open(self) -> PipelinedSender:
        state = await asyncio.to_thread(self.client.sync, self.case_id)
        self.envelopes = [state.seal({"text": text}) for text in self.intended]
        self.sock = await raw_socket(self.url, self.client, self.case_id)
        return self

    async def run(self, start: asyncio.Event) -> None:
        await start.wait()
        async with asyncio.timeout(BOUND):
            while True:
                try:
                    await self._stream()
                    return
                except WebSocketException:  # the connection was lost (ConnectionClosed)
                    await self._reconnect()

    async def _stream(self) -> None:
        assert self.sock is not None
        todo = collections.deque(i for i in range(len(self.envelopes)) if i not in self.acks)
        waiting: set[int] = set()
        while todo or waiting:
            while todo and len(waiting) < WINDOW:
                i = todo.popleft()
                if i in self._sent_on and self._sent_on[i] != self.connection:
                    self.resent.add(i)
                self._sent_on[i] = self.connection
                await self.sock.send({"type": "send", "ref": str(i),
                                      "envelope": self.envelopes[i].to_wire()})
                waiting.add(i)
            await self.reading.wait()
            frame = await self.sock.next("ack", "error", timeout=BOUND)
            if frame["type"] == "error" and frame.get("ref") is None:
                continue  # a notice before the server closes the socket: the close tells
            i = int(frame["ref"])
            assert frame["type"] == "ack", f"{self.name} message {i} refused: {frame}"
            assert b64d(frame["client_msg_id"], 16) == self.envelopes[i].header.client_msg_id
            waiting.discard(i)
            self.acks[i] = (self.connection, frame)
            if self.on_ack is not None:
                self.on_ack()

    async def _reconnect(self) -> None:
        if self.sock is not None:
            with suppress(Exception):
                await self.sock.close()
        self.sock = None
        while True:
            try:
                self.sock = await raw_socket(self.url, self.client, self.case_id)
                self.connection += 1
                return
            except (OSError, WebSocketException, TimeoutError):
                await asyncio.sleep(0.2)  # the server is not back yet: a retry's pause

    def sent(self) -> list[Sent]:
        """The acknowledgements, in the order the messages were sealed."""
        return [Sent(int(f["seq"]), int(f["epoch"]), bool(f["duplicate"]),
                     self.envelopes[i].header.client_msg_id)
                for i, (_, f) in sorted(self.acks.items())]

    async def close(self) -> None:
        """Close while reading: frames left unread (the room's last messages) would stall
        the close handshake until its timeout."""
        if self.sock is not None:
            drain = asyncio.create_task(self.sock.closed_with(timeout=BOUND))
            with suppress(Exception):
                await self.sock.close()
            await drain


def assert_stored_once(case_id: uuid.UUID, acks: list[Sent], ids: set[bytes]) -> None:
    """The case holds exactly the messages ``ids``: seqs gapless 1..N, one row per
    client_msg_id, each acknowledgement at its stored seq, and one message_stored audit
    event per row naming its seq (a batch that dropped an event, or audited one twice,
    fails here even if the chain itself verifies)."""
    rows = list(Message.objects.filter(case_id=case_id).order_by("seq")
                .values_list("seq", "client_msg_id"))
    seqs = [seq for seq, _ in rows]
    assert seqs == list(range(1, len(ids) + 1)), (
        f"seqs not gapless 1..{len(ids)}: {compact(seqs)} ({len(seqs)} rows)")
    stored = collections.Counter(bytes(cid) for _, cid in rows)
    assert [c.hex() for c, n in stored.items() if n > 1] == [], "a message stored twice"
    assert set(stored) == ids, (f"{len(ids - set(stored))} never stored, "
                                f"{len(set(stored) - ids)} stored unsent")
    by_id = {bytes(cid): seq for seq, cid in rows}
    wrong = [(ack.seq, by_id.get(ack.client_msg_id)) for ack in acks
             if by_id.get(ack.client_msg_id) != ack.seq]
    assert wrong == [], f"acked seq vs stored seq: {wrong[:8]}"
    targets = collections.Counter(
        AuditEvent.objects.filter(case_id=case_id, action=AuditAction.MESSAGE_STORED)
        .values_list("target", flat=True))
    expected = collections.Counter(f"message:{seq}" for seq in seqs)
    assert targets == expected, (f"message_stored events missing {expected - targets}, "
                                 f"extra {targets - expected}")


def transactions(case_id: uuid.UUID) -> tuple[int, int]:
    """(rows, transactions that stored them) of the case: rows written by one
    transaction share its xmin, so fewer transactions than rows means batches."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*), count(DISTINCT xmin::text) FROM "  # noqa: S608
                       f"{Message._meta.db_table} WHERE case_id = %s", [case_id])
        rows, xacts = cursor.fetchone()
    return int(rows), int(xacts)


def assert_sender_order(sender: PipelinedSender) -> None:
    """A sender's messages got increasing seqs in the order it sealed them."""
    seqs = [ack.seq for ack in sender.sent()]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), (
        f"{sender.name}: seqs out of send order: {seqs}")


def assert_watched_in_order(watcher: Watcher, last: int, intended: list[str]) -> None:
    """Every message 1..last once, in seq order, each intended text once."""
    assert watcher.seqs == list(range(1, last + 1)), f"got {compact(watcher.seqs)} in order " \
        f"{watcher.seqs[:20]}..."
    assert collections.Counter(m.text for m in watcher.got) == collections.Counter(intended)


PER_SOCKET = 40


def case_of(owner: CollabClient, *others: CollabClient) -> uuid.UUID:
    """A case opened by ``owner`` with ``others`` as members (each synced)."""
    case_id = owner.open_case(specialty="Dermatology")
    for other in others:
        owner.add_member(case_id, other.user_id)
        other.sync(case_id)
    return case_id


def test_concurrent_pipelined_senders_on_two_processes_store_each_message_once(
        stack: Stack, tmp_path: Path) -> None:
    one, two = stack.daphne(), stack.daphne()
    # Three senders, each in both cases, on both processes (six sockets in all): the
    # first on one in both cases, the second on two in both, the third on one in the
    # first case and on two in the second. In each case a watcher on each process.
    senders_at = [(one, two, one), (one, two, two)]
    watchers_at = [(one, two), (two, one)]
    sending = [stack.member(url, f"s{k}", tmp_path, specialty="Dermatology")
               for k, url in enumerate((one.url, two.url, one.url))]
    cases = []
    for c in range(2):
        watching = [stack.member(server.url, f"w{c}{k}", tmp_path, specialty="Dermatology")
                    for k, server in enumerate(watchers_at[c])]
        case_id = case_of(sending[0], *sending[1:], *watching)
        senders = [PipelinedSender(client, case_id, server.url,
                                   texts(f"c{c}s{k}", PER_SOCKET))
                   for k, (client, server) in enumerate(zip(sending, senders_at[c], strict=True))]
        cases.append((case_id, senders, watching))

    async def scenario() -> list[list[Watcher]]:
        watchers = [[Watcher(client, case_id) for client in clients]
                    for case_id, _, clients in cases]
        await watchers[0][0].until(
            lambda: all(w.connected for w in itertools.chain(*watchers)), "the watches connected")
        senders = [s for _, case_senders, _ in cases for s in case_senders]
        for sender in senders:
            await sender.open()
        start = asyncio.Event()
        running = [asyncio.create_task(sender.run(start)) for sender in senders]
        start.set()  # all at once: none waits for another's acks
        await asyncio.gather(*running)
        for sender in senders:
            await sender.close()
        for (_, case_senders, _), case_watchers in zip(cases, watchers, strict=True):
            last = sum(len(s.intended) for s in case_senders)
            for watcher in case_watchers:
                await watcher.until_seqs(last, "every message of the case was watched")
                await watcher.stop()
        return watchers

    watchers = run(scenario())
    # Not asserted (a server that does not batch passes too): how much it batched.
    print("rows, transactions per case:", [transactions(case_id) for case_id, _, _ in cases])
    for (case_id, senders, _), case_watchers in zip(cases, watchers, strict=True):
        acks = [ack for s in senders for ack in s.sent()]
        assert len(acks) == sum(len(s.intended) for s in senders)
        assert not any(ack.duplicate for ack in acks), "a first send answered duplicate"
        assert {s.connection for s in senders} == {0}, "a sender's connection was lost"
        assert_stored_once(case_id, acks, {e.header.client_msg_id for s in senders
                                           for e in s.envelopes})
        for sender in senders:
            assert_sender_order(sender)
        intended = [t for s in senders for t in s.intended]
        for watcher in case_watchers:
            assert_watched_in_order(watcher, len(acks), intended)
    assert_no_lost_tasks(stack)
    assert_audit_verifies()


# Acknowledgements (over all pipelined senders) after which they stop reading acks.
KILL_AFTER = 30


def test_crash_between_commit_and_seal_loses_no_acked_message_and_the_chain_verifies(
        stack: Stack, tmp_path: Path) -> None:
    """The "crash between commit and seal" scenario: the daphne process holding the
    senders is SIGKILLed while pipelined sends are in flight, at a moment when at least one
    message is committed and its ack not yet read by its sender (the senders stop reading
    acks and the kill waits until the database holds more of their messages than they have
    acks for), and a new process is started on the same database. The audit chain is
    sealed in the same transaction as the messages of a batch, so the crash leaves a batch
    either wholly stored with its sealed events or not at all: on restart, with no repair
    step, the chain verifies and has exactly one message_stored event per message. Every
    message acked before the crash keeps its acked seq; the senders send whatever they had
    no ack for again with the same client_msg_id (pipelined plain senders, and an SDK
    sender whose outbox does it by itself), and each is stored exactly once: a retry of a
    stored one answers duplicate with the original seq."""
    one, two = stack.daphne(), stack.daphne()
    # The SDK sender and three pipelined senders on the process that dies; a watcher on
    # the one that stays.
    case_id, (pcp, *plain_members, watching) = stack.room(
        tmp_path, one.url, one.url, one.url, one.url, two.url)
    held = asyncio.Event()
    senders: list[PipelinedSender] = []

    def on_ack() -> None:
        if not held.is_set() and sum(len(s.acks) for s in senders) >= KILL_AFTER:
            for sender in senders:
                sender.reading.clear()
            held.set()

    senders.extend(PipelinedSender(member, case_id, one.url, texts(f"p{k}", PER_SOCKET),
                                   on_ack=on_ack)
                   for k, member in enumerate(plain_members))
    devices = [member.device.device_id for member in plain_members]
    sdk_intended = texts("sdk", 20)
    sdk_sent: list[Sent] = []
    retries: list[str] = []
    at_kill: dict[str, Any] = {}

    def stored_by_senders() -> int:
        return Message.objects.filter(case_id=case_id, sender_device_id__in=devices).count()

    async def crash() -> None:
        """Kill once a sender's message is committed without its ack read, then restart."""
        await held.wait()

        def acked() -> int:  # soon constant: each sender reads at most one more ack
            return sum(len(s.acks) for s in senders)

        async with asyncio.timeout(BOUND):
            while (stored := await db(stored_by_senders)) <= acked():
                await asyncio.sleep(0.02)  # polling the database for that moment
        at_kill.update(acked=acked(), stored=stored, waiting=[s.waiting for s in senders])
        one.kill()  # SIGKILL: whatever the process was doing (a batch, an ack) stops
        for sender in senders:
            sender.reading.set()
        await asyncio.to_thread(one.start)  # a new process on the same database and port

    async def scenario() -> Watcher:
        watcher = Watcher(watching, case_id)
        await watcher.until(lambda: watcher.connected, "the watch connected")
        for sender in senders:
            await sender.open()
        room = await pcp.connect(case_id)
        start = asyncio.Event()
        running = [asyncio.create_task(sender.run(start)) for sender in senders]

        async def sdk() -> None:
            await start.wait()
            await send_all(pcp, case_id, sdk_intended, sdk_sent, room=room, retries=retries)

        running += [asyncio.create_task(sdk()), asyncio.create_task(crash())]
        start.set()
        await asyncio.gather(*running)
        # Sent once more after everything: each answers duplicate at its first seq.
        for sender in senders:
            assert sender.sock is not None
            again = await sender.sock.send_envelope(sender.envelopes[0], ref="again")
            first = sender.acks[0][1]
            assert (again["type"], again.get("duplicate"), again.get("seq")) == (
                "ack", True, first["seq"]), (again, first)
            await sender.close()
        await room.close()
        last = sum(len(s.intended) for s in senders) + len(sdk_intended)
        await watcher.until_seqs(last, "the watch on the surviving process")
        await watcher.stop()
        return watcher

    watcher = run(scenario())
    resent = sum(len(s.resent) for s in senders)
    duplicates = sum(1 for s in senders for _, f in s.acks.values() if f["duplicate"])
    print(f"at the kill: {at_kill}; sent again: {resent}, of which already stored "
          f"(duplicate): {duplicates}; SDK app retries: {retries}; rows, transactions: "
          f"{transactions(case_id)}")
    assert at_kill, "the server was never killed: the scenario did not happen"
    assert all(s.connection >= 1 for s in senders), "a sender never lost its connection"
    for sender in senders:
        # Only a message sent again can answer duplicate: nothing acked was sent twice.
        assert all(i in sender.resent for i, (_, f) in sender.acks.items() if f["duplicate"])
        assert_sender_order(sender)
    acks = [ack for s in senders for ack in s.sent()] + sdk_sent
    assert len(sdk_sent) == len(sdk_intended)
    ids = {e.header.client_msg_id for s in senders for e in s.envelopes}
    ids |= {ack.client_msg_id for ack in sdk_sent}
    assert_stored_once(case_id, acks, ids)
    intended = [t for s in senders for t in s.intended] + sdk_intended
    assert_watched_in_order(watcher, len(ids), intended)
    assert_watch_complete(watcher, len(ids))
    assert_audit_verifies()


def test_postgres_restarted_while_batches_are_in_flight(stack: Stack,
                                                        tmp_path: Path) -> None:
    """PostgreSQL stops (fast: every session ended, open transactions rolled back) while
    four SDK senders keep sends in flight on one process, and comes back: a send whose
    batch failed is retried by the SDK with the same client_msg_id; nothing acked is lost
    and nothing is stored twice."""
    one, two = stack.daphne(), stack.daphne()
    case_id, (*sending, watching) = stack.room(tmp_path, one.url, one.url, one.url, one.url,
                                                two.url)
    per_sender = 15
    intended = {k: texts(f"pg{k}", per_sender) for k in range(len(sending))}
    sent: dict[int, list[Sent]] = {k: [] for k in intended}
    retries: list[str] = []
    outage: list[asyncio.Task[None]] = []

    async def stop_and_start() -> None:
        await asyncio.to_thread(stack.pg.stop, "fast")
        await asyncio.to_thread(stack.pg.start)

    def on_sent(_: int) -> None:
        if not outage and sum(len(s) for s in sent.values()) >= 12:
            outage.append(asyncio.create_task(stop_and_start()))

    async def scenario() -> Watcher:
        watcher = Watcher(watching, case_id)
        await watcher.until(lambda: watcher.connected, "the watch connected")
        rooms = [await client.connect(case_id) for client in sending]
        await asyncio.gather(*(
            send_all(client, case_id, intended[k], sent[k], room=rooms[k], on_sent=on_sent,
                     retries=retries)
            for k, client in enumerate(sending)))
        assert outage, "PostgreSQL was never restarted: the scenario did not happen"
        await outage[0]
        for room in rooms:
            await room.close()
        await watcher.until_seqs(per_sender * len(sending), "the watch after the restart")
        await watcher.stop()
        return watcher

    watcher = run(scenario())
    print(f"SDK app retries: {retries}")
    acks = [ack for k in sent for ack in sent[k]]
    assert all(len(sent[k]) == per_sender for k in sent)
    assert_stored_once(case_id, acks, {ack.client_msg_id for ack in acks})
    for k in sent:
        seqs = [ack.seq for ack in sent[k]]
        assert seqs == sorted(seqs), f"sender {k}: seqs out of send order: {seqs}"
    assert_watched_in_order(watcher, len(acks), [t for k in intended for t in intended[k]])
    assert_no_lost_tasks(stack)
    assert_audit_verifies()
