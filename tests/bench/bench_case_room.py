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
import uuid
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
    from django.contrib.sessions.backends.db import SessionStore
    from django.core.management import call_command
    from django_otp import DEVICE_ID_SESSION_KEY
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from collab.accounts import devices
    from collab.accounts.models import User
    from collab.accounts.policy import LAST_ACTIVITY_KEY
    from collab.cases.services.membership import case_open, log_entry_submit
    from collab.client.case_state import CaseState
    from collab.client.keys import DeviceKeys, Identity
    from collab.crypto.actions import AddUserBody
    from collab.crypto.roster import Role

    call_command("migrate", verbosity=0)
    out: list[list[dict[str, Any]]] = []
    for r in range(rooms):
        members: list[dict[str, Any]] = []
        for i in range(size):
            user = User.objects.create_user(
                username=f"bench{uuid.uuid4().hex[:10]}", password=None, display_name=f"B{r}.{i}"
            )
            totp = TOTPDevice.objects.create(user=user, name="bench", confirmed=True)
            identity, device = Identity.generate(user.pk), DeviceKeys.generate(user.pk)
            cert = identity.certify(device)
            devices.identity_register(user=user, uik_pub=identity.uik_pub)
            devices.device_register(user=user, cert=cert)
            session = SessionStore()
            session.update(
                {
                    "_auth_user_id": str(user.pk),
                    "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
                    "_auth_user_hash": user.get_session_auth_hash(),
                    DEVICE_ID_SESSION_KEY: totp.persistent_id,
                    LAST_ACTIVITY_KEY: time.time() + 3600,
                }
            )
            session.create()
            members.append(
                {
                    "user": user,
                    "identity": identity,
                    "device": device,
                    "cert": cert,
                    "session": session.session_key,
                }
            )
        owner = members[0]
        state = CaseState(uuid.uuid4(), owner["device"])
        genesis = state.genesis(owner["cert"], owner["identity"].uik_pub)
        case_open(user=owner["user"], device_id=owner["device"].device_id, genesis=genesis)
        state.accept_entries([genesis])
        for other in members[1:]:
            body = AddUserBody(
                other["user"].pk, Role.MEMBER, other["identity"].uik_pub, (other["cert"],)
            )
            entry = state.next_entry(body)
            log_entry_submit(
                user=owner["user"],
                device_id=owner["device"].device_id,
                case_id=state.case_id,
                entry=entry,
            )
            state.accept_entries([entry])
        for member in members:
            mine = CaseState(state.case_id, member["device"])
            mine.accept_entries(list(state.chain.values()))
            member["case_id"] = state.case_id
            member["frames"] = [
                json.dumps({"type": "send", "envelope": mine.seal({"text": "x" * 150}).to_wire()})
                for _ in range(per_socket)
            ]
        out.append(members)
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
        for s in socks:
            json.loads(await s.recv())  # hello
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

        task = asyncio.ensure_future(reader())
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
        await asyncio.sleep(0.5)  # let the last deliveries land
        task.cancel()

    await asyncio.gather(*(member(i) for i in range(len(socks))))
    result.seconds = time.monotonic() - start - 0.5
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
                                f"ws://{base}/ws/cases/{m['case_id']}/?device={m['device'].device_id}",
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
