"""The timer worker (Procfile ``worker:``): urgent-message reminders and escalations.

Each pass claims the due timers (``SELECT … FOR UPDATE SKIP LOCKED`` on PostgreSQL, so
several workers share the work and never take one step twice), takes their steps and
commits. ``--once`` runs until nothing is due and exits (for tests and systemd timers).
SQLite has no row locks: run one worker there.
"""

from __future__ import annotations

import logging
import signal
import time
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import close_old_connections

from collab.escalation.services import escalation_run_due

log = logging.getLogger("collab.worker")


class Command(BaseCommand):
    help = "Send due reminders and escalations of unacknowledged urgent messages."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--once", action="store_true", help="run until nothing is due, then exit"
        )
        parser.add_argument(
            "--interval", type=float, default=5.0,
            help="seconds between passes (default 5; 0.5 to 60)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        interval = options["interval"]
        if not 0.5 <= interval <= 60:
            self.stderr.write("--interval must lie between 0.5 and 60 seconds")
            raise SystemExit(2)
        if options["once"]:
            self._report(escalation_run_due())
            return
        stopping = False

        def stop(signum: int, frame: FrameType | None) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        self.stdout.write(f"worker started (a pass every {interval:g} s)")
        while not stopping:
            close_old_connections()  # a restarted database is reconnected to
            try:
                done = escalation_run_due()
            except Exception:  # one failed pass must not stop the timers for good
                log.exception("worker pass failed")
            else:
                if done.claimed:
                    self._report(done)
            deadline = time.monotonic() + interval
            while not stopping and time.monotonic() < deadline:
                time.sleep(min(0.25, interval))
        self.stdout.write("worker stopped")

    def _report(self, done: Any) -> None:
        self.stdout.write(
            f"{done.claimed} due, {done.reminders} reminder(s), "
            f"{done.escalations} escalation(s), {done.finished} finished"
        )
