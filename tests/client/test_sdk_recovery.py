"""The SDK recovers by itself (issue 12): watch reconnects and resumes after every fault
that resuming can mend and stops on those it cannot; the outbox sends each message once
whatever happens to the connection. Against an in-process socket server that scripts the
faults (tests/client/socket_server.py)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from collab.client import sdk
from collab.client.errors import AuthError, ServerRefusedError, UnreachableError, UsageError
from collab.client.keystore import Keystore
from collab.client.room import ConnectionLostError, is_transient
from collab.client.sdk import CollabClient, Received
from tests.client.fake_server import FakeServer, Person
from tests.client.socket_server import RoomServer
from tests.support.live import free_port

PASS = "keystore passphrase for tests"


@pytest.fixture
def room() -> RoomServer:
    return RoomServer(FakeServer(), Person("alice"))


class Watcher:
    """A watch() running in a task; what it yields, its notices and how it ended."""

    def __init__(self, client: CollabClient, case_id: uuid.UUID) -> None:
        self.got: list[Received] = []
        self.notices: list[tuple[str, dict[str, Any]]] = []
        self.ended: BaseException | None = None
        self.changed = asyncio.Event()
        self.task = asyncio.create_task(self._run(client, case_id))

    async def _run(self, client: CollabClient, case_id: uuid.UUID) -> None:
        def notice(kind: str, detail: dict[str, Any]) -> None:
            self.notices.append((kind, detail))
            self.changed.set()

        try:
            async for msg in client.watch(case_id, after=0, on_notice=notice):
                self.got.append(msg)
                self.changed.set()
        except BaseException as error:  # recorded for the test to check
            self.ended = error
            self.changed.set()

    async def until(self, condition: Callable[[], bool]) -> None:
        """Wait for an event that makes ``condition`` true (no clock involved; the test's
        own timeout ends a hang)."""
        async with asyncio.timeout(20):
            while not condition():
                self.changed.clear()
                if condition():
                    return
                await self.changed.wait()

    def texts(self) -> list[str]:
        return [m.text for m in self.got]

    def kinds(self) -> list[str]:
        return [k for k, _ in self.notices]


def test_is_transient_names_exactly_what_resuming_can_mend() -> None:
    assert is_transient(ConnectionLostError("x", code="unavailable", close_code=4503))
    assert is_transient(UnreachableError("x"))
    for status in (500, 502, 503, 504):
        assert is_transient(ServerRefusedError("x", code="socket_refused", status=status))
    assert is_transient(ServerRefusedError("x", code="rate_limited", status=4429))
    # HTTP answers on the way (the log sync of a reconnect): a database outage, a proxy.
    assert is_transient(ServerRefusedError("x", code="unavailable", status=503))
    assert is_transient(ServerRefusedError("x", code="http_502", status=502))
    assert is_transient(ServerRefusedError("x", code="internal_error", status=500))
    for refused in (ServerRefusedError("x", code="socket_refused", status=404),
                    ServerRefusedError("x", code="not_member", status=403),
                    ServerRefusedError("x", code="too_large", status=413),
                    ServerRefusedError("x", code="not_member", status=4403),
                    ServerRefusedError("x", code="device_revoked", status=4403),
                    ServerRefusedError("x", code="no_case", status=4404),
                    AuthError("x", code="session_ended")):
        assert not is_transient(refused)


@pytest.mark.parametrize(("close", "error"), [(4503, "unavailable"), (4507, "too_slow"),
                                              (1011, None), (1001, None)])
def test_watch_resumes_after_a_close_that_resuming_mends(room: RoomServer, close: int,
                                                         error: str | None) -> None:
    async def flow() -> None:
        async with room.running():
            client = room.client()
            room.post("one")
            w = Watcher(client, room.case_id)
            await w.until(lambda: w.texts() == ["one"])
            await room.close_all(close, error)
            # Stored while the watcher is away: it must come from the resume page.
            room.post("two")
            room.post("three")
            await w.until(lambda: len(w.got) == 3)
            assert w.texts() == ["one", "two", "three"]
            assert [m.seq for m in w.got] == [1, 2, 3]
            lost = [d for k, d in w.notices if k == "reconnecting"]
            assert lost and lost[0]["after"] == 1
            if error:
                assert lost[0]["code"] == error
            assert room.resumes[-1][0] == 1  # resumed from the last seq it held
            assert w.ended is None
            w.task.cancel()

    asyncio.run(flow())


@pytest.mark.parametrize("status", [500, 502, 503])
def test_watch_retries_a_handshake_refused_with_a_server_error(room: RoomServer,
                                                               status: int) -> None:
    async def flow() -> None:
        async with room.running():
            room.post("one")
            room.refuse_next = [status, status, status]
            w = Watcher(room.client(), room.case_id)
            await w.until(lambda: w.texts() == ["one"])
            assert room.handshakes == 4
            assert [d["code"] for k, d in w.notices if k == "reconnecting"] == \
                ["socket_refused"] * 3
            w.task.cancel()

    asyncio.run(flow())


def test_watch_waits_out_a_database_outage_seen_over_http(room: RoomServer) -> None:
    async def flow() -> None:
        async with room.running():
            room.post("one")
            client = room.client()
            honest = client.call
            outage = [2]  # the next two log fetches answer 503 unavailable

            def call(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
                if "/log?" in path and outage[0]:
                    outage[0] -= 1
                    raise ServerRefusedError("database unreachable", code="unavailable",
                                             status=503)
                return honest(method, path, body)

            client.call = call  # type: ignore[method-assign]
            w = Watcher(client, room.case_id)
            await w.until(lambda: w.texts() == ["one"])
            assert [d["code"] for k, d in w.notices if k == "reconnecting"] == \
                ["unavailable"] * 2
            w.task.cancel()

    asyncio.run(flow())


def test_watch_waits_for_an_unreachable_server(room: RoomServer) -> None:
    port = free_port()

    async def flow() -> None:
        room.post("one")
        client = room.client()
        client.state.server = f"http://127.0.0.1:{port}"
        w = Watcher(client, room.case_id)
        # Nobody listens yet: the watcher keeps trying instead of giving up.
        await w.until(lambda: w.kinds().count("reconnecting") >= 3)
        assert all(d["code"] == "unreachable" for _, d in w.notices)
        assert w.ended is None
        async with room.running(port):
            await w.until(lambda: w.texts() == ["one"])
        w.task.cancel()

    asyncio.run(flow())


@pytest.mark.parametrize(("close", "error", "expected"), [
    (4401, "session_ended", AuthError),
    (4403, "device_revoked", ServerRefusedError),
    (4403, "not_member", ServerRefusedError),
    (4404, "no_case", ServerRefusedError),
])
def test_watch_stops_when_resuming_cannot_help(room: RoomServer, close: int, error: str,
                                               expected: type[Exception]) -> None:
    async def flow() -> None:
        async with room.running():
            room.post("one")
            w = Watcher(room.client(), room.case_id)
            await w.until(lambda: len(w.got) == 1)
            handshakes = room.handshakes
            await room.close_all(close, error)
            await w.until(lambda: w.ended is not None)
            assert isinstance(w.ended, expected)
            assert getattr(w.ended, "code", None) == error
            assert room.handshakes == handshakes  # it did not try again
            assert "reconnecting" not in w.kinds()

    asyncio.run(flow())


def test_a_resync_hello_beyond_what_the_watcher_holds_resumes(room: RoomServer) -> None:
    async def flow() -> None:
        async with room.running():
            room.post("one")
            w = Watcher(room.client(), room.case_id)
            await w.until(lambda: len(w.got) == 1)
            resumes = len(room.resumes)
            # A hello that says nothing new: no resume.
            await room.broadcast(room.hello(resync=True))
            await w.until(lambda: "resync" in w.kinds())
            assert len(room.resumes) == resumes
            # Committed during a channel-layer outage, never announced; then the resync.
            room.post("two")
            room.post("three")
            await room.broadcast(room.hello(resync=True))
            await w.until(lambda: len(w.got) == 3)
            assert w.texts() == ["one", "two", "three"]
            assert room.resumes[-1][0] == 1
            w.task.cancel()

    asyncio.run(flow())


def test_catch_up_follows_more_and_a_page_that_never_arrives_gets_smaller(
        room: RoomServer) -> None:
    async def flow() -> None:
        async with room.running():
            for i in range(12):
                room.post(f"m{i}")
            # A server without byte-capped pages: any page of more than 3 is too large
            # to deliver and the socket closes (1011); the watcher must not ask for the
            # same page forever.
            room.page_limit_ok = 3
            w = Watcher(room.client(), room.case_id)
            await w.until(lambda: len(w.got) == 12)
            assert w.texts() == [f"m{i}" for i in range(12)]
            limits = [limit for _, limit in room.resumes]
            # A quarter each time, until a page fits; never a larger one after that.
            shrinking = [sdk.RESUME_PAGE]
            while shrinking[-1] > 3:
                shrinking.append(max(1, shrinking[-1] // 4))
            assert limits[: len(shrinking)] == shrinking
            assert all(limit <= 3 for limit in limits[len(shrinking) - 1 :])
            w.task.cancel()

    asyncio.run(flow())


def test_the_same_page_with_more_but_no_progress_is_not_asked_again(room: RoomServer) -> None:
    async def flow() -> None:
        async with room.running():
            client = room.client()
            item = room.post("one")
            connection = await client.connect(room.case_id)
            calls: list[int] = []

            async def lying_resume(after: int, limit: int = 50,
                                   timeout: float = 30) -> dict[str, Any]:
                calls.append(after)
                return {"type": "messages", "items": [item], "more": True}

            connection.resume = lying_resume  # type: ignore[method-assign]
            await asyncio.to_thread(client.sync, room.case_id)
            got = [m async for m in client._catch_up(connection, room.case_id, 0)]
            assert [m.text for m in got] == ["one"]
            assert calls == [0, 1]  # the second page moved nothing: stop
            await connection.close()

    asyncio.run(flow())


# --- the outbox ----------------------------------------------------------------------------

def test_a_lost_ack_is_retried_with_the_same_envelope_and_stored_once(room: RoomServer) -> None:
    async def flow() -> None:
        async with room.running():
            client = room.client()
            room.send_script = ["drop_after_store"]
            sent = await client.send_text(room.case_id, "biopsy booked")
            assert len(room.sends) == 2
            assert room.sends[0] == room.sends[1]  # the very same envelope
            assert len(room.stored) == 1 and sent.seq == 1 and sent.duplicate
            assert client.outbox() == []

    asyncio.run(flow())


def test_a_send_waits_out_a_server_restarting_under_its_http_calls(room: RoomServer) -> None:
    async def flow() -> None:
        async with room.running():
            client = room.client()
            honest = client.call
            down = [3]  # the next three HTTP calls find nobody listening

            def call(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
                if down[0]:
                    down[0] -= 1
                    raise UnreachableError("connection refused")
                return honest(method, path, body)

            client.call = call  # type: ignore[method-assign]
            sent = await client.send_text(room.case_id, "during the restart")
            assert down == [0] and sent.seq == 1 and len(room.stored) == 1

    asyncio.run(flow())


def test_an_app_retrying_a_failed_send_by_its_id_sends_the_pending_message(
        room: RoomServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sdk, "SEND_ATTEMPTS", 1)

    async def flow() -> None:
        async with room.running():
            store = Keystore.create(tmp_path / "keystore.json", PASS)
            client = room.client()
            store.state = client.state
            client.store = store
            room.send_script = ["drop_after_store"]
            with pytest.raises(ConnectionLostError) as lost:
                await client.send_text(room.case_id, "biopsy booked")
            (pending,) = client.outbox(room.case_id)
            assert lost.value.pending_id == pending["id"]  # the error names it
            assert len(room.stored) == 1  # stored; the app does not know
            # A restart: the outbox is in the keystore.
            again = room.client()
            again.store = Keystore.load(tmp_path / "keystore.json", PASS)
            again.state = again.store.state
            again.state.server = room.url
            assert again.outbox(room.case_id) == [pending]
            # A retry must be of the same message.
            with pytest.raises(UsageError) as mismatch:
                await again.send_text(room.case_id, "biopsy cancelled", retry=pending["id"])
            assert mismatch.value.code == "retry_mismatch" and len(room.sends) == 1
            sent = await again.send_text(room.case_id, "biopsy booked", retry=pending["id"])
            assert sent.duplicate and sent.seq == 1 and len(room.stored) == 1
            assert room.sends[0] == room.sends[1]
            assert again.outbox() == []
            # Retried once more (the app lost this answer too): the same ack, nothing sent.
            assert await again.send_text(room.case_id, "biopsy booked",
                                         retry=pending["id"]) == sent
            assert len(room.sends) == 2
            # Sent again on purpose: a new message.
            second = await again.send_text(room.case_id, "biopsy booked")
            assert (second.seq, second.duplicate, len(room.stored)) == (2, False, 2)

    asyncio.run(flow())


def test_the_same_text_sent_while_an_identical_one_is_pending_is_a_second_message(
        room: RoomServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Clinical: "Yes" twice is two answers. A plain send never stands in for a pending
    message with the same content, nor returns its ack."""
    monkeypatch.setattr(sdk, "SEND_ATTEMPTS", 1)

    async def flow() -> None:
        async with room.running():
            client = room.client()
            room.send_script = ["refuse:rate_limited"]
            with pytest.raises(ServerRefusedError) as first:
                await client.send_text(room.case_id, "Yes")
            assert first.value.pending_id is not None
            second = await client.send_text(room.case_id, "Yes")  # flushes the first too
            texts = [client.open_item(room.case_id, i).text for i in room.stored]
            assert texts == ["Yes", "Yes"] and second.seq == 2 and not second.duplicate
            ids = {i["envelope"]["client_msg_id"] for i in room.stored}
            assert len(ids) == 2 and client.outbox() == []
            # The first, retried by its id, gets its own ack (delivered by that flush).
            again = await client.send_text(room.case_id, "Yes", retry=first.value.pending_id)
            assert again.seq == 1 and len(room.stored) == 2
            # A third identical text is a third message.
            assert (await client.send_text(room.case_id, "Yes")).seq == 3

    asyncio.run(flow())


