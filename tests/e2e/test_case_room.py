"""Case rooms over real sockets to real daphne processes."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest

from collab.cases.models import Message
from collab.crypto.envelope import Envelope
from tests.support.actor import Actor
from tests.support.live import daphne_servers
from tests.support.ws import RoomSocket

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock(), daphne_servers(1) as urls:
        yield urls[0]


def room(server: str) -> tuple[Actor, Actor, Any]:
    pcp = Actor("pcp").register().go_live(server)
    derm = Actor("derm", specialty="Dermatology").register().go_live(server)
    state = pcp.open_case()
    assert pcp.add(state, derm).status_code == 201
    derm.join(state.case_id)
    return pcp, derm, state


async def sockets(server: str, *actors: Actor, case_id: Any) -> list[RoomSocket]:
    out = []
    for actor in actors:
        sock = await RoomSocket.open(server, actor.session_id, case_id, actor.device.device_id)
        hello = await sock.next("hello")
        assert hello["case"] == str(case_id)
        out.append(sock)
    return out


def test_message_is_acknowledged_and_delivered_in_real_time(server: str) -> None:
    pcp, derm, state = room(server)
    derm_state = derm.cases[state.case_id]

    async def scenario() -> None:
        a, b = await sockets(server, pcp, derm, case_id=state.case_id)
        ack = await a.send_envelope(state.seal({"text": "Rash on left forearm, 3 weeks"}), ref="m1")
        assert (ack["type"], ack["ref"], ack["seq"], ack["duplicate"]) == ("ack", "m1", 1, False)
        delivered = await b.next("message")
        assert delivered["seq"] == 1
        opened = derm_state.open(Envelope.from_wire(delivered["envelope"]))
        assert opened.body == {"text": "Rash on left forearm, 3 weeks"}
        # Read receipts and typing reach the other member.
        await b.send({"type": "read", "up_to": 1})
        assert (await a.next("read"))["up_to"] == 1
        await b.send({"type": "typing", "active": True})
        assert (await a.next("typing"))["user"] == str(derm.user.pk)
        await a.close()
        await b.close()

    asyncio.run(scenario())


def test_retried_send_gets_original_ack_and_stores_once(server: str) -> None:
    pcp, _, state = room(server)
    envelope = state.seal({"text": "once only"})

    async def scenario() -> list[dict[str, Any]]:
        (a,) = await sockets(server, pcp, case_id=state.case_id)
        first = await a.send_envelope(envelope)
        again = await a.send_envelope(envelope)
        await a.close()
        return [first, again]

    first, again = asyncio.run(scenario())
    assert (first["seq"], again["seq"], again["duplicate"]) == (1, 1, True)
    assert Message.objects.filter(case_id=state.case_id).count() == 1


def test_bad_frames_get_specific_errors_store_nothing_and_keep_socket(server: str) -> None:
    pcp, _, state = room(server)
    good = state.seal({"text": "fine"})
    wire = good.to_wire()

    async def scenario() -> list[str]:
        (a,) = await sockets(server, pcp, case_id=state.case_id)
        codes = []
        for raw in [
            "{broken",
            json.dumps({"type": "teleport"}),
            json.dumps({"type": "send", "envelope": {**wire, "sig": "%%%"}}),
            json.dumps(
                {"type": "send", "envelope": {**wire, "sig": base64.b64encode(bytes(64)).decode()}}
            ),
            json.dumps({"type": "send", "envelope": {**wire, "epoch": 9}}),
            json.dumps({"type": "send", "envelope": {k: v for k, v in wire.items() if k != "ct"}}),
            json.dumps({"type": "resume", "after": -1}),
            json.dumps([1, 2]),
        ]:
            await a.send_raw(raw)
            codes.append((await a.next("error"))["code"])
        ack = await a.send_envelope(good)
        assert ack["type"] == "ack" and ack["seq"] == 1
        await a.close()
        return codes

    codes = asyncio.run(scenario())
    assert codes == [
        "malformed_json",
        "unknown_type",
        "bad_base64",
        "bad_signature",
        "wrong_epoch",
        "bad_field",
        "bad_field",
        "malformed_frame",
    ]
    assert Message.objects.filter(case_id=state.case_id).count() == 1


@pytest.mark.hostile_input  # a frame over the size limit, on purpose
def test_oversize_frame_closes_the_room_socket(server: str) -> None:
    pcp, _, state = room(server)

    async def scenario() -> tuple[str, int | None]:
        (a,) = await sockets(server, pcp, case_id=state.case_id)
        await a.send({"type": "send", "envelope": {"ct": "A" * (70 * 1024)}})
        error = await a.next("error")
        return error["code"], await a.closed_with()

    assert asyncio.run(scenario()) == ("frame_too_large", 4413)
    assert not Message.objects.filter(case_id=state.case_id).exists()


def test_non_member_socket_is_refused_4403(server: str) -> None:
    _, _, state = room(server)
    outsider = Actor("outsider").register().go_live(server)

    async def scenario() -> int | None:
        sock = await RoomSocket.open(
            server, outsider.session_id, state.case_id, outsider.device.device_id
        )
        return await sock.closed_with()

    assert asyncio.run(scenario()) == 4403


def test_removed_member_socket_is_closed_and_new_epoch_refused_to_them(server: str) -> None:
    pcp, derm, state = room(server)

    async def connect_both() -> tuple[RoomSocket, RoomSocket]:
        a, b = await sockets(server, pcp, derm, case_id=state.case_id)
        return a, b

    async def scenario() -> None:
        a, b = await connect_both()
        await asyncio.to_thread(lambda: pcp.remove(state, derm))
        assert await b.closed_with() == 4403
        assert any(f.get("code") == "removed" for f in b.seen)
        ack = await a.send_envelope(state.seal({"text": "after removal"}))
        assert ack["epoch"] == 2
        # Reconnecting is refused; so is history of the new epoch.
        again = await RoomSocket.open(server, derm.session_id, state.case_id, derm.device.device_id)
        assert await again.closed_with() == 4403
        await a.close()

    asyncio.run(scenario())
    history = derm.call("GET", f"/api/cases/{state.case_id}/messages")
    assert history.status_code == 403


def test_resume_after_dropped_connection_returns_exactly_the_missed_messages(server: str) -> None:
    pcp, derm, state = room(server)
    derm_state = derm.cases[state.case_id]

    async def scenario() -> list[int]:
        a, b = await sockets(server, pcp, derm, case_id=state.case_id)
        await a.send_envelope(state.seal({"text": "m1"}))
        last_seen = (await b.next("message"))["seq"]
        await b.ws.close()  # dropped
        for i in range(2, 8):
            await a.send_envelope(state.seal({"text": f"m{i}"}))
        (b,) = await sockets(server, derm, case_id=state.case_id)
        got: list[int] = []
        after = last_seen
        while True:
            await b.send({"type": "resume", "after": after, "limit": 4})
            page = await b.next("messages")
            for item in page["items"]:
                derm_state.open(Envelope.from_wire(item["envelope"]))
                got.append(item["seq"])
            if not page["more"]:
                break
            after = page["items"][-1]["seq"]
        await a.close()
        await b.close()
        return got

    assert asyncio.run(scenario()) == [2, 3, 4, 5, 6, 7]


@pytest.mark.postgres
def test_two_processes_deliver_to_each_others_sockets_with_gapless_sequence() -> None:
    import os

    assert os.environ.get("REDIS_URL"), "the PostgreSQL pass runs with Redis"
    with daphne_servers(2) as (one, two):
        pcp = Actor("pcp").register().go_live(one)
        derm = Actor("derm", specialty="Dermatology").register().go_live(two)
        state = pcp.open_case()
        pcp.add(state, derm)
        derm_state = derm.join(state.case_id)
        n = 25

        async def scenario() -> tuple[list[int], list[int], list[int], list[int]]:
            (a,) = await sockets(one, pcp, case_id=state.case_id)
            (b,) = await sockets(two, derm, case_id=state.case_id)

            async def burst(sock: RoomSocket, st: Any, label: str) -> list[int]:
                acks = []
                for i in range(n):
                    acks.append((await sock.send_envelope(st.seal({"text": f"{label}{i}"})))["seq"])
                return acks

            acks_a, acks_b = await asyncio.gather(burst(a, state, "a"), burst(b, derm_state, "b"))
            # Each socket also hears its own messages; what matters is every message the
            # other process acknowledged. Read until each has heard all of them (live
            # frames may still be on their way after the last ack).
            for sock, theirs in ((a, acks_b), (b, acks_a)):
                heard = {f["seq"] for f in sock.seen if f["type"] == "message"}
                while not set(theirs) <= heard:
                    heard.add((await sock.next("message"))["seq"])
            await a.close()
            await b.close()
            seen_by_a = [f["seq"] for f in a.seen if f["type"] == "message"]
            seen_by_b = [f["seq"] for f in b.seen if f["type"] == "message"]
            return acks_a, acks_b, seen_by_a, seen_by_b

        acks_a, acks_b, seen_by_a, seen_by_b = asyncio.run(scenario())
        assert sorted(acks_a + acks_b) == list(range(1, 2 * n + 1))
        # Every message acknowledged through one process reached the other's socket,
        # once each.
        assert set(acks_a) <= set(seen_by_b) and set(acks_b) <= set(seen_by_a)
        assert len(seen_by_b) == len(set(seen_by_b)) and len(seen_by_a) == len(set(seen_by_a))


def test_revoked_device_socket_is_closed_at_once(server: str) -> None:
    _, derm, state = room(server)

    async def scenario() -> int | None:
        (b,) = await sockets(server, derm, case_id=state.case_id)
        revoked = await asyncio.to_thread(
            lambda: derm.call("POST", f"/api/devices/{derm.device.device_id}/revoke", {})
        )
        assert revoked.status_code == 200
        code = await b.closed_with()
        assert any(f.get("code") == "device_revoked" for f in b.seen)
        return code

    assert asyncio.run(scenario()) == 4403
