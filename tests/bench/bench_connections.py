"""Benchmarks of the case-room connection path on one daphne process:

    .venv/bin/python -m tests.bench.bench_connections idle    [--sockets 10000]
    .venv/bin/python -m tests.bench.bench_connections catchup [--messages 10000]
    .venv/bin/python -m tests.bench.bench_connections storm   [--sockets 3000] [--profile out.prof]
    .venv/bin/python -m tests.bench.bench_connections all

- idle: N idle authenticated case-room sockets (the full handshake, device proof
  included); the server's RSS (VmRSS) before and after, and per socket. Goal <= 400 MiB
  at 10,000. Then the server's CPU while they stay idle (``--hold`` seconds, session
  checks every ``--check-seconds``), per socket checked.
- catchup: one device resumes N missed messages, page after page following ``more``;
  seconds and messages/s. Goal < 1 s for 10,000.
- storm: N sockets connect at once (as after a restart); authenticated handshakes/s
  (connect -> challenge -> prove -> hello). Goal >= 1,000/s.

Uses DATABASE_URL / REDIS_URL when set (PostgreSQL + Redis), else a fresh SQLite file
and the in-memory layer. Sockets share a few users, sessions and devices (``--rooms``
rooms of two members); every handshake is still the real one. The file-descriptor
limit is raised here and for the daphne process, never in the service. The client runs
on the same box (its CPU time is printed): figures are noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def raise_nofile() -> None:
    """RLIMIT_NOFILE up to the hard limit (bench and daphne only)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- set-up (in this process, through the real services) ----------------------------


@dataclass(frozen=True)
class Seat:
    """What one socket needs: a signed-in session, a device and its seed, a case."""

    session: str
    case_id: str
    device_id: str
    seed: bytes


def django_setup() -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "collab.settings")
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def seats(rooms: int) -> list[Seat]:
    from tests.support.rooms import build_room

    out = []
    for r in range(rooms):
        for member in build_room(2, label=f"conn{r}-"):
            out.append(
                Seat(member.session, str(member.state.case_id),
                     str(member.device.device_id), member.device.dsk_seed)
            )
    return out


def store_missed(count: int) -> tuple[Seat, int]:
    """A room of two; the first member stores ``count`` messages through the service
    (message_send_batch when it exists, else message_send). Returns the reader's seat."""
    from collab.cases.services import messages
    from tests.support.rooms import build_room

    sender, reader = build_room(2, label="catchup-")
    batch = getattr(messages, "message_send_batch", None)
    envelopes = [sender.state.seal({"text": "x" * 150}) for _ in range(count)]
    if batch is not None:
        for start in range(0, count, 256):
            results = batch([
                messages.SendRequest(user=sender.user, device_id=sender.device.device_id,
                                     case_id=sender.state.case_id, envelope=envelope)
                for envelope in envelopes[start:start + 256]
            ])
            bad = [r for r in results if not isinstance(r, messages.Ack)]
            assert not bad, bad[:1]
    else:
        # No batch service yet: the first messages through message_send, the rest as the
        # rows it would have stored (bulk set-up; the catch-up reads rows, not events).
        through = min(count, 100)
        for envelope in envelopes[:through]:
            messages.message_send(user=sender.user, device_id=sender.device.device_id,
                                  case_id=sender.state.case_id, envelope=envelope)
        _bulk_store(sender, envelopes[through:])
    seat = Seat(reader.session, str(reader.state.case_id), str(reader.device.device_id),
                reader.device.dsk_seed)
    return seat, count


def _bulk_store(sender: Any, envelopes: list[Any]) -> None:
    from django.db import transaction

    from collab.cases.models import Case, Message

    with transaction.atomic():
        case = Case.objects.select_for_update().get(pk=sender.state.case_id)
        rows = []
        for envelope in envelopes:
            h = envelope.header
            case.last_seq += 1
            rows.append(Message(
                case=case, seq=case.last_seq, epoch=h.epoch, sender=sender.user,
                sender_device_id=h.sender_device_id, client_msg_id=h.client_msg_id,
                sender_seq=h.sender_seq, header=h.encode(), signature=envelope.sig,
                ciphertext=envelope.ct))
        Message.objects.bulk_create(rows, batch_size=500)
        case.save(update_fields=["last_seq"])


