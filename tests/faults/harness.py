"""What every fault scenario needs: servers on the private services, SDK participants,
a watcher that records what it was given, and the checks that nothing was lost.

Waiting is on events (a message received, a watch ended, a socket closed) with a
generous bound that only turns a hang into a failure; nothing here sleeps to prove
that something did not happen.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import struct
import uuid
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

from django.contrib.sessions.models import Session
from django.core.management import call_command
from django.db import connection, connections

from collab.audit.models import AuditEvent
from collab.cases.models import Message
from collab.client.errors import AuthError, ClientError
from collab.client.room import Room, is_transient
from collab.client.sdk import CollabClient, Received, Sent
from tests.support.clients import new_member
from tests.support.live import ROOT, Daphne
from tests.support.services import OwnPostgres, OwnRedis
from tests.support.ws import RoomSocket, remember_device

LOG_DIR = ROOT / "test-artifacts"
# Bounds that turn a hang into a failure (never a measure of speed).
BOUND = 60.0
# The session sweep's period in the fault servers; the grace before 4503 is twice it.
CHECK_SECONDS = 1.0
T = TypeVar("T")


@contextmanager
def repointed(pg: OwnPostgres, name: str) -> Iterator[None]:
    """The default database connection (this process, every thread) on ``pg``."""
    settings_dict = connections["default"].settings_dict  # shared by every thread's wrapper
    saved = dict(settings_dict)
    connections.close_all()
    settings_dict.update(HOST="127.0.0.1", PORT=str(pg.port), NAME=name, USER="postgres",
                         PASSWORD="", CONN_MAX_AGE=0)
    try:
        yield
    finally:
        connections.close_all()
        settings_dict.clear()
        settings_dict.update(saved)


async def db(fn: Callable[[], T]) -> T:
    """An ORM call from async code, on a fresh connection (the database may have been
    restarted since the last one)."""

    def run() -> T:
        try:
            return fn()
        finally:
            connection.close()

    return await asyncio.to_thread(run)


class Stack:
    """The private PostgreSQL and Redis, and the daphne processes started on them."""

    def __init__(self, pg: OwnPostgres, redis: OwnRedis) -> None:
        self.pg = pg
        self.redis = redis
        self.servers: list[Daphne] = []
        self._log_from: dict[int, int] = {}

    def daphne(self, **env: str) -> Daphne:
        server = Daphne({
            "REDIS_URL": self.redis.url,
            "COLLAB_SESSION_CHECK_SECONDS": str(CHECK_SECONDS),
            # A busy room is not a flood: keep the per-connection rate limit out of the way.
            "COLLAB_WS_RATE_PER_SECOND": "1000",
            "COLLAB_WS_RATE_BURST": "2000",
            **env,
        })
        self.servers.append(server)
        log = LOG_DIR / f"daphne-{server.port}.log"
        self._log_from[server.port] = log.stat().st_size if log.exists() else 0
        return server.start()

    def stop_servers(self) -> None:
        for server in self.servers:
            server.stop()

    def logs(self) -> str:
        """What this test's servers logged (a reused port's file holds older runs too)."""
        out = []
        for server in self.servers:
            with (LOG_DIR / f"daphne-{server.port}.log").open("rb") as log:
                log.seek(self._log_from[server.port])
                out.append(log.read().decode(errors="replace"))
        return "".join(out)

    def name(self, base: str) -> str:
        """A username unique in the suite's database (every test shares it)."""
        return f"{base}{uuid.uuid4().hex[:6]}"

    def member(self, url: str, base: str, home: Path, specialty: str = "") -> CollabClient:
        client = new_member(url, self.name(base), home, specialty=specialty)
        remember_device(client.device.device_id, client.device.dsk_seed)
        return client

    def room(self, home: Path, owner_url: str, *urls: str) -> tuple[uuid.UUID, list[CollabClient]]:
        """A case opened by a member on ``owner_url`` with one more member per url."""
        owner = self.member(owner_url, "pcp", home)
        case_id = owner.open_case(specialty="Dermatology")
        members = [owner]
        for i, url in enumerate(urls):
            other = self.member(url, f"m{i}", home, specialty="Dermatology")
            owner.add_member(case_id, other.user_id)
            other.sync(case_id)
            members.append(other)
        return case_id, members


