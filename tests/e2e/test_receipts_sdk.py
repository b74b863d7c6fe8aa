"""The SDK's receipts against a real daphne process: watch() reports what it received
with the ``delivered`` frame (debounced, others' messages only), ``receipts(case)`` reads
every member's stored marks back, and the CLI prints them."""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from collab.cases.models import DeliveredMark, Member, Message, ReadMark, UrgentAck
from collab.client import cli
from collab.client.errors import ServerRefusedError
from collab.client.sdk import CollabClient, Received
from collab.crypto.roster import Role
from tests.e2e.test_client_e2e import PASS, new_member, until
from tests.support.live import daphne_servers
from tests.support.users import PASSWORD, make_user

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker) -> Iterator[str]:
    with django_db_blocker.unblock(), daphne_servers(1) as urls:
        yield urls[0]


def delivered(case_id: uuid.UUID, client: CollabClient) -> int:
    mark = DeliveredMark.objects.filter(case_id=case_id, user_id=client.user_id).first()
    return mark.up_to if mark is not None else 0


def test_watch_reports_delivered_and_receipts_read_the_stored_marks(
    server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The marks are read from this test's database thread inside the asyncio flow.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "1")
    pcp = new_member(server, "pcp_rc", tmp_path)
    derm = new_member(server, "derm_rc", tmp_path, specialty="Dermatology")
    case_id = pcp.open_case(specialty="Dermatology")
    pcp.add_member(case_id, derm.user_id)
    derm.sync(case_id)
    got: list[Received] = []

    async def flow() -> None:
        async def watcher() -> None:
            async for message in derm.watch(case_id, after=0):
                got.append(message)

        task = asyncio.create_task(watcher())
        await until(lambda: case_id in derm.rooms)
        room = await pcp.connect(case_id)
        for i in range(4):
            await pcp.send_text(case_id, f"burst {i}", room=room)
        await until(lambda: len(got) == 4)
        # One debounced report covers the burst.
        await until(lambda: delivered(case_id, derm) == 4)
        await derm.rooms[case_id].mark_read(2)
        await until(lambda: ReadMark.objects.filter(case_id=case_id, user_id=derm.user_id,
                                                    up_to=2).exists())
        # The sender's own watcher never reports its own messages as delivered to it.
        await room.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(flow())
    assert delivered(case_id, pcp) == 0
    receipts = pcp.receipts(case_id)
    assert receipts.last_seq == 4
    names = {pcp.user_id: "me", derm.user_id: "Dr Derm"}.__getitem__
    assert receipts.summary(1, pcp.user_id, names) == "Read by Dr Derm"
    assert receipts.summary(3, pcp.user_id, names) == "Delivered to Dr Derm"
    assert receipts.acknowledged == {}  # no urgent message in this case

    monkeypatch.setenv("COLLAB_PASSPHRASE", PASS)
    monkeypatch.setenv("COLLAB_PASSWORD", PASSWORD)
    monkeypatch.setenv("COLLAB_SERVER", server)
    out = io.StringIO()
    home = str(tmp_path / "pcp_rc")
    assert cli.main(["--home", home, "receipts", str(case_id), "--seq", "3"], out=out,
                    err=io.StringIO()) == 0, out.getvalue()
    assert out.getvalue().startswith("#3 Delivered to ")
    out = io.StringIO()
    assert cli.main(["--home", home, "receipts", str(case_id)], out=out,
                    err=io.StringIO()) == 0
    assert "read up to #2" in out.getvalue() and "delivered up to #4" in out.getvalue()


def test_receipts_are_refused_to_an_outsider(server: str, tmp_path: Path) -> None:
    pcp = new_member(server, "pcp_ro", tmp_path)
    outsider = new_member(server, "out_ro", tmp_path)
    case_id = pcp.open_case(specialty="Dermatology")
    with pytest.raises(ServerRefusedError) as refused:
        outsider.receipts(case_id)
    assert refused.value.code == "not_member"


def test_receipts_name_only_users_of_the_verified_roster(
    server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lying server (its database written directly) lists an outsider as a member who
    read and acknowledged an urgent message: the SDK and the CLI never show them, while
    the real member's receipts still are. Also the words: "as reported by the server"."""
    pcp = new_member(server, "pcp_rl", tmp_path)
    derm = new_member(server, "derm_rl", tmp_path, specialty="Dermatology")
    outsider = make_user("mallory_rl")
    case_id = pcp.open_case(specialty="Dermatology")
    pcp.add_member(case_id, derm.user_id)

    async def send() -> None:
        await pcp.send_text(case_id, "please look")

    asyncio.run(send())
    Message.objects.filter(case_id=case_id, seq=1).update(urgent=True)
    message = Message.objects.get(case_id=case_id, seq=1)
    Member.objects.create(case_id=case_id, user=outsider, role=Role.MEMBER)
    for mark in (ReadMark, DeliveredMark):
        mark.objects.create(case_id=case_id, user=outsider, up_to=1)
    UrgentAck.objects.create(message=message, user=outsider)
    UrgentAck.objects.create(message=message, user_id=derm.user_id)

    receipts = pcp.receipts(case_id)
    assert {m.user_id for m in receipts.members} == {pcp.user_id, derm.user_id}
    assert [user for user, _ in receipts.acknowledged[1]] == [derm.user_id]
    names = {pcp.user_id: "me", derm.user_id: "Dr Derm"}.__getitem__  # KeyError if anyone else
    assert receipts.summary(1, pcp.user_id, names) == "Acknowledged by Dr Derm"

    monkeypatch.setenv("COLLAB_PASSPHRASE", PASS)
    monkeypatch.setenv("COLLAB_PASSWORD", PASSWORD)
    monkeypatch.setenv("COLLAB_SERVER", server)
    home = str(tmp_path / "pcp_rl")
    for extra in ([], ["--json"], ["--seq", "1"]):
        out = io.StringIO()
        assert cli.main(["--home", home, "receipts", str(case_id), *extra], out=out,
                        err=io.StringIO()) == 0, out.getvalue()
        text = out.getvalue()
        assert str(outsider.pk) not in text and "mallory" not in text.lower(), text
        assert str(derm.user_id) in text or "Derm_Rl" in text, text
        assert extra == ["--json"] or "as reported by the server" in text, text