# --- the server -----------------------------------------------------------------------


class Server:
    def __init__(self, profile: str | None = None) -> None:
        from tests.support.live import free_port

        self.port = free_port()
        # A backlog that holds a storm: twisted's default (50) turns one into SYN retries.
        endpoint = f"tcp:port={self.port}:interface=127.0.0.1:backlog=4096"
        # A storm (or a profiled server) may take longer than daphne's default 5 s to
        # accept a socket; the bench measures rates, not the client's retries.
        cmd = [sys.executable, "-m", "daphne", "-e", endpoint, "--websocket_connect_timeout",
               "120", "collab.asgi:application"]
        if profile:
            cmd = [sys.executable, "-m", "cProfile", "-o", profile, *cmd[1:]]
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as daphne
            prefix="daphne-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=dict(os.environ), stdout=self.log, stderr=subprocess.STDOUT,
            preexec_fn=raise_nofile,  # only the rlimit, before exec
        )
        from tests.support.live import wait_for_port

        wait_for_port(self.port, self.proc)

    @property
    def base(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --- the client -----------------------------------------------------------------------


async def handshake(base: str, seat: Seat) -> Any:
    """connect -> challenge -> prove -> hello; returns the open socket."""
    import uuid

    import websockets

    from collab.crypto.devproof import sign_ws_proof
    from collab.crypto.wire import b64d, b64e

    url = f"ws://{base}/ws/cases/{seat.case_id}/?device={seat.device_id}&proof=1"
    headers = {"Origin": f"http://{base}", "Cookie": f"sessionid={seat.session}"}
    ws = await websockets.connect(url, additional_headers=headers, open_timeout=120,
                                  max_size=None, ping_interval=None, compression=None)
    challenge = json.loads(await ws.recv())
    if challenge.get("type") != "challenge":
        raise RuntimeError(f"no challenge: {challenge}")
    sig = sign_ws_proof(seat.seed, b64d(challenge["nonce"], 32), uuid.UUID(seat.case_id),
                        uuid.UUID(seat.device_id))
    await ws.send(json.dumps({"type": "prove", "sig": b64e(sig)}))
    hello = json.loads(await ws.recv())
    if hello.get("type") != "hello":
        raise RuntimeError(f"no hello: {hello}")
    return ws


async def open_many(base: str, seat_list: list[Seat], count: int, offset: int,
                    in_flight: int) -> tuple[list[Any], float]:
    """``count`` sockets, at most ``in_flight`` handshakes at a time; (sockets, seconds)."""
    gate = asyncio.Semaphore(in_flight)

    async def one(i: int) -> Any:
        async with gate:
            return await asyncio.wait_for(
                handshake(base, seat_list[(offset + i) % len(seat_list)]), 300)

    t0 = time.monotonic()
    socks = await asyncio.gather(*(one(i) for i in range(count)), return_exceptions=True)
    return list(socks), time.monotonic() - t0


def _client_worker(base: str, seat_list: list[Seat], count: int, offset: int, in_flight: int,
                   start_at: float, hold: Any, out: Any) -> None:
    """One client process: open its sockets (from ``start_at``), report, hold them open
    until ``hold`` is set."""
    raise_nofile()

    async def run() -> None:
        await asyncio.sleep(max(0.0, start_at - time.time()))
        t0 = time.time()
        socks, seconds = await open_many(base, seat_list, count, offset, in_flight)
        failed = [s for s in socks if isinstance(s, BaseException)]
        socks = [s for s in socks if not isinstance(s, BaseException)]
        out.put((t0, t0 + seconds, os.times().user + os.times().system,
                 len(failed), repr(failed[0]) if failed else ""))
        while not hold.is_set():
            await asyncio.sleep(0.2)
        await asyncio.gather(*(s.close() for s in socks), return_exceptions=True)

    asyncio.run(run())


class Clients:
    """``count`` sockets opened by ``procs`` client processes at the same moment."""

    def __init__(self, base: str, seat_list: list[Seat], count: int, procs: int,
                 in_flight: int) -> None:
        ctx = multiprocessing.get_context("fork")
        self.hold = ctx.Event()
        self.out: Any = ctx.Queue()
        start_at = time.time() + 1.0
        share = [count // procs + (1 if i < count % procs else 0) for i in range(procs)]
        self.procs = []
        offset = 0
        for n in share:
            proc = ctx.Process(target=_client_worker, args=(
                base, seat_list, n, offset, max(1, in_flight // procs), start_at, self.hold,
                self.out))
            proc.start()
            self.procs.append(proc)
            offset += n
        self.results = [self.out.get(timeout=600) for _ in self.procs]

    @property
    def seconds(self) -> float:
        return float(max(r[1] for r in self.results) - min(r[0] for r in self.results))

    @property
    def failed(self) -> str:
        """How many handshakes failed, and the first error ('' when none)."""
        count = sum(r[3] for r in self.results)
        first = next((r[4] for r in self.results if r[4]), "")
        return f"{count} handshakes FAILED, e.g. {first}" if count else ""

    @property
    def client_cpu(self) -> float:
        return float(sum(r[2] for r in self.results))

    def close(self) -> None:
        self.hold.set()
        for proc in self.procs:
            proc.join(timeout=60)


# --- the benchmarks -------------------------------------------------------------------


def bench_idle(args: argparse.Namespace, seat_list: list[Seat]) -> None:
    server = Server()
    try:
        # Warm up (Django, the consumer's modules, one database connection), then measure.
        warm = Clients(server.base, seat_list, 10, 1, 10)
        warm.close()
        time.sleep(0.5)
        before = rss_kib(server.proc.pid)
        clients = Clients(server.base, seat_list, args.sockets, args.procs, args.in_flight)
        time.sleep(2.0)  # let the last handshakes' work settle
        after = rss_kib(server.proc.pid)
        print(f"idle: {args.sockets} sockets open in {clients.seconds:.1f}s {clients.failed}")
        per_socket = (after - before) / args.sockets
        at_goal = before + per_socket * 10000
        print(f"idle: server RSS before {before / 1024:.1f} MiB, after {after / 1024:.1f} MiB, "
              f"{per_socket:.1f} KiB per socket; at 10,000 sockets "
              f"{'measured' if args.sockets == 10000 else 'extrapolated'} "
              f"{at_goal / 1024:.0f} MiB (goal <= 400 MiB: "
              f"{'met' if at_goal <= 400 * 1024 else 'not met'})")
        # What the open sockets cost while nobody speaks: the session checks.
        check = float(os.environ["COLLAB_SESSION_CHECK_SECONDS"])
        cpu0, t0 = cpu_seconds(server.proc.pid), time.monotonic()
        time.sleep(args.hold)
        cpu, held = cpu_seconds(server.proc.pid) - cpu0, time.monotonic() - t0
        checks = args.sockets * held / check
        print(f"idle: server CPU {100 * cpu / held:.1f}% of a core over {held:.0f}s with "
              f"session checks every {check:g}s: {1e6 * cpu / checks:.0f} us per socket "
              f"checked; {100 * cpu / held * 10000 / args.sockets * check / 30:.1f}% of a "
              f"core at 10,000 sockets checked every 30 s")
        clients.close()
    finally:
        server.stop()


def bench_storm(args: argparse.Namespace, seat_list: list[Seat]) -> None:
    server = Server(args.profile)
    try:
        warm = Clients(server.base, seat_list, 10, 1, 10)
        warm.close()
        cpu0 = cpu_seconds(server.proc.pid)
        clients = Clients(server.base, seat_list, args.sockets, args.procs, args.sockets)
        cpu = cpu_seconds(server.proc.pid) - cpu0
        rate = args.sockets / clients.seconds
        print(f"storm: {args.sockets} sockets at once, all greeted in {clients.seconds:.2f}s: "
              f"{rate:.0f} authenticated handshakes/s (goal >= 1,000/s) {clients.failed}")
        print(f"storm: server CPU {cpu * 1000 / args.sockets:.2f} ms per handshake; "
              f"clients' CPU {clients.client_cpu * 1000 / args.sockets:.2f} ms per handshake")
        clients.close()
    finally:
        server.stop()
    if args.profile:
        import pstats

        pstats.Stats(args.profile).sort_stats("cumulative").print_stats(40)


def bench_catchup(args: argparse.Namespace) -> None:
    t0 = time.monotonic()
    seat, count = store_missed(args.messages)
    print(f"catchup: {count} messages stored in {time.monotonic() - t0:.1f}s")
    server = Server(args.profile)

    async def run() -> tuple[float, int, int]:
        ws = await handshake(server.base, seat)
        after, got, pages = 0, 0, 0
        started = time.monotonic()
        while True:
            await ws.send(json.dumps({"type": "resume", "after": after, "limit": args.limit}))
            while True:
                frame = json.loads(await ws.recv())
                if frame["type"] == "messages":
                    break
                if frame["type"] == "error":
                    raise RuntimeError(frame)
            pages += 1
            got += len(frame["items"])
            if frame["items"]:
                after = frame["items"][-1]["seq"]
            if not frame["more"]:
                break
        seconds = time.monotonic() - started
        await ws.close()
        return seconds, got, pages

    try:
        seconds, got, pages = asyncio.run(run())
    finally:
        server.stop()
    assert got == count, (got, count)
    print(f"catchup: {got} messages in {pages} pages, {seconds:.2f}s, "
          f"{got / seconds:.0f} messages/s (goal < 1 s)")
    if args.profile:
        import pstats

        pstats.Stats(args.profile).sort_stats("tottime").print_stats(30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("which", choices=["idle", "catchup", "storm", "all"])
    parser.add_argument("--sockets", type=int, default=None,
                        help="idle: 10000, storm: 3000")
    parser.add_argument("--messages", type=int, default=10000)
    parser.add_argument("--rooms", type=int, default=25, help="rooms of two set up")
    parser.add_argument("--procs", type=int, default=2, help="client processes")
    parser.add_argument("--in-flight", type=int, default=500,
                        help="idle: handshakes in flight at once")
    parser.add_argument("--limit", type=int, default=1000, help="catchup: messages a page asked")
    parser.add_argument("--profile", default=None, help="storm, catchup: cProfile the server")
    parser.add_argument("--check-seconds", type=float, default=2.0,
                        help="idle: the server's COLLAB_SESSION_CHECK_SECONDS")
    parser.add_argument("--hold", type=float, default=20.0,
                        help="idle: seconds the server's CPU is measured while idle")
    args = parser.parse_args()
    raise_nofile()
    data = tempfile.mkdtemp(prefix="collab-bench-")
    os.environ["COLLAB_DATA_DIR"] = data
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{data}/bench.sqlite3")
    if "postgres" in os.environ["DATABASE_URL"]:
        from tests.bench.load import fresh_database

        os.environ["DATABASE_URL"] = fresh_database(os.environ["DATABASE_URL"])
    os.environ["COLLAB_SESSION_CHECK_SECONDS"] = str(args.check_seconds)
    os.environ["COLLAB_WS_RATE_PER_SECOND"] = "100000"
    os.environ["COLLAB_WS_RATE_BURST"] = "100000"
    # A storm outlasts the default 10 s to answer the challenge on a busy box.
    os.environ["COLLAB_WS_PROVE_TIMEOUT_SECONDS"] = "120"
    sys.path.insert(0, str(ROOT))
    django_setup()
    from django.db import connection

    setup = ("PostgreSQL" if connection.vendor == "postgresql" else "SQLite") + (
        " + Redis pub/sub" if os.environ.get("REDIS_URL") else " + in-memory layer")
    print(f"set-up: {setup}; {os.cpu_count()} cores, client on the same box")
    seat_list = seats(args.rooms) if args.which != "catchup" else []
    connection.close()  # the daphne process and forked clients open their own
    if args.which in ("idle", "all"):
        bench_idle(argparse.Namespace(**{**vars(args), "sockets": args.sockets or 10000}),
                   seat_list)
    if args.which in ("storm", "all"):
        bench_storm(argparse.Namespace(**{**vars(args), "sockets": args.sockets or 3000}),
                    seat_list)
    if args.which in ("catchup", "all"):
        bench_catchup(args)


if __name__ == "__main__":
    main()