class Watcher:
    """``client.watch`` in a task: what it yielded, its notices, how it ended. With
    ``stall_after`` the app stops taking messages after that many until ``release``."""

    def __init__(self, client: CollabClient, case_id: uuid.UUID,
                 stall_after: int | None = None) -> None:
        self.client = client
        self.case_id = case_id
        self.got: list[Received] = []
        self.notices: list[tuple[str, dict[str, Any]]] = []
        self.ended: BaseException | None = None
        self.stall_after = stall_after
        self.released = asyncio.Event()
        if stall_after is None:
            self.released.set()
        self._tick = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    def _changed(self) -> None:
        self._tick.set()
        self._tick = asyncio.Event()

    def _notice(self, kind: str, detail: dict[str, Any]) -> None:
        self.notices.append((kind, detail))
        self._changed()

    async def _run(self) -> None:
        try:
            async for message in self.client.watch(self.case_id, after=0,
                                                   on_notice=self._notice):
                self.got.append(message)
                self._changed()
                if self.stall_after is not None and len(self.got) >= self.stall_after:
                    await self.released.wait()
        except asyncio.CancelledError:
            raise
        except BaseException as error:  # recorded: the test asserts on how it ended
            self.ended = error
            self._changed()

    @property
    def seqs(self) -> list[int]:
        return [m.seq for m in self.got]

    @property
    def connected(self) -> bool:
        return self.case_id in self.client.rooms

    async def until(self, condition: Callable[[], bool], what: str,
                    bound: float = BOUND) -> None:
        try:
            async with asyncio.timeout(bound):
                while not condition():
                    if self.ended is not None and not condition():
                        raise AssertionError(f"{what}: the watch ended with {self.ended!r}")
                    # Woken by the watch, or soon anyway for conditions outside it.
                    with suppress(TimeoutError):
                        await asyncio.wait_for(self._tick.wait(), 0.05)
        except TimeoutError:
            raise AssertionError(
                f"{what}: not within {bound:g} s (have seqs {compact(self.seqs)}, "
                f"notices {[k for k, _ in self.notices][-8:]}, ended {self.ended!r})"
            ) from None

    async def until_seqs(self, last: int, what: str, bound: float = BOUND) -> None:
        await self.until(lambda: bool(self.got) and max(self.seqs) >= last
                         and len(set(self.seqs)) >= last, what, bound)

    async def until_ended(self, what: str, bound: float = BOUND) -> BaseException:
        await self.until(lambda: self.ended is not None, what, bound)
        assert self.ended is not None
        return self.ended

    async def stop(self) -> None:
        self.task.cancel()
        with suppress(asyncio.CancelledError):
            await self.task


def compact(seqs: list[int]) -> str:
    """1-5,7,9-12: sequence numbers for failure messages."""
    out: list[str] = []
    for seq in sorted(set(seqs)):
        if out and "-" not in out[-1] and int(out[-1]) == seq - 1:
            out[-1] = f"{out[-1]}-{seq}"
        elif out and "-" in out[-1] and int(out[-1].split("-")[1]) == seq - 1:
            out[-1] = f"{out[-1].split('-')[0]}-{seq}"
        else:
            out.append(str(seq))
    return ",".join(out) or "none"


def run(scenario: Coroutine[Any, Any, T]) -> T:
    """Run a scenario; afterwards this thread's connection is a fresh one (the database
    may have been restarted under the old one)."""
    try:
        return asyncio.run(scenario)
    finally:
        connections.close_all()


# How often the app may retry a send_text after it raised a transient error.
APP_RETRIES = 5


async def send_all(client: CollabClient, case_id: uuid.UUID, texts: list[str],
                   sent: list[Sent], *, room: Room | None = None,
                   on_sent: Callable[[int], None] | None = None,
                   retries: list[str] | None = None) -> None:
    """The app: one ``send_text`` per message. The SDK retries over reconnects; when it
    still raises a transient error the message waits in its outbox and the error names
    it (``pending_id``); the app retries that one explicitly (``retry=``: the pending
    message, stored once; a plain send would be a new message). Each such retry is noted
    in ``retries``; anything else fails the scenario."""
    for i, text in enumerate(texts):
        retry: str | None = None
        for attempt in range(APP_RETRIES + 1):
            try:
                sent.append(await client.send_text(case_id, text, room=room, retry=retry))
                break
            except ClientError as error:
                retry = error.pending_id or retry  # None: nothing was sealed yet
                if not is_transient(error) or attempt == APP_RETRIES:
                    raise AssertionError(
                        f"send_text of message {i} gave up: {error!r}") from error
                if retries is not None:
                    retries.append(f"{i}: {error!r}")
                await asyncio.sleep(0.5)  # the app's own pause before trying again
        if on_sent is not None:
            on_sent(len(sent))


def texts(label: str, count: int, size: int = 0) -> list[str]:
    """Distinct message texts; ``size`` pads each to that many characters."""
    return [f"{label}-{i:03d}:".ljust(size, "x") for i in range(count)]