def test_a_retry_of_an_unknown_id_sends_nothing(room: RoomServer) -> None:
    async def flow() -> None:
        async with room.running():
            client = room.client()
            with pytest.raises(UsageError) as unknown:
                await client.send_text(room.case_id, "hello", retry="bm90LWFuLWlk")
            assert unknown.value.code == "not_pending" and room.sends == []

    asyncio.run(flow())


def test_pending_messages_go_first_and_in_order(room: RoomServer,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sdk, "SEND_ATTEMPTS", 1)
    port = free_port()

    async def flow() -> None:
        client = room.client()
        client.state.server = f"http://127.0.0.1:{port}"  # unreachable for now
        for text in ("first", "second"):
            with pytest.raises(UnreachableError):
                await client.send_text(room.case_id, text)
        assert [e["body"]["text"] for e in client.outbox()] == ["first", "second"]
        async with room.running(port):
            sent = await client.send_text(room.case_id, "third")
        texts = [client.open_item(room.case_id, i).text for i in room.stored]
        assert texts == ["first", "second", "third"]
        seqs = [i["envelope"]["sender_seq"] for i in room.stored]
        assert seqs == sorted(seqs) and len(set(seqs)) == 3
        assert sent.seq == 3 and client.outbox() == []

    asyncio.run(flow())


