"""Several workers never take one step twice (PostgreSQL: SKIP LOCKED claims).

Workers here are threads, each with its own database connection (a connection is per
thread in Django), started together at one frozen moment; the counts are exact."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
import time_machine
from django.db import connection, transaction
from django.utils import timezone

from collab.audit.models import AuditAction, AuditEvent
from collab.cases.models import Notification, NotificationKind
from collab.escalation.models import Escalation, EscalationStep
from collab.escalation.services import _claim, escalation_pass, escalation_run_due
from tests.escalation.support import at, consult_room, on_call, send_urgent, set_policy
from tests.support import live
from tests.support.actor import Actor

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]


def run_together(count: int, work: Callable[[], object]) -> list[object]:
    barrier = threading.Barrier(count)
    results: list[object] = []
    errors: list[BaseException] = []

    def one() -> None:
        try:
            barrier.wait()
            results.append(work())
        except BaseException as error:  # reported by the test, not lost in the thread
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    return results


def urgent_messages(count: int) -> tuple[list[object], Actor]:
    set_policy({
        "first_reminder_minutes": 2, "repeat_minutes": 2, "repeat_count": 2,
        "steps": [{"to": "oncall", "after_minutes": 3}],
    })
    pcp = Actor("pcp").register()
    derm = Actor("derm", specialty="Dermatology").register()
    oncall = Actor("oncall", specialty="Dermatology").register()
    on_call(oncall, None)
    state = consult_room(pcp, derm)
    return [send_urgent(pcp, state, f"m{i}") for i in range(count)], derm


def test_two_workers_never_send_one_reminder_twice() -> None:
    messages, derm = urgent_messages(12)
    last = max(m.stored_at for m in messages)  # type: ignore[attr-defined]
    # At 2 minutes after the last: every timer owes its first reminder, none a step.
    with time_machine.travel(last + timedelta(minutes=2, seconds=1), tick=False):
        passes = run_together(4, lambda: escalation_run_due(limit=2))
    reminders = Notification.objects.filter(kind=NotificationKind.URGENT_REMINDER)
    assert reminders.count() == 12
    assert set(reminders.values_list("user_id", flat=True)) == {derm.user.pk}
    events = AuditEvent.objects.filter(action=AuditAction.URGENT_REMINDED)
    assert sorted(e.details["seq"] for e in events) == sorted(m.seq for m in messages)  # type: ignore[attr-defined]
    assert sum(p.reminders for p in passes) == 12  # type: ignore[attr-defined]
    assert set(Escalation.objects.values_list("reminders_sent", flat=True)) == {1}
    # Then at 3 minutes: one escalation per message, however many workers ask.
    with time_machine.travel(last + timedelta(minutes=3, seconds=1), tick=False):
        run_together(4, lambda: escalation_run_due(limit=3))
    assert EscalationStep.objects.count() == 12
    escalated = Notification.objects.filter(kind=NotificationKind.URGENT_ESCALATED)
    assert escalated.count() == 12
    assert AuditEvent.objects.filter(action=AuditAction.URGENT_ESCALATED).count() == 12


def test_a_claimed_timer_is_skipped_by_another_worker_until_released() -> None:
    (message,), _ = urgent_messages(1)
    when = at(message, 2)  # type: ignore[arg-type]
    held = threading.Event()
    release = threading.Event()

    def holder() -> None:
        try:
            with transaction.atomic():
                assert len(_claim(when, 10)) == 1
                held.set()
                release.wait(30)
        finally:
            connection.close()

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(30)
        skipped = escalation_pass(now=when)
        assert (skipped.claimed, skipped.reminders) == (0, 0)
    finally:
        release.set()
        thread.join()
    taken = escalation_pass(now=when)
    assert (taken.claimed, taken.reminders) == (1, 1)
    assert escalation_pass(now=when).claimed == 0  # next_due moved on: nothing left


def test_two_worker_processes_never_send_one_reminder_twice() -> None:
    """Two real ``run_worker --once`` processes on the same database."""
    urgent_messages(30)
    # The processes run on the real clock: make every timer's first reminder due now.
    past = timezone.now() - timedelta(minutes=2, seconds=30)
    Escalation.objects.update(started_at=past, next_due=past + timedelta(minutes=2))
    env = {
        **os.environ,
        "DATABASE_URL": live.test_database_url(),
        "DJANGO_SETTINGS_MODULE": "collab.settings",
    }
    workers = [
        subprocess.Popen(
            [sys.executable, "manage.py", "run_worker", "--once"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=120) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    assert Notification.objects.filter(kind=NotificationKind.URGENT_REMINDER).count() == 30
    assert AuditEvent.objects.filter(action=AuditAction.URGENT_REMINDED).count() == 30
    sent = sum(int(out.decode().split(" reminder")[0].split(", ")[-1]) for out, _ in outputs)
    assert sent == 30

