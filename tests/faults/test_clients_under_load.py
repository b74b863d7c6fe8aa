"""Clients meeting a faulty network or a busy room: a lost ack, a reader that stalls, a
receiver offline through a hundred long messages. Same guarantees as the outages:
nothing lost or duplicated, every SDK client recovers by itself, the audit verifies."""

from __future__ import annotations

import asyncio
import collections
import json
from pathlib import Path
from typing import Any

import pytest
import websockets

from collab.client.sdk import Sent
from collab.crypto.wire import b64d
from tests.faults.harness import (
    TCP_ESTABLISHED,
    PlainSender,
    Stack,
    Watcher,
    assert_audit_verifies,
    assert_no_lost_tasks,
    assert_nothing_lost_or_duplicated,
    assert_watch_complete,
    history_reads,
    run,
    send_all,
    session_ends,
    tcp_state,
    texts,
)
from tests.support.clients import reload

pytestmark = [pytest.mark.postgres, pytest.mark.faults, pytest.mark.e2e]


class AckThief:
    """Wraps the SDK's case sockets: the next ``count`` acks the server sends are taken
    off the wire and the connection is cut, as a network failing at that moment would
    (the message is stored; its sender never hears so). ``on_theft`` runs just then."""

    def __init__(self, count: int = 1, on_theft: Any = None) -> None:
        self.left = count
        self.stolen: list[dict[str, Any]] = []
        self.on_theft = on_theft
        self.real_connect = websockets.connect

    async def connect(self, *args: Any, **kwargs: Any) -> Any:
        ws = await self.real_connect(*args, **kwargs)
        real_recv = ws.recv

        async def recv(*a: Any, **kw: Any) -> Any:
            raw = await real_recv(*a, **kw)
            if self.left and isinstance(raw, str) and '"type":"ack"' in raw:
                self.left -= 1
                self.stolen.append(json.loads(raw))
                ws.transport.abort()
                if self.on_theft is not None:
                    self.on_theft()
                return await real_recv(*a, **kw)  # the cut connection raises
            return raw

        ws.recv = recv  # type: ignore[method-assign]
        return ws


