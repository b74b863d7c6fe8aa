"""Recall through the SDK and the command line against live daphne: the sender's
recall hides the message everywhere with "recalled by the sender", drops the plaintext
the reader held, and shows in history and watch; a recall the server forges (it holds
no device key) or moves to another user's device is shown as "removed by the server"."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from collab.cases import models as m
from collab.cases.wire import ms_datetime
from collab.client.errors import ServerRefusedError, UsageError
from collab.client.recall import RECALLED, REMOVED_BY_SERVER, Removed
from collab.client.sdk import CollabClient, Received
from collab.crypto import primitives as prim
from collab.crypto.envelope import Header
from collab.crypto.recall import recall_for, sign_recall
from collab.retention.services import legal_hold_place, legal_hold_release
from tests.support.clients import PASS, new_member, reload, run_cli
from tests.support.live import daphne_servers
from tests.support.users import make_user

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker) -> Iterator[str]:
    with django_db_blocker.unblock(), daphne_servers(1) as urls:
        yield urls[0]


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLLAB_PASSPHRASE", PASS)
    monkeypatch.delenv("COLLAB_SERVER", raising=False)


def home_of(client: CollabClient) -> str:
    assert client.store is not None
    return str(client.store.path.parent)


def send(client: CollabClient, case_id: uuid.UUID, *texts: str) -> list[int]:
    async def go() -> list[int]:
        return [(await client.send_text(case_id, t)).seq for t in texts]

    return asyncio.run(go())


def pair(server: str, tmp_path: Path) -> tuple[CollabClient, CollabClient, uuid.UUID]:
    pcp = new_member(server, "pcp", tmp_path)
    derm = new_member(server, "derm", tmp_path, specialty="Dermatology")
    case_id = pcp.open_case(specialty="Dermatology")
    pcp.add_member(case_id, derm.user_id)
    return pcp, derm, case_id


def test_sender_recall_hides_the_message_for_sdk_and_cli(
        server: str, tmp_path: Path, cli_env: None) -> None:
    pcp, derm, case_id = pair(server, tmp_path)
    keep, gone = send(pcp, case_id, "stays", "sent to the wrong case")
    assert [r.text for r in derm.history(case_id)] == ["stays", "sent to the wrong case"]
    assert gone in derm._seen[case_id]  # derm holds its plaintext

    removed = pcp.recall(case_id, gone)
    assert (removed.seq, removed.verdict, removed.sender_user_id) == (gone, RECALLED, pcp.user_id)
    timeline = derm.timeline(case_id)
    assert isinstance(timeline[0], Received) and timeline[0].text == "stays"
    tomb = timeline[1]
    assert isinstance(tomb, Removed) and tomb.verdict == RECALLED
    assert tomb.describe().startswith("recalled by the sender at ")
    assert gone not in derm._seen[case_id]  # the cached plaintext is dropped
    assert [r.text for r in derm.history(case_id)] == ["stays"]
    # A fresh keystore (no cache) judges the tombstone the same way.
    assert [getattr(i, "verdict", None) for i in reload(derm).timeline(case_id)] == [
        None, RECALLED]

    code, out, err = run_cli("--home", home_of(derm), "history", str(case_id))
    assert code == 0, err
    assert "stays" in out and f"#{gone} " in out and "recalled by the sender at" in out
    assert "wrong case" not in out
    # Recalling someone else's message is refused before anything is signed or sent.
    with pytest.raises(UsageError) as refused:
        derm.recall(case_id, keep)
    assert refused.value.code == "not_sender"
    code, out, err = run_cli("--home", home_of(pcp), "recall", str(case_id), str(gone))
    assert code != 0 and "already_removed" in err
    code, out, err = run_cli("--home", home_of(pcp), "recall", str(case_id), str(keep))
    assert code == 0, err
    assert out.startswith(f"#{keep} recalled by the sender at ")
    code, out, err = run_cli("--home", home_of(derm), "watch", str(case_id), "--after", "0",
                             "--timeout", "3")
    assert code == 0, err
    assert f"-- #{keep} recalled by the sender at" in err
    assert f"-- #{gone} recalled by the sender at" in err


def test_watch_hears_a_live_recall_and_verifies_it(server: str, tmp_path: Path) -> None:
    pcp, derm, case_id = pair(server, tmp_path)
    (first,) = send(pcp, case_id, "first")
    notices: list[tuple[str, dict[str, Any]]] = []

    async def go() -> list[str]:
        stream = derm.watch(case_id, 0, on_notice=lambda k, d: notices.append((k, d)))
        got = [(await asyncio.wait_for(anext(stream), 20)).text]
        await asyncio.to_thread(pcp.recall, case_id, first)
        await pcp.send_text(case_id, "after")
        got.append((await asyncio.wait_for(anext(stream), 20)).text)
        await stream.aclose()
        return got

    assert asyncio.run(go()) == ["first", "after"]
    recalled = [d for kind, d in notices if kind == "recalled"]
    assert len(recalled) == 1 and recalled[0]["seq"] == first
    assert recalled[0]["verdict"] == RECALLED and recalled[0]["sender"] == str(pcp.user_id)


def forge_tombstone(case_id: uuid.UUID, seq: int, *, sig: bytes | None,
                    device_id: uuid.UUID | None) -> None:
    """The operator deletes a message and says its sender recalled it."""
    m.Message.objects.filter(case_id=case_id, seq=seq).update(
        ciphertext=b"", removed_at=timezone.now(), removed_reason=m.RemovedReason.RECALLED,
        recall_sig=sig, recall_device_id=device_id,
    )


def forge_signed(case_id: uuid.UUID, seq: int, device_id: uuid.UUID, seed: bytes) -> None:
    stored = m.Message.objects.get(case_id=case_id, seq=seq)
    statement = recall_for(Header.decode(bytes(stored.header)), seq=seq, device_id=device_id,
                           recalled_ms=int(timezone.now().timestamp() * 1000))
    forge_tombstone(case_id, seq, sig=sign_recall(seed, statement), device_id=device_id)
    m.Message.objects.filter(case_id=case_id, seq=seq).update(
        removed_at=ms_datetime(statement.recalled_ms))  # the time the statement signs


def test_server_forged_recalls_show_as_removed_by_the_server(
        server: str, tmp_path: Path, cli_env: None) -> None:
    pcp, derm, case_id = pair(server, tmp_path)
    no_sig, bad_sig, other_user, honest = send(pcp, case_id, "a", "b", "c", "d")
    assert len(derm.history(case_id)) == 4
    forge_tombstone(case_id, no_sig, sig=None, device_id=None)
    # The statement of the right message and device, signed with a key of the server's.
    forge_signed(case_id, bad_sig, pcp.device.device_id, prim.random_bytes(32))
    # A statement that verifies, but made by another member's device (derm's own key
    # here: a member's client could be made to sign, or the key stolen).
    forge_signed(case_id, other_user, derm.device.device_id, derm.device.dsk_seed)
    # The honest twin: the sender's own recall.
    assert pcp.recall(case_id, honest).verdict == RECALLED

    verdicts = {i.seq: (i.verdict, i.detail) for i in derm.timeline(case_id)
                if isinstance(i, Removed)}
    assert verdicts[no_sig] == (REMOVED_BY_SERVER, "")
    assert verdicts[bad_sig] == (REMOVED_BY_SERVER, "bad_signature")
    assert verdicts[other_user] == (REMOVED_BY_SERVER, "unauthorized_author")
    assert verdicts[honest] == (RECALLED, "")
    code, out, err = run_cli("--home", home_of(derm), "history", str(case_id))
    assert code == 0, err
    lines = out.splitlines()
    for seq in (no_sig, bad_sig, other_user):
        (line,) = [x for x in lines if x.startswith(f"#{seq} ")]
        assert "removed by the server" in line and "recalled by the sender" not in line
    (line,) = [x for x in lines if x.startswith(f"#{honest} ")]
    assert "recalled by the sender at" in line


def test_a_legal_hold_refuses_recall_and_its_release_allows_it(
        server: str, tmp_path: Path, cli_env: None) -> None:
    pcp, derm, case_id = pair(server, tmp_path)
    (seq,) = send(pcp, case_id, "held")
    admin = make_user("holder", role="admin")
    legal_hold_place(actor=admin, case_id=case_id)
    with pytest.raises(ServerRefusedError) as refused:
        pcp.recall(case_id, seq)
    assert (refused.value.code, refused.value.status) == ("case_on_legal_hold", 409)
    assert "legal hold" in str(refused.value)
    code, _, err = run_cli("--home", home_of(pcp), "recall", str(case_id), str(seq))
    assert code != 0 and "case_on_legal_hold" in err and "legal hold" in err
    assert [r.text for r in derm.history(case_id)] == ["held"]  # nothing changed
    assert m.Message.objects.get(case_id=case_id, seq=seq).removed_at is None
    legal_hold_release(actor=admin, case_id=case_id)
    assert pcp.recall(case_id, seq).verdict == RECALLED
    assert [getattr(i, "verdict", None) for i in derm.timeline(case_id)] == [RECALLED]