def assert_nothing_lost_or_duplicated(case_id: uuid.UUID, sent: list[Sent],
                                      intended: list[str], reader: CollabClient) -> None:
    """Seqs gapless; every acknowledged client_msg_id stored once, at its acked seq; each
    intended text stored exactly once (a retry that chose a new id would store it twice)."""
    rows = list(Message.objects.filter(case_id=case_id).order_by("seq")
                .values_list("seq", "client_msg_id"))
    seqs = [seq for seq, _ in rows]
    assert seqs == list(range(1, len(seqs) + 1)), f"seqs not gapless: {compact(seqs)}"
    stored = collections.Counter(bytes(cid) for _, cid in rows)
    assert all(n == 1 for n in stored.values())
    by_id = {bytes(cid): seq for seq, cid in rows}
    for ack in sent:
        assert by_id.get(bytes(ack.client_msg_id)) == ack.seq, f"acked {ack} not stored so"
    history = collections.Counter(m.text for m in reader.history(case_id))
    twice = [t[:12] for t, n in history.items() if n > 1]
    missing = [t[:12] for t in intended if t not in history]
    assert not twice, f"stored more than once: {twice}"
    assert not missing, f"never stored: {missing}"
    assert len(sent) == len(intended), "the app was not told every message was sent"


def assert_watch_complete(watcher: Watcher, last: int) -> None:
    """The watcher was given every seq 1..last exactly once."""
    counts = collections.Counter(watcher.seqs)
    assert [s for s, n in counts.items() if n > 1] == [], "a message was given twice"
    assert sorted(counts) == list(range(1, last + 1)), f"got {compact(watcher.seqs)}"


def assert_audit_verifies() -> None:
    call_command("audit_verify")


def assert_no_lost_tasks(stack: Stack) -> None:
    """No coroutine of a server died unobserved (the dead-watchdog symptom)."""
    logs = stack.logs()
    assert "Task exception was never retrieved" not in logs, "a server task died unobserved"


def end_session(client: CollabClient) -> None:
    """The session ends without the channel layer being told (as expiry or an operator
    would end it): only the socket's session watchdog can notice."""
    Session.objects.filter(session_key=client.state.session).delete()


async def session_ends(watcher: Watcher) -> None:
    """The watcher's session ends behind the channel layer's back; its socket closes and
    the watch stops with AuthError (it must not reconnect forever)."""
    await db(lambda: end_session(watcher.client))
    ended = await watcher.until_ended("the watch ended when its session did")
    assert isinstance(ended, AuthError), ended


def history_reads(device_id: uuid.UUID, case_id: uuid.UUID) -> list[tuple[int, int, int]]:
    """(from_seq, to_seq, count) of every history_read audited for the device."""
    rows = AuditEvent.objects.filter(action="history_read", device_id=device_id,
                                     case_id=case_id).order_by("seq").values_list("details",
                                                                                   flat=True)
    return [(int(d["from_seq"]), int(d["to_seq"]), int(d["count"])) for d in rows]


async def raw_socket(url: str, client: CollabClient, case_id: uuid.UUID) -> RoomSocket:
    """A plain proven socket on the client's session (to read close codes exactly)."""
    assert client.state.session is not None
    sock = await RoomSocket.open(url, client.state.session, case_id, client.device.device_id)
    hello = await sock.next("hello")
    assert hello["case"] == str(case_id)
    return sock


class PlainSender:
    """A member's messages sealed with its verified case state and sent on a plain
    socket, one ack at a time: a fast, simple sender for scenarios about the receivers
    (the SDK's own send path is what the outage scenarios exercise)."""

    def __init__(self, client: CollabClient, case_id: uuid.UUID) -> None:
        self.client = client
        self.case_id = case_id
        self.sock: RoomSocket | None = None

    async def open(self, url: str) -> PlainSender:
        self.state = await asyncio.to_thread(self.client.sync, self.case_id)
        self.sock = await raw_socket(url, self.client, self.case_id)
        return self

    async def send(self, text: str) -> Sent:
        assert self.sock is not None
        envelope = self.state.seal({"text": text})
        ack = await self.sock.send_envelope(envelope, ref="s")
        assert ack["type"] == "ack", ack
        return Sent(int(ack["seq"]), int(ack["epoch"]), bool(ack["duplicate"]),
                    envelope.header.client_msg_id)

    async def close(self) -> None:
        if self.sock is not None:
            await self.sock.close()


TCP_ESTABLISHED = 1
TCP_CLOSED = 7


def tcp_state(sock: socket.socket) -> int:
    """The kernel's TCP state of a socket (tcp_info.tcpi_state): whether the peer has
    cut it, readable without reading what the application has not yet consumed."""
    if sock.fileno() < 0:
        return TCP_CLOSED  # this side closed it already
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
    return int(struct.unpack("B", info[:1])[0])
