"""Load driver shared by the throughput benchmarks (``bench_case_room``).

Two chats are driven with the same sockets, rooms and message sizes: the bare Channels
chat (``bare_asgi``: group broadcast, no checks, no storage) and the project's full path
(device proof at the handshake; per send the signature and every check, durable storage,
the audit event, fan-out). Everything runs on this box: daphne processes are
subprocesses, the client is this process, and its CPU competes with the servers'.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import websockets

if TYPE_CHECKING:
    from collab.client.case_state import CaseState

ROOT = Path(__file__).resolve().parents[2]
BARE_APP = "tests.bench.bare_asgi:application"
COLLAB_APP = "collab.asgi:application"
TEXT = "x" * 150  # ~200-byte frames on both paths
DRAIN_SECONDS = 3.0
# Closed loop: a sender whose answer has not come by then counts it lost and goes on (the
# bare chat drops group messages when a consumer's channel is full).
ANSWER_TIMEOUT = 10.0
RETRIED_HANDSHAKES: list[int] = []


def env_setup() -> str:
    """Fresh data dir; SQLite + in-memory layer unless DATABASE_URL / REDIS_URL are set.
    The per-socket rate limit is lifted (in this run's servers only): it is what is
    measured against, not a defence under test here."""
    data = tempfile.mkdtemp(prefix="collab-bench-")
    os.environ["COLLAB_DATA_DIR"] = data
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{data}/bench.sqlite3")
    if is_postgres():
        os.environ["DATABASE_URL"] = fresh_database(os.environ["DATABASE_URL"])
    os.environ["COLLAB_WS_RATE_PER_SECOND"] = "100000"
    os.environ["COLLAB_WS_RATE_BURST"] = "100000"
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "collab.settings")
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return data


def fresh_database(url: str) -> str:
    """An empty database of this run beside the one named (dropped at exit), so other runs
    on the same server (their rows, their audit head lock) do not share it."""
    import atexit

    import psycopg

    name = f"collab_bench_{os.getpid()}"
    base, _, _ = url.rpartition("/")

    def admin(sql: str) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql)  # our own fixed name

    admin(f"DROP DATABASE IF EXISTS {name}")
    admin(f"CREATE DATABASE {name}")
    atexit.register(admin, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    return f"{base}/{name}"


def is_postgres() -> bool:
    return "postgres" in os.environ.get("DATABASE_URL", "")


def setup_name() -> str:
    db = "PostgreSQL" if is_postgres() else "SQLite"
    layer = "Redis pub/sub" if os.environ.get("REDIS_URL") else "in-memory layer"
    return f"{db} + {layer}"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- set-up ---------------------------------------------------------------------------


@dataclass
class Seat:
    """One socket's member: its room, session, device and case state (to seal more)."""

    room: int
    case_id: str
    device_id: str
    session: str
    state: CaseState
    # Pre-sealed send frames, in sender_seq order (the server refuses a lower one).
    sealed: deque[str] = field(default_factory=deque)

    def collab_frame(self, ref: int) -> str:
        envelope = self.state.seal({"text": TEXT}).to_wire()
        return json.dumps({"type": "send", "ref": ref, "envelope": envelope})

    def bare_frame(self, ref: int) -> str:
        return json.dumps(
            {"type": "send", "ref": ref, "pad": TEXT, "r": self.room, "u": self.device_id}
        )


def prepare(rooms: int, size: int, label: str = "bench") -> list[Seat]:
    """Users, devices, sessions and cases through the real services (``build_room``)."""
    from tests.support.rooms import build_room

    seats = []
    for r in range(rooms):
        for m in build_room(size, label=f"{label}{r}-"):
            seats.append(
                Seat(r, str(m.state.case_id), str(m.device.device_id), m.session, m.state)
            )
    return seats


def preseal(seats: list[Seat], per_seat: int) -> float:
    """Seal envelopes before the clock starts (about 0.2 ms each), so the client's own
    sealing stays out of the measured run; returns the seconds it took."""
    t0 = time.monotonic()
    for seat in seats:
        seat.sealed.extend(seat.collab_frame(0) for _ in range(per_seat))
    return time.monotonic() - t0


# --- servers --------------------------------------------------------------------------


@dataclass
class Servers:
    bases: list[str]
    pids: list[int]

    def cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids)

    async def settle(self, limit: float = 20.0) -> None:
        """Wait until the servers are idle (under 10% of a core), so a backlog left by
        the previous run does not eat into this one."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            before = self.cpu()
            await asyncio.sleep(0.5)
            if self.cpu() - before < 0.05:
                return


@contextmanager
def serve(app: str, processes: int = 1) -> Iterator[Servers]:
    """``processes`` daphne processes of ``app`` on free ports, with this run's env."""
    from tests.support.live import free_port, wait_for_port

    data = os.environ["COLLAB_DATA_DIR"]
    procs: list[subprocess.Popen[bytes]] = []
    bases = []
    try:
        for _ in range(processes):
            port = free_port()
            log = Path(data, f"daphne-{port}.log").open("ab")  # noqa: SIM115
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), app],
                    cwd=ROOT,
                    env=dict(os.environ),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            bases.append(f"127.0.0.1:{port}")
            wait_for_port(port, procs[-1])
        yield Servers(bases, [p.pid for p in procs])
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


