"""Benchmark: the full case-room path against a bare Channels chat, same load, same run.

    .venv/bin/python -m tests.bench.bench_case_room [--mode closed] [--rooms 20] [--size 5]
    .venv/bin/python -m tests.bench.bench_case_room --mode open
    .venv/bin/python -m tests.bench.bench_case_room --mode sizes [--sockets 200]
    .venv/bin/python -m tests.bench.bench_case_room --mode processes   (PostgreSQL + Redis)

Uses DATABASE_URL / REDIS_URL when set (PostgreSQL + Redis), else a fresh SQLite file and
the in-memory layer. ~200-byte messages; the client runs on the same box.

- closed: every socket sends, waits for its ack (full path) or its own echo (bare
  chat), and sends the next. Deliveries/s, sends/s, p50/p99 send latency, ratio.
- open: the bare chat's closed-loop capacity (sends/s) is measured first; then both
  paths get fixed arrival rates of 50%, 80% and 100% of it, each socket on its own
  schedule whatever the answers: p50/p99 (scheduled send -> own ack / own echo) and
  how many sends were unanswered when sending stopped and after a drain.
- sizes: rooms of 2, 10, 50 and 200 (``--sizes``) with the number of sockets held
  constant (``--sockets``, rooms = sockets / size), closed loop: deliveries/s and ratio
  per size. Most of its time is set-up: a room of 200 is 200 log entries, each verified
  and stored by the server with its whole roster.
- processes: one daphne process, then two (sockets alternate between them, so every
  room spans both), through Redis; ratio two/one for each path. Needs PostgreSQL +
  Redis (SQLite and the in-memory layer cannot be shared by two processes).

Every figure is printed with its ratio against the baseline of the same run: the
absolute figures move with whatever else runs on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

from tests.bench import load
from tests.bench.load import BARE_APP, COLLAB_APP, Result, Seat


def run_closed(seats: list[Seat], seconds: float, processes: int = 1) -> tuple[Result, Result]:
    with load.serve(BARE_APP, processes) as servers:
        bare = asyncio.run(load.closed_loop("bare", seats, servers, False, seconds))
    with load.serve(COLLAB_APP, processes) as servers:
        collab = asyncio.run(load.closed_loop("collab", seats, servers, True, seconds))
    return bare, collab


def report_pair(bare: Result, collab: Result) -> None:
    print(bare.line())
    print(collab.line())
    slower = statistics.median(collab.latencies) / statistics.median(bare.latencies)
    print(
        f"ratio collab/bare: {load.ratio(collab, bare):.2f} (deliveries/s); "
        f"median latency x{slower:.1f}"
    )


def mode_closed(args: argparse.Namespace) -> None:
    seats = setup(args.rooms, args.size, args.seconds * args.max_rate)
    report_pair(*run_closed(seats, args.seconds))


def mode_open(args: argparse.Namespace) -> None:
    fractions = (0.5, 0.8, 1.0)
    seats = setup(args.rooms, args.size, 0)
    with load.serve(BARE_APP) as servers:
        capacity = asyncio.run(load.closed_loop("bare closed", seats, servers, False, args.seconds))
        print(capacity.line())
        rate = capacity.sends_per_second
        print(f"bare capacity: {rate:.0f} sends/s ({capacity.per_second:.0f} deliveries/s)")
        bares = [
            asyncio.run(
                load.open_loop(f"bare {f:.0%}", seats, servers, False, args.seconds, f * rate)
            )
            for f in fractions
        ]
    need = int(sum(fractions) * rate * args.seconds / len(seats)) + 2
    print(f"sealing {need} envelopes per socket: {load.preseal(seats, need):.1f}s")
    with load.serve(COLLAB_APP) as servers:
        collabs = [
            asyncio.run(
                load.open_loop(f"collab {f:.0%}", seats, servers, True, args.seconds, f * rate)
            )
            for f in fractions
        ]
    print(f"{'':<14} {'offered':>8} {'sent/s':>8} {'deliv/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'unanswered at end':>18} {'after drain':>12}")
    for f, bare, collab in zip(fractions, bares, collabs, strict=True):
        for r in (bare, collab):
            print(
                f"{r.name:<14} {f * rate:>8.0f} {r.sends_per_second:>8.0f} {r.per_second:>8.0f} "
                f"{r.percentile(0.5):>8.1f} {r.percentile(0.99):>8.1f} "
                f"{r.unanswered_at_end:>18} {r.unanswered_after_drain:>12}"
                + (f"  ({r.sealed_in_run} sealed during the run)" if r.sealed_in_run else "")
            )
        print(f"{'':<14} ratio collab/bare deliveries/s {load.ratio(collab, bare):.2f}, "
              f"p99 x{collab.percentile(0.99) / bare.percentile(0.99):.1f}")


def mode_sizes(args: argparse.Namespace) -> None:
    rows = []
    for size in args.sizes:
        rooms = max(1, args.sockets // size)
        # A send in a bigger room is more deliveries, so fewer sends: fewer pre-sealed.
        per_seat = args.seconds * args.max_rate * min(1.0, 5 / size)
        seats = setup(rooms, size, per_seat, label=f"s{size}-")
        bare, collab = run_closed(seats, args.seconds)
        print(f"-- {rooms} rooms x {size}")
        report_pair(bare, collab)
        rows.append((size, rooms, bare, collab))
    print(f"{'size':>5} {'rooms':>6} {'bare deliv/s':>13} {'collab deliv/s':>15} {'ratio':>6} "
          f"{'collab p50':>11} {'collab p99':>11}")
    for size, rooms, bare, collab in rows:
        print(f"{size:>5} {rooms:>6} {bare.per_second:>13.0f} {collab.per_second:>15.0f} "
              f"{load.ratio(collab, bare):>6.2f} {collab.percentile(0.5):>8.1f} ms "
              f"{collab.percentile(0.99):>8.1f} ms")


def mode_processes(args: argparse.Namespace) -> None:
    if not (load.is_postgres() and os.environ.get("REDIS_URL")):
        print("processes: skipped, two daphne processes need PostgreSQL + Redis "
              "(set DATABASE_URL and REDIS_URL); SQLite and the in-memory layer are one-process")
        return
    seats = setup(args.rooms, args.size, 2 * args.seconds * args.max_rate)
    pairs = []
    # One then two processes back to back for each path, so each ratio compares
    # neighbouring runs.
    for name, app, full in (("bare", BARE_APP, False), ("collab", COLLAB_APP, True)):
        runs = []
        for processes in (1, 2):
            with load.serve(app, processes) as servers:
                label = f"{name} x{processes}"
                runs.append(
                    asyncio.run(load.closed_loop(label, seats, servers, full, args.seconds))
                )
            print(runs[-1].line())
        pairs.append((name, runs[0], runs[1]))
    for name, one, two in pairs:
        print(f"{name}: two/one {load.ratio(two, one):.2f} "
              f"({one.per_second:.0f} -> {two.per_second:.0f} deliveries/s)")
    print(f"collab/bare: one process {load.ratio(pairs[1][1], pairs[0][1]):.2f}, "
          f"two processes {load.ratio(pairs[1][2], pairs[0][2]):.2f}")


def setup(rooms: int, size: int, per_seat: float, label: str = "bench") -> list[Seat]:
    t0 = time.monotonic()
    seats = load.prepare(rooms, size, label)
    built = time.monotonic() - t0
    sealed = load.preseal(seats, int(per_seat)) if per_seat else 0.0
    print(f"setup: {rooms} rooms x {size} members in {built:.1f}s, "
          f"{int(per_seat)} envelopes per socket sealed in {sealed:.1f}s ({load.setup_name()})")
    return seats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--mode", choices=("closed", "open", "sizes", "processes"),
                        default="closed")
    parser.add_argument("--rooms", type=int, default=20)
    parser.add_argument("--size", type=int, default=5)
    parser.add_argument("--sockets", type=int, default=200, help="sizes: sockets in each run")
    parser.add_argument(
        "--sizes", type=lambda v: [int(x) for x in v.split(",")], default=[2, 10, 50, 200],
        help="sizes: room sizes, comma-separated (default 2,10,50,200)",
    )
    parser.add_argument("--seconds", type=float, default=None,
                        help="length of each measured run (default: closed 8, others 5)")
    parser.add_argument(
        "--max-rate", type=float, default=20.0,
        help="sends/s per socket to pre-seal envelopes for (more are sealed during the run, "
             "and counted, if a run goes faster)",
    )
    args = parser.parse_args()
    if args.seconds is None:
        args.seconds = 8.0 if args.mode == "closed" else 5.0
    load.env_setup()
    {"closed": mode_closed, "open": mode_open, "sizes": mode_sizes,
     "processes": mode_processes}[args.mode](args)
    if load.RETRIED_HANDSHAKES:
        print(f"{len(load.RETRIED_HANDSHAKES)} handshakes failed and were retried "
              "(server closed before answering)")


if __name__ == "__main__":
    main()