def test_lost_ack_is_retried_and_stored_once(stack: Stack, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    one = stack.daphne()
    case_id, (pcp, derm) = stack.room(tmp_path, one.url, one.url)
    thief = AckThief()
    monkeypatch.setattr(websockets, "connect", thief.connect)
    sent: list[Sent] = []

    run(send_all(pcp, case_id, ["stored once"], sent))

    assert len(thief.stolen) == 1, "the ack was not lost: the scenario did not happen"
    (ack,) = sent
    # The SDK sent the same envelope again and got the original acknowledgement.
    assert ack.duplicate, ack
    assert (ack.seq, ack.client_msg_id) == (thief.stolen[0]["seq"],
                                             b64d(thief.stolen[0]["client_msg_id"], 16))
    assert_nothing_lost_or_duplicated(case_id, sent, ["stored once"], derm)
    assert reload(pcp).outbox(case_id) == []
    assert_audit_verifies()


def test_app_restarted_after_a_lost_ack_sends_the_pending_message_once(
        stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    one = stack.daphne()
    case_id, (pcp, derm) = stack.room(tmp_path, one.url, one.url)
    # The app dies the moment its ack is lost: the envelope waits in the keystore.
    thief = AckThief(on_theft=lambda: asyncio.current_task().cancel())  # type: ignore[union-attr]
    monkeypatch.setattr(websockets, "connect", thief.connect)

    async def crashing_send() -> None:
        with pytest.raises(asyncio.CancelledError):
            await pcp.send_text(case_id, "sent before the crash")

    run(crashing_send())
    assert len(thief.stolen) == 1
    monkeypatch.undo()
    # The next run of the app sees the pending message and retries it by its id.
    again = reload(pcp)
    (pending,) = again.outbox(case_id)
    assert json.loads(json.dumps(pending["body"])) == {"text": "sent before the crash"}
    sent = [run(again.send_text(case_id, "sent before the crash", retry=pending["id"]))]
    assert sent[0].duplicate and sent[0].seq == thief.stolen[0]["seq"]
    assert_nothing_lost_or_duplicated(case_id, sent, ["sent before the crash"], derm)
    assert reload(again).outbox(case_id) == []
    assert_audit_verifies()


# A stalled reader: its server buffers what the kernel will not take until the bound.
OUTBOUND_BOUND = 256 * 1024
LONG = 24 * 1024
# Enough to fill any loopback socket buffers and then the bound (about 12 MB).
MAX_BUSY_MESSAGES = 500


def test_reader_stalled_in_a_busy_room_is_cut_off_and_resumes(stack: Stack,
                                                                tmp_path: Path) -> None:
    one = stack.daphne(COLLAB_WS_MAX_OUTBOUND_BYTES=str(OUTBOUND_BOUND))
    case_id, (pcp, derm, nurse) = stack.room(tmp_path, one.url, one.url, one.url)
    intended = texts("busy", MAX_BUSY_MESSAGES, LONG)
    sent: list[Sent] = []

    async def scenario() -> tuple[Watcher, Watcher]:
        # The stalled app takes one message and then stops reading (for as long as the
        # room keeps it busy: what would be a minute, made seconds by a small bound).
        stalled = Watcher(derm, case_id, stall_after=1)
        reader = Watcher(nurse, case_id)
        await stalled.until(lambda: stalled.connected, "the stalled watch connected")
        await reader.until(lambda: reader.connected, "the reading watch connected")
        stalled_ws = derm.rooms[case_id].ws
        wire = stalled_ws.transport.get_extra_info("socket")
        sender = await PlainSender(pcp, case_id).open(one.url)
        count = 0
        while tcp_state(wire) == TCP_ESTABLISHED:
            assert count < MAX_BUSY_MESSAGES, (
                f"the server kept a reader that stopped reading after "
                f"{count * LONG // 1024} KiB were sent to it")
            sent.append(await sender.send(intended[count]))
            count += 1
        # Cut off (too slow); the app starts reading again and the SDK resumes by itself.
        stalled.released.set()
        await stalled.until_seqs(count, "the stalled reader caught up by itself", bound=120)
        await reader.until_seqs(count, "the other member's live delivery")
        await sender.close()
        print(f"cut off after {count} messages of {LONG // 1024} KiB")
        await session_ends(stalled)
        await session_ends(reader)
        return stalled, reader

    stalled, reader = run(scenario())
    assert any(kind == "reconnecting" for kind, _ in stalled.notices), stalled.notices[-5:]
    assert_watch_complete(stalled, len(sent))
    assert_watch_complete(reader, len(sent))
    assert_nothing_lost_or_duplicated(case_id, sent, intended[: len(sent)], pcp)
    assert_no_lost_tasks(stack)
    assert_audit_verifies()


def test_receiver_offline_through_a_hundred_24kb_messages(stack: Stack,
                                                          tmp_path: Path) -> None:
    one = stack.daphne()
    case_id, (pcp, derm) = stack.room(tmp_path, one.url, one.url)
    intended = texts("long", 100, LONG)
    sent: list[Sent] = []

    async def scenario() -> Watcher:
        sender = await PlainSender(pcp, case_id).open(one.url)
        for text in intended:
            sent.append(await sender.send(text))
        await sender.close()
        # Back online: 100 x 24 KB is far over one frame; byte-capped pages get there.
        watcher = Watcher(derm, case_id)
        await watcher.until_seqs(100, "the receiver caught up over resume pages")
        # The same over HTTP history pages, following `more`.
        history = await asyncio.to_thread(derm.history, case_id)
        assert [m.text for m in history] == intended
        await session_ends(watcher)
        return watcher

    watcher = run(scenario())
    assert_watch_complete(watcher, 100)
    assert_nothing_lost_or_duplicated(case_id, sent, intended, pcp)
    # history_read audits exactly what was delivered: each message once by the socket
    # pages and once by the HTTP pages; a page that never arrived is not audited.
    reads = history_reads(derm.device.device_id, case_id)
    delivered = collections.Counter(s for first, last, _ in reads
                                    for s in range(first, last + 1))
    assert all(count == last - first + 1 for first, last, count in reads), reads
    assert delivered == {seq: 2 for seq in range(1, 101)}, reads
    assert_no_lost_tasks(stack)
    assert_audit_verifies()