def test_a_message_refused_because_the_log_moved_is_sealed_again_with_its_ids(
        room: RoomServer) -> None:
    async def flow() -> None:
        async with room.running():
            client = room.client()
            room.send_script = ["refuse:wrong_epoch"]
            sent = await client.send_text(room.case_id, "after the rotation")
            first, second = room.sends
            assert first["client_msg_id"] == second["client_msg_id"] == \
                room.stored[0]["envelope"]["client_msg_id"]
            assert first["sender_seq"] == second["sender_seq"]
            assert first["nonce"] != second["nonce"]  # sealed anew
            assert sent.seq == 1 and not sent.duplicate

    asyncio.run(flow())


def test_a_message_refused_for_good_leaves_the_outbox(room: RoomServer) -> None:
    async def flow() -> None:
        async with room.running():
            client = room.client()
            room.send_script = ["refuse:not_member"]
            with pytest.raises(ServerRefusedError) as refused:
                await client.send_text(room.case_id, "hello")
            assert refused.value.code == "not_member"
            assert refused.value.pending_id is None  # nothing waits
            assert client.outbox() == [] and room.stored == []
            # Its sender_seq is free again: no false gap for the next message.
            sent = await client.send_text(room.case_id, "hello again")
            assert room.stored[0]["envelope"]["sender_seq"] == room.sends[0]["sender_seq"]
            assert sent.seq == 1

    asyncio.run(flow())


