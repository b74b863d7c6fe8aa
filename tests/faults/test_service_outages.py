"""Services failing under a live room: Redis, a daphne process, PostgreSQL.

Each scenario runs SDK members on two daphne processes that share the suite's own
PostgreSQL and Redis, breaks one of them mid-traffic, and asserts that nothing was
lost or duplicated, that every SDK client recovered by itself, that sessions still end,
and that the audit chain verifies.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from collab.client.sdk import CollabClient, Sent
from tests.faults.harness import (
    BOUND,
    Stack,
    Watcher,
    assert_audit_verifies,
    assert_no_lost_tasks,
    assert_nothing_lost_or_duplicated,
    assert_watch_complete,
    db,
    end_session,
    raw_socket,
    run,
    send_all,
    session_ends,
    texts,
)

pytestmark = [pytest.mark.postgres, pytest.mark.faults, pytest.mark.e2e]


def api_get(url: str, client: CollabClient, path: str) -> tuple[int, Any]:
    headers = {"Cookie": client.http.cookie_header()}
    request = urllib.request.Request(url + path, headers=headers)  # noqa: S310 - http://127.0.0.1
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        body = error.read()
        try:
            return error.code, json.loads(body)
        except ValueError:
            return error.code, body[:200]


def test_redis_killed_and_restarted_mid_traffic(stack: Stack, tmp_path: Path) -> None:
    one, two = stack.daphne(), stack.daphne()
    case_id, (pcp, derm) = stack.room(tmp_path, one.url, two.url)
    intended = texts("redis", 12)
    sent: list[Sent] = []

    async def scenario() -> Watcher:
        watcher = Watcher(derm, case_id)
        await watcher.until(lambda: watcher.connected, "the watch connected")
        room = await pcp.connect(case_id)
        await send_all(pcp, case_id, intended[:4], sent, room=room)
        await watcher.until_seqs(4, "delivery across the two processes before the outage")

        stack.redis.kill()
        # Stored while the doorbell is broken: each sender still gets its ack.
        await send_all(pcp, case_id, intended[4:8], sent, room=room)
        await asyncio.to_thread(stack.redis.start)
        # Nothing is sent now: what was committed in the outage is announced by the resync
        # hello each process sends once the layer works again.
        await watcher.until_seqs(8, "messages stored during the outage, announced after it")

        await send_all(pcp, case_id, intended[8:], sent, room=room)
        await watcher.until_seqs(12, "live delivery after the outage")
        await room.close()
        await session_ends(watcher)
        return watcher

    watcher = run(scenario())
    # The catch-up came from the resync hello of the watcher's process, on its open socket.
    assert "resync" in [kind for kind, _ in watcher.notices], watcher.notices
    assert_watch_complete(watcher, 12)
    assert_nothing_lost_or_duplicated(case_id, sent, intended, pcp)
    assert_no_lost_tasks(stack)
    assert_audit_verifies()


def test_one_of_two_daphne_processes_killed_mid_send(stack: Stack, tmp_path: Path) -> None:
    one, two = stack.daphne(), stack.daphne()
    # The sender and one watcher on the process that dies; another watcher on the other.
    case_id, (pcp, derm, nurse) = stack.room(tmp_path, one.url, two.url, one.url)
    intended = texts("kill", 16)
    sent: list[Sent] = []
    retries: list[str] = []  # the app retried a send_text after a transient error

    async def scenario() -> tuple[Watcher, Watcher]:
        far, near = Watcher(derm, case_id), Watcher(nurse, case_id)
        await far.until(lambda: far.connected, "the far watch connected")
        await near.until(lambda: near.connected, "the near watch connected")
        room = await pcp.connect(case_id)
        crash: list[asyncio.Task[None]] = []

        def kill_and_restart() -> None:
            one.kill()  # SIGKILL while the next sends are in flight
            one.start()  # its supervisor brings it back on the same port

        def on_sent(count: int) -> None:
            if count == 5:
                crash.append(asyncio.create_task(asyncio.to_thread(kill_and_restart)))

        await send_all(pcp, case_id, intended, sent, room=room, on_sent=on_sent,
                       retries=retries)
        await crash[0]
        await far.until_seqs(16, "the watch on the surviving process")
        await near.until_seqs(16, "the watch on the killed process, after it came back")
        await room.close()
        await session_ends(near)
        await session_ends(far)
        return far, near

    far, near = run(scenario())
    print(f"app-level send retries: {retries}")
    assert_watch_complete(far, 16)
    assert_watch_complete(near, 16)
    assert any(kind == "reconnecting" for kind, _ in near.notices)
    assert_nothing_lost_or_duplicated(case_id, sent, intended, pcp)
    assert_audit_verifies()


def test_postgres_restarted_under_traffic(stack: Stack, tmp_path: Path) -> None:
    # A restart shorter than one session-check period (4 s; the grace before 4503 is two):
    # every socket meets at most one failed check of the session sweep and stays open,
    # and the sweep must outlive that error (a dead one leaves sockets past their session).
    check = 4.0
    one = stack.daphne(COLLAB_SESSION_CHECK_SECONDS=str(check))
    two = stack.daphne(COLLAB_SESSION_CHECK_SECONDS=str(check))
    case_id, (pcp, derm, nurse) = stack.room(tmp_path, one.url, two.url, two.url)
    intended = texts("pgrestart", 8)
    sent: list[Sent] = []

    async def scenario() -> Watcher:
        watcher = Watcher(derm, case_id)
        await watcher.until(lambda: watcher.connected, "the watch connected")
        room = await pcp.connect(case_id)
        await send_all(pcp, case_id, intended[:4], sent, room=room)
        await watcher.until_seqs(4, "delivery before the restart")

        # The sweep checks every `check` seconds: the database is down for 0.8 of one
        # period, so across at most one check, and is back well before the next.
        observer = await raw_socket(two.url, nurse, case_id)
        opened = time.monotonic()
        await asyncio.sleep(0.6 * check)
        await asyncio.to_thread(stack.pg.stop, "fast")
        await asyncio.sleep(opened + 1.4 * check - time.monotonic())
        await asyncio.to_thread(stack.pg.start)

        await send_all(pcp, case_id, intended[4:], sent, room=room)
        await watcher.until_seqs(8, "delivery after the restart")
        # A session ended behind the channel layer's back still closes the observer's
        # socket: the sweep survived the failed check.
        await db(lambda: end_session(nurse))
        code = await observer.closed_with(timeout=BOUND)
        assert code == 4401, f"the observer's socket closed with {code}, not 4401"
        await room.close()
        await session_ends(watcher)
        return watcher

    watcher = run(scenario())
    assert_watch_complete(watcher, 8)
    assert_nothing_lost_or_duplicated(case_id, sent, intended, pcp)
    assert_no_lost_tasks(stack)
    assert_audit_verifies()


def test_postgres_stopped_longer_than_the_watchdog_grace(stack: Stack, tmp_path: Path) -> None:
    one, two = stack.daphne(), stack.daphne()  # session checks every 1 s: 4503 after 2 s
    case_id, (pcp, derm, nurse) = stack.room(tmp_path, one.url, two.url, two.url)
    intended = texts("pgstop", 6)
    sent: list[Sent] = []

    async def scenario() -> Watcher:
        watcher = Watcher(derm, case_id)
        await watcher.until(lambda: watcher.connected, "the watch connected")
        observer = await raw_socket(two.url, nurse, case_id)
        room = await pcp.connect(case_id)
        await send_all(pcp, case_id, intended[:3], sent, room=room)
        await watcher.until_seqs(3, "delivery before the outage")

        await asyncio.to_thread(stack.pg.stop, "fast")
        # The session cannot be checked: the socket is closed 4503 (unavailable), with
        # the error frame first, rather than left open past its session.
        code = await observer.closed_with(timeout=BOUND)
        assert code == 4503, f"closed with {code} while the database was down"
        assert any(f.get("code") == "unavailable" for f in observer.seen), observer.seen[-3:]
        # The API answers its JSON error body, not an HTML page.
        status, body = await asyncio.to_thread(api_get, two.url, derm, "/api/cases")
        assert status == 503, (status, body)
        assert isinstance(body, dict) and body["error"] == "unavailable", body
        # The watch keeps trying (with backoff) instead of giving up.
        await watcher.until(lambda: any(k == "reconnecting" for k, _ in watcher.notices),
                            "the watch noticed the outage and reconnects")
        assert watcher.ended is None

        await asyncio.to_thread(stack.pg.start)
        await send_all(pcp, case_id, intended[3:], sent, room=room)
        await watcher.until_seqs(6, "the watch recovered by itself after the outage")
        await room.close()
        await session_ends(watcher)
        return watcher

    watcher = run(scenario())
    assert_watch_complete(watcher, 6)
    assert_nothing_lost_or_duplicated(case_id, sent, intended, pcp)
    assert_no_lost_tasks(stack)
    assert_audit_verifies()
