"""The session sweep: one task checks every open socket of a process at once. Its
queries are the same for two sockets as for seven; each refusal closes exactly the
socket it is for and leaves the others open; and a session row rewritten (as a
malicious operator could) to name another user closes the socket opened as the first.

In process (channels' communicator); the changes are made in the database without
ringing any doorbell, so only the sweep can see them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from channels.db import database_sync_to_async as sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore
from django.db import connection
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from collab.accounts.models import Device
from collab.cases.models import Member as MemberRow
from collab.consumers import sweep
from tests.support.communicators import open_inbox, open_room
from tests.support.rooms import Member, build_room

pytestmark = pytest.mark.django_db(transaction=True)


async def sweep_queries() -> tuple[int, dict[Any, Any], dict[Any, Any]]:
    """One sweep of every open socket, run by hand: (statements run, refusals, reads)."""
    sockets = sorted(sweep.sockets_open(), key=id)
    statements: list[str] = []

    def run() -> tuple[dict[Any, Any], dict[Any, Any]]:
        def count(execute: Callable[..., Any], sql: str, *args: Any) -> Any:
            statements.append(sql)
            return execute(sql, *args)

        with connection.execute_wrapper(count):
            return sweep.sweep_once(sockets)

    found, reads = await sync_to_async(run)()
    return len(statements), found, reads


async def closed_with(communicator: WebsocketCommunicator) -> tuple[list[str], int]:
    """The error codes up to the close, and its code."""
    codes: list[str] = []
    while True:
        output = await communicator.receive_output(timeout=5)
        if output["type"] == "websocket.close":
            return codes, output["code"]
        if '"type":"error"' in output.get("text", ""):
            codes.append(output["text"].split('"code":"')[1].split('"')[0])


async def still_open(communicator: WebsocketCommunicator) -> None:
    await communicator.send_json_to({"type": "ping"})
    assert await communicator.receive_json_from(timeout=5) == {"type": "pong"}


async def test_one_sweep_checks_any_number_of_sockets_in_the_same_queries(settings) -> None:
    settings.SESSION_CHECK_SECONDS = 3600  # the sweeps here are run by hand
    small = await sync_to_async(build_room)(2, "s")
    sockets = [await open_room(member) for member in small]
    assert len(sweep.sockets_open()) == 2
    two, found, reads = await sweep_queries()
    assert found == reads == {}  # case rooms read nothing more

    large = await sync_to_async(build_room)(5, "l")
    sockets += [await open_room(member) for member in large]
    assert len(sweep.sockets_open()) == 7
    seven, found, reads = await sweep_queries()
    assert found == reads == {}
    # Sessions, users, OTP devices, TOTP enrolment, rosters: one query each.
    assert two == seven == 5, (two, seven)

    for communicator in sockets:
        await communicator.disconnect()
    assert not sweep.sockets_open()
    async with asyncio.timeout(5):  # and no task is left running for no socket
        while any(t.get_name() == sweep.TASK_NAME for t in asyncio.all_tasks()):
            await asyncio.sleep(0.01)


def end_session(member: Member) -> None:
    SessionStore(member.session).delete()


def revoke_silently(member: Member) -> None:
    Device.objects.filter(pk=member.device.device_id).update(revoked_at=timezone.now())


async def test_each_refusal_closes_its_own_socket_and_no_other(settings) -> None:
    settings.SESSION_CHECK_SECONDS = 0.1
    members = await sync_to_async(build_room)(4)
    sockets = [await open_room(member) for member in members]
    await sync_to_async(end_session)(members[1])
    await sync_to_async(revoke_silently)(members[2])
    assert await closed_with(sockets[1]) == (["session_ended"], 4401)
    assert await closed_with(sockets[2]) == (["device_revoked"], 4403)
    await asyncio.sleep(0.35)  # three more sweeps
    await still_open(sockets[0])
    await still_open(sockets[3])
    assert len(sweep.sockets_open()) == 2
    for communicator in sockets:
        await communicator.disconnect()


async def test_a_session_rewritten_to_name_another_user_closes_the_socket(settings) -> None:
    settings.SESSION_CHECK_SECONDS = 0.1
    first, second = await sync_to_async(build_room)(2)
    socket = await open_room(first)

    def rewrite() -> None:  # the operator's edit of the session row
        session = SessionStore(first.session)
        session[SESSION_KEY] = str(second.user.pk)
        session.save()

    await sync_to_async(rewrite)()
    assert await closed_with(socket) == (["session_ended"], 4401)
    await socket.disconnect()


async def test_one_sweep_follows_every_inbox_in_the_same_queries(settings) -> None:
    """Each inbox's cases are read afresh for all inboxes in one query: a membership
    added or removed without a doorbell is followed at the next sweep."""
    settings.SESSION_CHECK_SECONDS = 3600  # the sweeps here are run by hand
    first = await sync_to_async(build_room)(2, "ia")
    inboxes = [(await open_inbox(member.session))[0] for member in first]
    two, found, reads = await sweep_queries()
    case = first[0].state.case_id
    assert found == {} and sorted(reads.values(), key=len) == [{case}, {case}]

    second = await sync_to_async(build_room)(2, "ib")
    inboxes += [(await open_inbox(member.session))[0] for member in second]
    four, found, reads = await sweep_queries()
    assert found == {} and len(reads) == 4
    # Sessions, users, OTP devices, TOTP enrolment, memberships: one query each.
    assert two == four == 5, (two, four)

    # The sweep's read reaches the socket: a membership gone without a doorbell.
    await sync_to_async(
        lambda: MemberRow.objects.filter(case_id=case, user=first[1].user).delete()
    )()
    settings.SESSION_CHECK_SECONDS = 0.1
    (third,) = await sync_to_async(build_room)(1, "ic")
    inboxes.append((await open_inbox(third.session))[0])  # the new interval counts now
    frame = await inboxes[1].receive_json_from(timeout=5)
    assert frame == {"type": "case_removed", "case": str(case)}
    for communicator in inboxes:
        await communicator.disconnect()


async def test_a_second_factor_gone_while_open_closes_the_socket(settings) -> None:
    """The TOTP device the session verified with is deleted (an admin resetting the
    user's second factor): the socket closes at the next sweep, the others stay."""
    settings.SESSION_CHECK_SECONDS = 0.1
    first, second = await sync_to_async(build_room)(2)
    sockets = [await open_room(first), await open_room(second)]
    await sync_to_async(TOTPDevice.objects.filter(user=first.user).delete)()
    assert await closed_with(sockets[0]) == (["session_ended"], 4401)
    await asyncio.sleep(0.25)  # more sweeps
    await still_open(sockets[1])
    for communicator in sockets:
        await communicator.disconnect()