# --- sockets --------------------------------------------------------------------------


async def open_sockets(
    seats: list[Seat], servers: Servers, full: bool
) -> list[websockets.ClientConnection]:
    """One socket per seat, seat i on server i mod n (so a room spans every process);
    on the full path each proves its device and waits for hello."""
    from tests.support.ws import prove_frame, room_path

    gate = asyncio.Semaphore(20)

    async def one(i: int, seat: Seat) -> websockets.ClientConnection:
        base = servers.bases[i % len(servers.bases)]
        headers = {"Origin": f"http://{base}"}
        if full:
            url = f"ws://{base}{room_path(seat.case_id, seat.device_id)}"
            headers["Cookie"] = f"sessionid={seat.session}"
        else:
            # The pid keeps rooms apart from other runs on the same Redis (pub/sub has no db).
            url = f"ws://{base}/bare/{os.getpid()}r{seat.room}/"
        async with gate:
            for attempt in range(5):
                try:
                    ws = await websockets.connect(
                        url, additional_headers=headers, max_size=None, open_timeout=60
                    )
                    break
                except (OSError, websockets.InvalidHandshake):
                    # Seen on this box when it is overloaded: the server closes a socket
                    # before its HTTP answer. Counted and retried; not part of the figures.
                    if attempt == 4:
                        raise
                    RETRIED_HANDSHAKES.append(i)
                    await asyncio.sleep(0.5)
            if full:
                first = json.loads(await ws.recv())
                if first["type"] == "challenge":
                    await ws.send(json.dumps(prove_frame(first, seat.case_id, seat.device_id)))
                    first = json.loads(await ws.recv())
                assert first["type"] == "hello", first
        return ws

    return list(await asyncio.gather(*(one(i, s) for i, s in enumerate(seats))))


def _is_delivery(msg: str | bytes) -> bool:
    # Message frames are counted without parsing them (the client shares the cores).
    return isinstance(msg, str) and '"message"' in msg[:24]


