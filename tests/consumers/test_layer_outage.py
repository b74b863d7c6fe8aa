"""A Redis outage never costs a sender its acknowledgement, and when Redis is back
every socket of the process is told to catch up (``hello`` with ``resync: true``).

Real daphne, a Redis of the test's own (killed with SIGKILL and restarted on its port).
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from collab.cases.models import Message
from tests.conftest import require
from tests.support.actor import Actor
from tests.support.live import ROOT, daphne_servers
from tests.support.services import OwnRedis
from tests.support.ws import RoomSocket

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]


@pytest.fixture
def redis() -> Iterator[OwnRedis]:
    require(shutil.which("redis-server") is not None, "redis-server is not installed")
    log_dir = ROOT / "test-artifacts"
    log_dir.mkdir(exist_ok=True)
    own = OwnRedis(log_dir)
    own.start()
    try:
        yield own
    finally:
        own.stop()


async def opened(base: str, actor: Actor, case_id: Any) -> RoomSocket:
    sock = await RoomSocket.open(base, actor.session_id, case_id, actor.device.device_id)
    await sock.next("hello")
    return sock


def test_send_during_redis_outage_is_acked_and_sockets_resync_after(redis: OwnRedis) -> None:
    with daphne_servers(1, REDIS_URL=redis.url) as (base,):
        pcp = Actor("pcp").register().go_live(base)
        derm = Actor("derm", specialty="Dermatology").register().go_live(base)
        state = pcp.open_case()
        assert pcp.add(state, derm).status_code == 201
        derm.join(state.case_id)

        async def scenario() -> None:
            a = await opened(base, pcp, state.case_id)
            b = await opened(base, derm, state.case_id)
            assert (await a.send_envelope(state.seal({"text": "before"})))["seq"] == 1
            assert (await b.next("message"))["seq"] == 1

            await asyncio.to_thread(redis.kill)
            ack = await a.send_envelope(state.seal({"text": "during"}), ref="d")
            # Stored, so acknowledged: the doorbell failing is not the sender's problem.
            assert (ack["type"], ack["ref"], ack["seq"]) == ("ack", "d", 2)
            # The socket is still usable while Redis is down.
            await a.send({"type": "ping"})
            await a.next("pong")

            await asyncio.to_thread(redis.start)
            for sock in (a, b):
                hello = await sock.next("hello", timeout=30)
                assert hello["resync"] is True
                assert hello["last_seq"] == 2
            # b catches up with what it missed...
            await b.send({"type": "resume", "after": 1})
            page = await b.next("messages")
            assert [i["seq"] for i in page["items"]] == [2] and page["more"] is False
            # ...and live delivery works again.
            assert (await a.send_envelope(state.seal({"text": "after"})))["seq"] == 3
            assert (await b.next("message", timeout=30))["seq"] == 3
            await a.close()
            await b.close()

        asyncio.run(scenario())
    assert sorted(Message.objects.filter(case_id=state.case_id).values_list("seq", flat=True)) == [
        1, 2, 3
    ]


def test_a_removal_during_an_outage_closes_the_removed_socket_when_redis_is_back(
    redis: OwnRedis,
) -> None:
    """The case.log doorbell that would close the removed member's socket is lost while
    Redis is down; the resync re-checks the roster and closes it instead of saying hello."""
    # A session check every hour: the resync, not the watchdog, is what is tested here.
    with daphne_servers(1, REDIS_URL=redis.url, COLLAB_SESSION_CHECK_SECONDS="3600") as (base,):
        pcp = Actor("pcp").register().go_live(base)
        derm = Actor("derm", specialty="Dermatology").register().go_live(base)
        state = pcp.open_case()
        assert pcp.add(state, derm).status_code == 201
        derm.join(state.case_id)

        async def scenario() -> None:
            a = await opened(base, pcp, state.case_id)
            b = await opened(base, derm, state.case_id)
            await asyncio.to_thread(redis.kill)
            removed = await asyncio.to_thread(pcp.remove, state, derm)
            assert removed.status_code == 201, removed.json()
            await asyncio.to_thread(redis.start)
            hello = await a.next("hello", timeout=30)
            assert hello["resync"] is True
            assert await b.closed_with(timeout=30) == 4403
            assert [f for f in b.seen if f.get("resync") or f["type"] == "messages"] == []
            assert [f.get("code") for f in b.seen if f["type"] == "error"] == ["removed"]
            await a.close()

        asyncio.run(scenario())


async def test_a_failed_probe_leaves_no_channel_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    """channels_redis registers a new channel before subscribing it; a probe during an
    outage must not leave one behind each second."""
    from collab import realtime

    class DownLayer:
        def __init__(self) -> None:
            self.channels: dict[str, object] = {"specific.someone-else": object()}

        async def new_channel(self, prefix: str) -> str:
            self.channels[f"specific.{prefix}abc"] = object()
            raise ConnectionError("Redis is down")

    layer = DownLayer()
    monkeypatch.setattr(realtime, "get_channel_layer", lambda: layer)
    probe = realtime._Probe()
    assert await probe.round_trip() is False
    assert await probe.round_trip() is False
    assert list(layer.channels) == ["specific.someone-else"]


def test_a_socket_opened_during_an_outage_sends_and_joins_its_groups_when_redis_is_back(
    redis: OwnRedis,
) -> None:
    """Redis down when the socket opens: it is accepted anyway (not HTTP 500), may send,
    and when Redis is back it joins the room's groups before its resync hello, so live
    frames reach it again."""
    import json

    import websockets

    with daphne_servers(1, REDIS_URL=redis.url) as (base,):
        pcp = Actor("pcp").register().go_live(base)
        derm = Actor("derm", specialty="Dermatology").register().go_live(base)
        state = pcp.open_case()
        assert pcp.add(state, derm).status_code == 201
        derm.join(state.case_id)

        async def scenario() -> None:
            await asyncio.to_thread(redis.kill)
            a = await opened(base, pcp, state.case_id)  # proved, then hello
            ack = await a.send_envelope(state.seal({"text": "during"}), ref="d")
            assert (ack["type"], ack["ref"], ack["seq"]) == ("ack", "d", 1)
            # The ping socket opens too.
            ping = await websockets.connect(
                base.replace("http://", "ws://") + "/ws/ping/",
                additional_headers={"Origin": base, "Cookie": f"sessionid={pcp.session_id}"},
                open_timeout=20,
            )
            assert json.loads(await asyncio.wait_for(ping.recv(), 15))["type"] == "hello"
            await ping.send(json.dumps({"type": "ping"}))
            assert json.loads(await asyncio.wait_for(ping.recv(), 15))["type"] == "pong"

            await asyncio.to_thread(redis.start)
            hello = await a.next("hello", timeout=30)
            assert hello["resync"] is True and hello["last_seq"] == 1
            # Another socket (the same device's, so the test's sealing state serves) sends.
            b = await opened(base, pcp, state.case_id)
            assert (await b.send_envelope(state.seal({"text": "after"})))["seq"] == 2
            assert (await a.next("message", timeout=30))["seq"] == 2
            await ping.close()
            await a.close()
            await b.close()

        asyncio.run(scenario())
