"""Real daphne processes sharing the test database (and Redis, when configured)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]
# Base URL -> process id of the live servers now running.
PIDS: dict[str, int] = {}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_database_url() -> str:
    """The URL of the database the test run created, for other processes to share."""
    cfg = connection.settings_dict
    if cfg["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{cfg['NAME']}"
    user = cfg.get("USER") or ""
    host = cfg.get("HOST") or "127.0.0.1"
    port = cfg.get("PORT") or 5432
    return f"postgres://{user}@{host}:{port}/{cfg['NAME']}"


def server_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="collab.settings",
        DATABASE_URL=test_database_url(),
        SECRET_KEY=settings.SECRET_KEY,
        COLLAB_DATA_DIR=str(settings.DATA_DIR),
        COLLAB_MEDIA_DIR=str(settings.STORAGES["default"]["OPTIONS"]["location"]),  # type: ignore[index]
        COLLAB_SESSION_CHECK_SECONDS="5",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"daphne exited early with {proc.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"daphne did not listen on {port} within {timeout}s")


@contextmanager
def daphne_servers(count: int = 1, **extra_env: str) -> Iterator[list[str]]:
    """Start ``count`` daphne processes; yields their base URLs (http://127.0.0.1:port)."""
    procs: list[tuple[subprocess.Popen[bytes], int]] = []
    log_dir = ROOT / "test-artifacts"
    log_dir.mkdir(exist_ok=True)
    try:
        for _ in range(count):
            port = free_port()
            log = (log_dir / f"daphne-{port}.log").open("wb")
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "daphne",
                    "-b",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "collab.asgi:application",
                ],
                cwd=ROOT,
                env=server_env(**extra_env),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            procs.append((proc, port))
        for proc, port in procs:
            wait_for_port(port, proc)
        urls = [f"http://127.0.0.1:{port}" for _, port in procs]
        PIDS.update({url: proc.pid for url, (proc, _) in zip(urls, procs, strict=True)})
        yield urls
    finally:
        for proc, port in procs:
            PIDS.pop(f"http://127.0.0.1:{port}", None)
            proc.terminate()
        for proc, _ in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def peak_rss_kib(pid: int) -> int:
    """The process's high-water resident memory (VmHWM), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")
