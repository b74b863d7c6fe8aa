"""A room of 200 sockets: every socket gets every message exactly once.

Live frames from concurrent senders can arrive out of sequence order (commits and
publishes on two processes interleave); clients order by seq and fill gaps with resume.

Above channels_redis's and redis-py's default pool of 100 connections on purpose.
"""

from __future__ import annotations

import asyncio
import json
import os

import pytest
import websockets

from tests.support.live import daphne_servers
from tests.support.rooms import Member, build_room
from tests.support.ws import prove_frame, room_path

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

MEMBERS, SOCKETS_EACH, SENDERS = 40, 5, 8


async def run_room(bases: list[str], members: list[Member]) -> list[list[int]]:
    socks = []
    for i, member in enumerate(members):
        for j in range(SOCKETS_EACH):
            base = bases[(i * SOCKETS_EACH + j) % len(bases)]
            case_id, device_id = member.state.case_id, member.device.device_id
            url = base.replace("http://", "ws://") + room_path(case_id, device_id)
            ws = await websockets.connect(
                url,
                additional_headers={"Origin": base, "Cookie": f"sessionid={member.session}"},
                open_timeout=30,
            )
            # The device proves itself first (challenge -> prove), then hello.
            challenge = json.loads(await ws.recv())
            assert challenge["type"] == "challenge"
            await ws.send(json.dumps(prove_frame(challenge, case_id, device_id)))
            assert json.loads(await ws.recv())["type"] == "hello"
            socks.append(ws)
    assert len(socks) == MEMBERS * SOCKETS_EACH
    # Senders each send one message on their first socket, concurrently.
    frames = [
        json.dumps(
            {"type": "send", "envelope": members[k].state.seal({"text": f"hi {k}"}).to_wire()}
        )
        for k in range(SENDERS)
    ]
    await asyncio.gather(*(socks[k * SOCKETS_EACH].send(frames[k]) for k in range(SENDERS)))

    async def collect(ws: websockets.ClientConnection) -> list[int]:
        seqs: list[int] = []
        while len(seqs) < SENDERS:
            frame = json.loads(await asyncio.wait_for(ws.recv(), timeout=60))
            if frame["type"] == "message":
                seqs.append(frame["seq"])
        return seqs

    try:
        return await asyncio.gather(*(collect(ws) for ws in socks))
    finally:
        await asyncio.gather(*(ws.close() for ws in socks))


def check(results: list[list[int]]) -> None:
    for seqs in results:
        assert sorted(seqs) == list(range(1, SENDERS + 1)), seqs


def test_room_of_200_sockets_delivers_every_message_once() -> None:
    members = build_room(MEMBERS)
    with daphne_servers(1) as bases:
        check(asyncio.run(run_room(bases, members)))


@pytest.mark.postgres
def test_room_of_200_sockets_across_two_processes_over_redis() -> None:
    assert os.environ.get("REDIS_URL")
    members = build_room(MEMBERS)
    with daphne_servers(2) as bases:
        check(asyncio.run(run_room(bases, members)))
