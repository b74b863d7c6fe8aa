"""A client that stops reading is closed 4507 ``too_slow`` once more than
WS_MAX_OUTBOUND_BYTES wait for it in the server, instead of growing the server's buffer
without bound. Real daphne (the meter reads its transport's write buffer)."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from collab.cases.services.messages import message_send
from tests.support.actor import Actor
from tests.support.live import daphne_servers
from tests.support.ws import prove_frame, room_path

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

BOUND = 256 * 1024
STALL_SECONDS = 5


async def stalled_reader(base: str, actor: Actor, case_id: Any, requests: int) -> list[Any]:
    """Asks for ``requests`` full history pages without reading, then reads everything;
    answers the frames it got, ending with the close code."""
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # little room in the kernel
    port = int(base.rsplit(":", 1)[1])
    raw.connect(("127.0.0.1", port))
    raw.setblocking(False)
    url = base.replace("http://", "ws://") + room_path(case_id, actor.device.device_id)
    async with websockets.connect(
        url, sock=raw, max_size=None, max_queue=1,
        additional_headers={"Origin": base, "Cookie": f"sessionid={actor.session_id}"},
    ) as ws:
        challenge = json.loads(await ws.recv())
        await ws.send(json.dumps(prove_frame(challenge, case_id, actor.device.device_id)))
        assert json.loads(await ws.recv())["type"] == "hello"
        for _ in range(requests):
            await ws.send(json.dumps({"type": "resume", "after": 0, "limit": 200}))
        # The stall itself (the scenario, not an assertion): the pages pile up in the
        # server meanwhile. Then read all that comes.
        await asyncio.sleep(STALL_SECONDS)
        got: list[Any] = []
        try:
            while True:
                frame = json.loads(await asyncio.wait_for(ws.recv(), timeout=30))
                got.append(frame.get("code") or frame["type"])
        except ConnectionClosed as closed:
            got.append(closed.rcvd.code if closed.rcvd else None)
        return got


def test_a_reader_that_stalls_is_closed_too_slow() -> None:
    with daphne_servers(1, COLLAB_WS_MAX_OUTBOUND_BYTES=str(BOUND),
                        COLLAB_WS_RATE_BURST="200") as (base,):
        pcp = Actor("pcp").register().go_live(base)
        state = pcp.open_case()
        for i in range(20):
            message_send(user=pcp.user, device_id=pcp.device.device_id, case_id=state.case_id,
                         envelope=state.seal({"text": f"{i}" + "x" * 24_000}))
        got = asyncio.run(stalled_reader(base, pcp, state.case_id, requests=60))
    assert got[-2:] == ["too_slow", 4507]
    pages = got.count("messages")
    assert 0 < pages < 60  # closed long before every page was written


def test_the_meter_reads_daphnes_transport_and_falls_back_to_none() -> None:
    import functools

    from collab.consumers.outbound import buffered_bytes

    class Transport:
        dataBuffer = b"x" * 100  # noqa: N815 - Twisted's names
        offset = 40
        _tempDataLen = 7  # noqa: N815

    class Protocol:
        transport = Transport()

    async def handle_reply(protocol: Any, message: Any) -> None: ...

    meter = buffered_bytes(functools.partial(handle_reply, Protocol()))
    assert meter is not None and meter() == 67
    assert buffered_bytes(handle_reply) is None  # not daphne's: no bound, documented
    assert buffered_bytes(functools.partial(handle_reply, object())) is None
