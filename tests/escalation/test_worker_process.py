"""The Procfile's worker as a real process: it takes a due step, reports it, and stops
cleanly on SIGTERM (as a process supervisor stops it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from collab.audit.models import AuditAction, AuditEvent
from collab.cases.models import Notification, NotificationKind
from collab.escalation.models import Escalation
from tests.escalation.support import consult_room, send_urgent, set_policy
from tests.support import live
from tests.support.actor import Actor

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]


def test_the_worker_loop_takes_a_due_step_and_stops_on_sigterm() -> None:
    set_policy({"first_reminder_minutes": 2, "repeat_minutes": 2, "repeat_count": 1,
                "steps": []})
    pcp = Actor("pcp").register()
    derm = Actor("derm", specialty="Dermatology").register()
    state = consult_room(pcp, derm)
    send_urgent(pcp, state)
    # The process runs on the real clock: make the first reminder due now.
    past = timezone.now() - timedelta(minutes=3)
    Escalation.objects.update(started_at=past, next_due=past + timedelta(minutes=2))
    env = {**os.environ, "DATABASE_URL": live.test_database_url(),
           "DJANGO_SETTINGS_MODULE": "collab.settings", "PYTHONUNBUFFERED": "1"}
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "run_worker", "--interval", "0.5"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert worker.stdout is not None
        lines = [worker.stdout.readline()]
        assert lines[0].startswith("worker started"), lines
        # The first pass takes the reminder and says so (read, not timed).
        lines.append(worker.stdout.readline())
        assert lines[1] == "1 due, 1 reminder(s), 0 escalation(s), 1 finished\n", lines
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, err
    assert out.strip().endswith("worker stopped")
    assert Notification.objects.filter(
        kind=NotificationKind.URGENT_REMINDER, user=derm.user
    ).count() == 1
    assert AuditEvent.objects.filter(action=AuditAction.URGENT_REMINDED).count() == 1
