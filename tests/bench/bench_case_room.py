"""Benchmark: the full case-room path against a bare Channels chat, same load, same run.

    .venv/bin/python -m tests.bench.bench_case_room [--rooms 20] [--size 5] [--seconds 8]

Uses DATABASE_URL / REDIS_URL when set (PostgreSQL + Redis), else a fresh SQLite file and
the in-memory layer. Closed loop: every socket sends a ~200-byte message, waits for its
acknowledgement (full path) or its own echo (bare chat), and sends the next. Prints
deliveries per second, p50/p99 send latency, and the ratio full / bare.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import websockets

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass
class Result:
    name: str
    deliveries: int = 0
    sent: int = 0
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def line(self) -> str:
        lat = sorted(self.latencies) or [0.0]
        p50 = lat[len(lat) // 2] * 1000
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
        return (
            f"{self.name:<10} {self.deliveries / self.seconds:>9.0f} deliveries/s "
            f"{self.sent / self.seconds:>8.0f} sends/s  p50 {p50:6.1f} ms  p99 {p99:6.1f} ms"
        )


def prepare(rooms: int, size: int, per_socket: int) -> list[list[dict[str, Any]]]:
    """Users, devices, sessions and cases through the real services; pre-sealed envelopes."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "collab.settings")
    django.setup()
    from django.core.management import call_command

    from tests.support.rooms import build_room

    call_command("migrate", verbosity=0)
    out: list[list[dict[str, Any]]] = []
    for r in range(rooms):
        room = []
        for m in build_room(size, label=f"bench{r}-"):
            frames = [
                json.dumps(
                    {"type": "send", "envelope": m.state.seal({"text": "x" * 150}).to_wire()}
                )
                for _ in range(per_socket)
            ]
            room.append(
                {
                    "case_id": m.state.case_id,
                    "device": m.device,
                    "session": m.session,
                    "frames": frames,
                }
            )
        out.append(room)
    return out


async def drive(
    name: str,
    urls: list[tuple[str, dict[str, str]]],
    frames: list[list[str]],
    rooms: int,
    size: int,
    seconds: float,
    full: bool,
) -> Result:
    result = Result(name)
    socks = [await websockets.connect(u, additional_headers=h, max_size=None) for u, h in urls]
    if full:
        from tests.support.ws import prove_frame

        for s, (u, _) in zip(socks, urls, strict=True):
            # The device proves itself (challenge -> prove), then hello.
            first = json.loads(await s.recv())
            if first["type"] == "challenge":
                case_id = u.split("/ws/cases/", 1)[1].split("/", 1)[0]
                device_id = u.split("device=", 1)[1].split("&", 1)[0]
                await s.send(json.dumps(prove_frame(first, case_id, device_id)))
                first = json.loads(await s.recv())
            assert first["type"] == "hello", first
    stop = time.monotonic() + seconds
    start = time.monotonic()

    async def member(i: int) -> None:
        ws = socks[i]
        answered = asyncio.Event()
        mine: dict[str, str] = {"frame": ""}

        async def reader() -> None:
            # Every frame is read here, so deliveries after our own answer still count.
            async for msg in ws:
                if full:
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

        readers.append(asyncio.ensure_future(reader()))
        for frame in frames[i]:
            if time.monotonic() >= stop:
                break
            answered.clear()
            mine["frame"] = frame
            t0 = time.monotonic()
            await ws.send(frame)
            await answered.wait()
            result.sent += 1
            result.latencies.append(time.monotonic() - t0)

    readers: list[asyncio.Future[None]] = []
    await asyncio.gather(*(member(i) for i in range(len(socks))))
    result.seconds = time.monotonic() - start
    # Deliveries of the last sends still land; count them, but not the time they take.
    await asyncio.sleep(1.0)
    for task in readers:
        task.cancel()
    for s in socks:
        await s.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rooms", type=int, default=20)
    parser.add_argument("--size", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    data = tempfile.mkdtemp(prefix="collab-bench-")
    os.environ["COLLAB_DATA_DIR"] = data
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{data}/bench.sqlite3")
    os.environ["COLLAB_WS_RATE_PER_SECOND"] = "100000"
    os.environ["COLLAB_WS_RATE_BURST"] = "100000"
    sys.path.insert(0, ROOT)
    import subprocess

    from tests.support.live import free_port, wait_for_port
    from tests.support.ws import room_path

    per_socket = int(args.seconds * 400)
    t0 = time.monotonic()
    groups = prepare(args.rooms, args.size, per_socket)
    print(
        f"setup: {args.rooms} rooms x {args.size} members in {time.monotonic() - t0:.1f}s "
        f"({'PostgreSQL' if 'postgres' in os.environ['DATABASE_URL'] else 'SQLite'}, "
        f"{'Redis pub/sub' if os.environ.get('REDIS_URL') else 'in-memory layer'})"
    )
    results: list[Result] = []
    for name, app, full in (
        ("bare", "tests.bench.bare_asgi:application", False),
        ("collab", "collab.asgi:application", True),
    ):
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), app],
            cwd=ROOT,
            env=dict(os.environ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(port, proc)
            base = f"127.0.0.1:{port}"
            urls, frames = [], []
            for r, members in enumerate(groups):
                for m in members:
                    if full:
                        urls.append(
                            (
                                f"ws://{base}{room_path(m['case_id'], m['device'].device_id)}",
                                {"Origin": f"http://{base}", "Cookie": f"sessionid={m['session']}"},
                            )
                        )
                        frames.append(m["frames"])
                    else:
                        urls.append((f"ws://{base}/bare/r{r}/", {"Origin": f"http://{base}"}))
                        frames.append(
                            [
                                json.dumps(
                                    {
                                        "type": "send",
                                        "n": i,
                                        "pad": "x" * 150,
                                        "r": r,
                                        "u": str(m["device"].device_id),
                                    }
                                )
                                for i in range(per_socket)
                            ]
                        )
            results.append(
                asyncio.run(drive(name, urls, frames, args.rooms, args.size, args.seconds, full))
            )
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    for outcome in results:
        print(outcome.line())
    bare, collab = results
    ratio = (collab.deliveries / collab.seconds) / (bare.deliveries / bare.seconds)
    slower = statistics.median(collab.latencies) / statistics.median(bare.latencies)
    print(f"ratio collab/bare: {ratio:.2f} (deliveries/s); median latency x{slower:.1f}")


if __name__ == "__main__":
    main()