# --- results --------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    sockets: int = 0
    deliveries: int = 0
    sent: int = 0
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    server_cpu: float = 0.0
    unanswered_at_end: int = 0  # open loop: sent, not yet answered when sending stopped
    unanswered_after_drain: int = 0
    sealed_in_run: int = 0  # full path: envelopes sealed during the run (pre-sealed ran out)
    lost: int = 0  # closed loop: answers that never came within ANSWER_TIMEOUT

    @property
    def per_second(self) -> float:
        return self.deliveries / self.seconds if self.seconds else 0.0

    @property
    def sends_per_second(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        lat = sorted(self.latencies)
        if not lat:
            return float("nan")
        return lat[min(len(lat) - 1, int(len(lat) * q))] * 1000

    def line(self) -> str:
        text = (
            f"{self.name:<14} {self.per_second:>8.0f} deliveries/s {self.sends_per_second:>7.0f}"
            f" sends/s  p50 {self.percentile(0.5):7.1f} ms  p99 {self.percentile(0.99):7.1f} ms"
            f"  server CPU {self.server_cpu:5.1f} s / {self.seconds:4.1f} s"
        )
        if self.sealed_in_run:
            text += f"  ({self.sealed_in_run} envelopes sealed during the run)"
        if self.lost:
            text += f"  ({self.lost} answers never came within {ANSWER_TIMEOUT:.0f} s)"
        return text


def ratio(a: Result, b: Result) -> float:
    return a.per_second / b.per_second if b.per_second else float("nan")


# --- closed loop ----------------------------------------------------------------------


async def closed_loop(
    name: str, seats: list[Seat], servers: Servers, full: bool, seconds: float
) -> Result:
    """Every socket sends, waits for its ack (full) or its own echo (bare), sends again."""
    await servers.settle()
    socks = await open_sockets(seats, servers, full)
    result = Result(name, sockets=len(socks))
    readers: list[asyncio.Task[None]] = []
    cpu0 = servers.cpu()
    start = time.monotonic()
    stop = start + seconds

    async def member(i: int) -> None:
        ws, seat = socks[i], seats[i]
        answered = asyncio.Event()
        mine = {"frame": ""}

        async def reader() -> None:
            # Every frame is read here, so deliveries after our own answer still count.
            async for msg in ws:
                if full:
                    if _is_delivery(msg):
                        result.deliveries += 1
                        continue
                    kind = json.loads(msg)["type"]
                    if kind == "message":
                        result.deliveries += 1
                    elif kind == "ack":
                        answered.set()
                    elif kind == "error":
                        raise RuntimeError(msg)
                else:
                    result.deliveries += 1
                    if msg == mine["frame"]:
                        answered.set()

        readers.append(asyncio.create_task(reader()))
        n = 0
        while time.monotonic() < stop:
            n += 1
            if full:
                if seat.sealed:
                    frame = seat.sealed.popleft()
                else:
                    frame = seat.collab_frame(n)
                    result.sealed_in_run += 1
            else:
                frame = seat.bare_frame(n)
            answered.clear()
            mine["frame"] = frame
            t0 = time.monotonic()
            await ws.send(frame)
            try:
                await asyncio.wait_for(answered.wait(), ANSWER_TIMEOUT)
            except TimeoutError:
                result.lost += 1
                continue
            result.sent += 1
            result.latencies.append(time.monotonic() - t0)

    await asyncio.gather(*(member(i) for i in range(len(socks))))
    result.seconds = time.monotonic() - start
    result.server_cpu = servers.cpu() - cpu0
    # Deliveries of the last sends still land; count them, but not the time they take.
    await asyncio.sleep(1.0)
    await _close(socks, readers)
    return result


async def _close(socks: list[websockets.ClientConnection], tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.gather(*(s.close() for s in socks), return_exceptions=True)


# --- open loop ------------------------------------------------------------------------


async def open_loop(
    name: str, seats: list[Seat], servers: Servers, full: bool, seconds: float, rate: float
) -> Result:
    """Sends at a fixed total ``rate`` (per second, spread evenly over the sockets and
    staggered), each on its schedule whatever the answers. Latency runs from the
    scheduled send time to the sender's own ack (full) or own echo (bare), so a lagging
    client does not hide queueing. Counts what is still unanswered when sending stops
    and after a drain of DRAIN_SECONDS."""
    await servers.settle()
    socks = await open_sockets(seats, servers, full)
    result = Result(name, sockets=len(socks))
    per_socket = rate / len(socks)
    interval = 1.0 / per_socket
    readers: list[asyncio.Task[None]] = []
    pending: list[dict[Any, float]] = [{} for _ in socks]
    cpu0 = servers.cpu()
    start = time.monotonic() + 0.2
    stop = start + seconds

    async def reader(i: int) -> None:
        mine = pending[i]
        async for msg in socks[i]:
            if full:
                if _is_delivery(msg):
                    result.deliveries += 1
                    continue
                frame = json.loads(msg)
                if frame["type"] == "message":
                    result.deliveries += 1
                elif frame["type"] == "ack":
                    t0 = mine.pop(frame["ref"], None)
                    if t0 is not None:
                        result.latencies.append(time.monotonic() - t0)
                elif frame["type"] == "error":
                    raise RuntimeError(msg)
            else:
                result.deliveries += 1
                t0 = mine.pop(msg, None)
                if t0 is not None:
                    result.latencies.append(time.monotonic() - t0)

    async def sender(i: int) -> None:
        ws, seat, mine = socks[i], seats[i], pending[i]
        due = start + interval * i / len(socks)
        n = 0
        while due < stop:
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            n += 1
            if full:
                if seat.sealed:
                    frame = seat.sealed.popleft().replace('"ref": 0', f'"ref": {n}', 1)
                else:
                    frame = seat.collab_frame(n)
                    result.sealed_in_run += 1
                mine[n] = due
            else:
                frame = seat.bare_frame(n)
                mine[frame] = due
            await ws.send(frame)
            result.sent += 1
            due += interval

    readers = [asyncio.create_task(reader(i)) for i in range(len(socks))]
    await asyncio.gather(*(sender(i) for i in range(len(socks))))
    result.seconds = time.monotonic() - start
    delivered_in_window = result.deliveries
    result.server_cpu = servers.cpu() - cpu0
    result.unanswered_at_end = sum(len(p) for p in pending)
    deadline = time.monotonic() + DRAIN_SECONDS
    while time.monotonic() < deadline and any(pending):
        await asyncio.sleep(0.05)
    result.unanswered_after_drain = sum(len(p) for p in pending)
    result.deliveries = delivered_in_window  # throughput of the window, not the drain
    await _close(socks, readers)
    return result
