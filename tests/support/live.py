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


class Daphne:
    """One daphne process on a fixed port: killable and restartable on the same port
    (as a process supervisor would restart it)."""

    def __init__(self, extra_env: dict[str, str] | None = None, port: int | None = None) -> None:
        self.port = port or free_port()
        self.extra_env = dict(extra_env or {})
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self) -> None:
        log_dir = ROOT / "test-artifacts"
        log_dir.mkdir(exist_ok=True)
        log = (log_dir / f"daphne-{self.port}.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port),
             "collab.asgi:application"],
            cwd=ROOT,
            env=server_env(**self.extra_env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        PIDS[self.url] = self.proc.pid

    def wait_ready(self) -> None:
        assert self.proc is not None
        wait_for_port(self.port, self.proc)

    def start(self) -> Daphne:
        self.spawn()
        self.wait_ready()
        return self

    def kill(self) -> None:
        """SIGKILL: the process dies mid-whatever, its sockets reset."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None
            PIDS.pop(self.url, None)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.proc = None
        PIDS.pop(self.url, None)


@contextmanager
def daphne_servers(count: int = 1, **extra_env: str) -> Iterator[list[str]]:
    """Start ``count`` daphne processes; yields their base URLs (http://127.0.0.1:port)."""
    servers = [Daphne(extra_env) for _ in range(count)]
    try:
        for server in servers:
            server.spawn()
        for server in servers:
            server.wait_ready()
        yield [server.url for server in servers]
    finally:
        for server in servers:  # all at once, then each waited for
            if server.proc is not None:
                server.proc.terminate()
        for server in servers:
            server.stop()


def peak_rss_kib(pid: int) -> int:
    """The process's high-water resident memory (VmHWM), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")
