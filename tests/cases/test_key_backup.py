"""Key backup endpoints: sealed epoch-key items per (user, case, epoch), first one kept,
served only to a current member's active, proven device; audited without content."""

from __future__ import annotations

import os
from typing import Any

import pytest

from collab.audit.models import AuditAction, AuditEvent
from collab.cases.models import KeyBackupItem
from collab.cases.services import keybackup
from collab.crypto.keybackup import ITEM_LEN, backup_key, open_backup_item, seal_backup_item
from collab.crypto.wire import b64d, b64e
from tests.support.actor import Actor

pytestmark = pytest.mark.django_db


@pytest.fixture
def pair() -> tuple[Actor, Actor, Any]:
    pcp = Actor("pcp").register()
    derm = Actor("derm", specialty="Dermatology").register()
    state = pcp.open_case()
    assert pcp.add(state, derm).status_code == 201
    return pcp, derm, state


def item(actor: Actor, case_id: Any, epoch: int, key: bytes | None = None) -> dict[str, Any]:
    sealed = seal_backup_item(backup_key(actor.identity.uik_seed), case_id, epoch,
                              key or os.urandom(32))
    return {"case": str(case_id), "epoch": epoch, "item": b64e(sealed)}


def put(actor: Actor, items: list[dict[str, Any]]) -> Any:
    return actor.call("PUT", "/api/key-backup", {"items": items})


def test_items_round_trip_and_the_first_is_kept(pair: Any) -> None:
    pcp, _, state = pair
    k0 = os.urandom(32)
    first = put(pcp, [item(pcp, state.case_id, 0, k0), item(pcp, state.case_id, 1)])
    assert (first.status_code, first.json()) == (200, {"stored": 2, "kept": 0})
    again = put(pcp, [item(pcp, state.case_id, 0), item(pcp, state.case_id, 2)])
    assert again.json() == {"stored": 1, "kept": 1}
    page = pcp.call("GET", f"/api/key-backup?case={state.case_id}").json()
    assert [i["epoch"] for i in page["items"]] == [0, 1, 2] and page["more"] is False
    opened = open_backup_item(
        backup_key(pcp.identity.uik_seed), b64d(page["items"][0]["item"]), state.case_id, 0
    )
    assert opened == k0  # the first item for epoch 0, not the later one
    after = pcp.call("GET", f"/api/key-backup?case={state.case_id}&after=1").json()
    assert [i["epoch"] for i in after["items"]] == [2]
    stored = AuditEvent.objects.filter(action=AuditAction.KEY_BACKUP_STORED)
    assert [e.details for e in stored] == [{"count": 2, "stored": 2}, {"count": 2, "stored": 1}]
    assert AuditEvent.objects.filter(action=AuditAction.KEY_BACKUP_READ).count() == 2


def test_items_are_per_user(pair: Any) -> None:
    pcp, derm, state = pair
    put(pcp, [item(pcp, state.case_id, 0)])
    assert derm.call("GET", f"/api/key-backup?case={state.case_id}").json()["items"] == []


def test_non_member_is_refused_and_nothing_is_stored(pair: Any) -> None:
    _, _, state = pair
    outsider = Actor("out").register()
    other = outsider.open_case()
    mixed = put(outsider, [item(outsider, other.case_id, 0), item(outsider, state.case_id, 0)])
    assert (mixed.status_code, mixed.json()["error"]) == (403, "not_member")
    assert not KeyBackupItem.objects.exists()
    read = outsider.call("GET", f"/api/key-backup?case={state.case_id}")
    assert (read.status_code, read.json()["error"]) == (403, "not_member")


def test_removed_member_fetches_nothing_new(pair: Any) -> None:
    pcp, derm, state = pair
    put(derm, [item(derm, state.case_id, 1)])
    assert pcp.remove(state, derm).status_code == 201
    read = derm.call("GET", f"/api/key-backup?case={state.case_id}")
    assert (read.status_code, read.json()["error"]) == (403, "not_member")


@pytest.mark.parametrize("length", [0, ITEM_LEN - 1, ITEM_LEN + 1, 4 * ITEM_LEN])
def test_wrong_item_length_is_refused(pair: Any, length: int) -> None:
    pcp, _, state = pair
    bad = {"case": str(state.case_id), "epoch": 0, "item": b64e(bytes(length))}
    response = put(pcp, [item(pcp, state.case_id, 1), bad])
    assert response.status_code == 400 and response.json()["error"] in ("bad_length", "bad_base64")
    assert not KeyBackupItem.objects.exists()


def test_request_size_and_fields_are_bounded(pair: Any) -> None:
    pcp, _, state = pair
    too_many = [item(pcp, state.case_id, e) for e in range(keybackup.MAX_ITEMS + 1)]
    assert put(pcp, too_many).json()["error"] == "bad_field"
    assert put(pcp, []).json()["error"] == "bad_field"
    negative = {"case": str(state.case_id), "epoch": -1, "item": b64e(bytes(ITEM_LEN))}
    assert put(pcp, [negative]).json()["error"] == "bad_field"


def test_reads_are_paged(pair: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    pcp, _, state = pair
    monkeypatch.setattr(keybackup, "MAX_ITEMS", 2)
    assert put(pcp, [item(pcp, state.case_id, e) for e in range(2)]).status_code == 200
    assert put(pcp, [item(pcp, state.case_id, e) for e in range(2, 5)]).status_code == 400
    assert put(pcp, [item(pcp, state.case_id, e) for e in range(2, 4)]).status_code == 200
    assert put(pcp, [item(pcp, state.case_id, 4)]).status_code == 200
    epochs: list[int] = []
    after, more = -1, True
    while more:
        page = pcp.call("GET", f"/api/key-backup?case={state.case_id}&after={after}").json()
        assert len(page["items"]) <= 2
        epochs += [i["epoch"] for i in page["items"]]
        after, more = epochs[-1], page["more"]
    assert epochs == [0, 1, 2, 3, 4]


def test_history_epochs_follow_the_user_not_only_the_device(pair: Any) -> None:
    """A user's new device (keys from the backup) may fetch the epochs any device of its
    user had a wrap for; another member's wraps never count."""
    from collab.cases import selectors
    from tests.cases.test_revocation import second_device

    pcp, derm, state = pair
    laptop = second_device(pcp, state)  # added at epoch 2: no wraps for epochs 0 and 1
    laptop_id = laptop.device.device_id
    epochs = set(selectors.readable_epochs(case_id=state.case_id, device_id=laptop_id))
    assert {0, 1, 2} <= epochs
    assert 0 not in set(
        selectors.readable_epochs(case_id=state.case_id, device_id=derm.device.device_id)
    )
