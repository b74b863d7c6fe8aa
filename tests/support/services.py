"""Private Redis and PostgreSQL instances that a test may kill and restart.

Fault tests never touch the shared services (5432/6379): each starts its own on a free
port, in a temporary directory, and stops it at the end. PostgreSQL refuses to run as
root, so its directory belongs to, and its server runs as, the ``postgres`` user.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.live import free_port


def _pg_bin() -> Path:
    """COLLAB_PG_BIN, else the newest server installed the Debian way."""
    if os.environ.get("COLLAB_PG_BIN"):
        return Path(os.environ["COLLAB_PG_BIN"])
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


PG_BIN = _pg_bin()
PG_USER = "postgres"


def missing_binaries() -> list[str]:
    """What the fault suite needs and this machine lacks (for ``require``)."""
    missing = [] if shutil.which("redis-server") else ["redis-server"]
    missing += [str(PG_BIN / b) for b in ("initdb", "pg_ctl") if not (PG_BIN / b).exists()]
    return missing


def _wait_until(ready: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready within {timeout}s")
        time.sleep(0.05)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


class OwnRedis:
    """``redis-server`` without persistence on a port of its own."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        log = (self.log_dir / f"redis-{self.port}.log").open("ab")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        _wait_until(self._ping, f"redis on {self.port}")

    def _ping(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: no goodbye to its clients, every subscription lost."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None


class OwnPostgres:
    """A PostgreSQL cluster in a temporary directory (``initdb`` + ``pg_ctl``)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="collab-faults-pg-"))
        shutil.chown(self.root, user=PG_USER)
        self.data = self.root / "data"
        self.log = self.root / "server.log"

    def url(self, name: str = "postgres") -> str:
        return f"postgres://{PG_USER}@127.0.0.1:{self.port}/{name}"

    def _as_postgres(self, *argv: str | Path) -> None:
        cmd = [str(a) for a in argv]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", PG_USER, "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        self._as_postgres(PG_BIN / "initdb", "-D", self.data, "-A", "trust", "-U", PG_USER,
                          "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        # fsync off: a test cluster; nothing here needs to survive a power cut.
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        self._as_postgres(PG_BIN / "pg_ctl", "-D", self.data, "-o", options, "-l", self.log,
                          "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """``fast`` ends every session at once; ``immediate`` is a crash."""
        self._as_postgres(PG_BIN / "pg_ctl", "-D", self.data, "-m", mode, "-w", "stop")

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    @property
    def running(self) -> bool:
        return _port_open(self.port)

    def create_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as db:
            db.execute(f'CREATE DATABASE "{name}"')

    def remove(self) -> None:
        if self.running:
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def own_services(log_dir: Path) -> Iterator[tuple[OwnPostgres, OwnRedis]]:
    """A fresh PostgreSQL cluster and Redis server, removed afterwards."""
    pg = OwnPostgres()
    redis = OwnRedis(log_dir)
    try:
        pg.init()
        pg.start()
        redis.start()
        yield pg, redis
    finally:
        redis.stop()
        pg.remove()