def test_a_socket_closed_during_a_send_keeps_the_message(room: RoomServer) -> None:
    async def flow() -> None:
        async with room.running():
            client = room.client()
            room.send_script = ["hold"]  # the server takes the frame and answers nothing
            task = asyncio.create_task(client.send_text(room.case_id, "maybe stored"))
            async with asyncio.timeout(20):
                while not room.sends:
                    await asyncio.sleep(0.01)
            await room.close_all(4403, "not_member")
            with pytest.raises(ServerRefusedError) as refused:
                await task
            assert refused.value.status == 4403
            # Not an answer to the send: it may have been stored, so it is not dropped.
            (pending,) = client.outbox(room.case_id)
            assert refused.value.pending_id == pending["id"]

    asyncio.run(flow())


def test_a_watcher_delivers_what_is_pending_after_it_reconnects(
        room: RoomServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sdk, "SEND_ATTEMPTS", 1)

    async def flow() -> None:
        async with room.running():
            client = room.client()
            room.send_script = ["refuse:rate_limited"]
            with pytest.raises(ServerRefusedError) as failed:
                await client.send_text(room.case_id, "while throttled")
            assert len(client.outbox()) == 1 and room.stored == []
            w = Watcher(client, room.case_id)
            await w.until(lambda: w.texts() == ["while throttled"])
            assert client.outbox() == [] and len(room.stored) == 1
            # The app, told the send failed, retries it by its id: delivered meanwhile, so
            # it gets that ack and nothing is sent twice.
            again = await client.send_text(room.case_id, "while throttled",
                                           retry=failed.value.pending_id)
            assert again.seq == 1 and len(room.stored) == 1 and len(room.sends) == 2
            # The same text once more is a new message.
            assert (await client.send_text(room.case_id, "while throttled")).seq == 2
            w.task.cancel()

    asyncio.run(flow())
