"""History pages are capped by bytes as well as by count (socket ``resume`` and
``GET /api/cases/<id>/messages``), ``more`` is honest, and ``history_read`` audits
exactly the pages delivered. Real daphne, long (24 KB) messages."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from collab.audit.models import AuditAction, AuditEvent
from collab.cases.services.messages import message_send
from tests.support.actor import Actor
from tests.support.live import daphne_servers
from tests.support.ws import RoomSocket

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

CAP = 150_000  # bytes of serialized items a page (about four 24 KB messages)


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock(), daphne_servers(
        1, COLLAB_HISTORY_PAGE_MAX_BYTES=str(CAP)
    ) as urls:
        yield urls[0]


def room_with(server: str, count: int, size: int) -> tuple[Actor, Any]:
    """A case of one member with ``count`` stored messages of ``size`` text bytes."""
    pcp = Actor("pcp").register().go_live(server)
    state = pcp.open_case()
    for i in range(count):
        envelope = state.seal({"text": f"{i:04d}" + "x" * size})
        message_send(user=pcp.user, device_id=pcp.device.device_id, case_id=state.case_id,
                     envelope=envelope)
    return pcp, state


def items_bytes(items: list[dict[str, Any]]) -> int:
    return len(json.dumps(items, separators=(",", ":")))


def audited_pages(pcp: Actor, state: Any) -> list[tuple[int, int, int]]:
    return [
        (e.details["from_seq"], e.details["to_seq"], e.details["count"])
        for e in AuditEvent.objects.filter(
            action=AuditAction.HISTORY_READ, case_id=state.case_id, device_id=pcp.device.device_id
        ).order_by("seq")
    ]


async def resume_all(server: str, pcp: Actor, state: Any, limit: int) -> list[dict[str, Any]]:
    sock = await RoomSocket.open(server, pcp.session_id, state.case_id, pcp.device.device_id)
    await sock.next("hello")
    pages, after = [], 0
    while True:
        await sock.send({"type": "resume", "after": after, "limit": limit})
        page = await sock.next("messages")
        pages.append(page)
        if not page["more"]:
            break
        after = page["items"][-1]["seq"]
    # Frames are handled in order: the pong means the last page's audit is written.
    await sock.send({"type": "ping"})
    await sock.next("pong")
    await sock.close()
    return pages


def test_resume_pages_are_capped_by_bytes_and_audited_as_delivered(server: str) -> None:
    pcp, state = room_with(server, 20, 24_000)
    pages = asyncio.run(resume_all(server, pcp, state, limit=200))
    seqs = [item["seq"] for page in pages for item in page["items"]]
    assert seqs == list(range(1, 21))  # everything, once, in order
    assert len(pages) > 1
    for page in pages:
        assert page["items"]  # never an empty page while messages remain
        assert items_bytes(page["items"]) <= CAP
    assert [p["more"] for p in pages] == [True] * (len(pages) - 1) + [False]
    assert audited_pages(pcp, state) == [
        (p["items"][0]["seq"], p["items"][-1]["seq"], len(p["items"])) for p in pages
    ]


def test_more_is_false_when_a_full_page_ends_at_the_last_message(server: str) -> None:
    pcp, state = room_with(server, 4, 10)
    (page,) = asyncio.run(resume_all(server, pcp, state, limit=4))
    assert [i["seq"] for i in page["items"]] == [1, 2, 3, 4]
    assert page["more"] is False
    answer = pcp.call("GET", f"/api/cases/{state.case_id}/messages?after=0&limit=4")
    assert answer.status_code == 200
    assert [m["seq"] for m in answer.json()["messages"]] == [1, 2, 3, 4]
    assert answer.json()["more"] is False
    # And true when exactly one more exists.
    answer = pcp.call("GET", f"/api/cases/{state.case_id}/messages?after=0&limit=3")
    assert answer.json()["more"] is True


def test_http_history_pages_are_capped_by_bytes(server: str) -> None:
    pcp, state = room_with(server, 12, 24_000)
    got, after, pages = [], 0, 0
    while True:
        answer = pcp.call("GET", f"/api/cases/{state.case_id}/messages?after={after}&limit=200")
        assert answer.status_code == 200
        body = answer.json()
        assert body["messages"] and items_bytes(body["messages"]) <= CAP
        got += [m["seq"] for m in body["messages"]]
        pages += 1
        if not body["more"]:
            break
        after = body["messages"][-1]["seq"]
    assert got == list(range(1, 13))
    assert pages >= 3
    assert sum(count for _, _, count in audited_pages(pcp, state)) == 12


def test_a_message_larger_than_the_cap_still_comes_alone() -> None:
    with daphne_servers(1, COLLAB_HISTORY_PAGE_MAX_BYTES="1000") as (base,):
        pcp, state = room_with(base, 3, 5_000)
        pages = asyncio.run(resume_all(base, pcp, state, limit=100))
    assert [[i["seq"] for i in p["items"]] for p in pages] == [[1], [2], [3]]
    assert [p["more"] for p in pages] == [True, True, False]
