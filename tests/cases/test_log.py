"""Opening cases and the membership log: every server check, positive and negative."""

from __future__ import annotations

import dataclasses
import json
import uuid
from typing import Any

import pytest

from collab.cases import selectors
from collab.cases.models import Case, KeyWrap, LogEntry, Member
from collab.cases.selectors import log_entry_size
from collab.cases.wire import log_entry_wire
from collab.client.case_state import CaseState, VerifiedHead
from collab.client.keys import DeviceKeys
from collab.crypto.actions import AddUserBody, RotateBody
from collab.crypto.errors import CryptoError
from collab.crypto.log import LogEntry as CryptoLogEntry
from collab.crypto.log import build_entry
from collab.crypto.roster import Role
from collab.crypto.wire import b64d, b64e
from tests.support.actor import Actor

pytestmark = pytest.mark.django_db


@pytest.fixture
def pcp() -> Actor:
    return Actor("pcp", specialty="Family medicine").register()


@pytest.fixture
def derm() -> Actor:
    return Actor("derm", specialty="Dermatology").register()


def test_open_case_stores_only_metadata_and_genesis(pcp: Actor) -> None:
    state = pcp.open_case(specialty="Dermatology", urgency="urgent")
    case = Case.objects.get(pk=state.case_id)
    assert (case.specialty, case.urgency, case.status, case.opened_by_id) == (
        "Dermatology",
        "urgent",
        "requested",
        pcp.user.pk,
    )
    assert case.head_epoch == 0
    assert bytes(case.head_hash) == state.head.entry_hash()
    assert LogEntry.objects.filter(case=case).count() == 1
    assert KeyWrap.objects.filter(case=case, device_id=pcp.device.device_id).count() == 1
    listed = pcp.call("GET", "/api/cases").json()["cases"]
    assert [c["id"] for c in listed] == [str(state.case_id)]


def test_case_list_shows_only_own_cases(pcp: Actor, derm: Actor) -> None:
    pcp.open_case()
    assert derm.call("GET", "/api/cases").json()["cases"] == []


def test_patient_cannot_open_a_case() -> None:
    patient = Actor("pat", role="patient").register()
    state = CaseState(uuid.uuid4(), patient.device)
    genesis = state.genesis(patient.cert, patient.identity.uik_pub)
    response = patient.call("POST", "/api/cases", {"genesis": b64e(genesis.encode())})
    assert response.status_code == 403
    assert response.json()["error"] == "providers_only"
    assert not Case.objects.exists()


def test_genesis_with_bad_signature_is_refused(pcp: Actor) -> None:
    state = CaseState(uuid.uuid4(), pcp.device)
    genesis = state.genesis(pcp.cert, pcp.identity.uik_pub)
    forged = dataclasses.replace(genesis, signature=bytes(64))
    response = pcp.call("POST", "/api/cases", {"genesis": b64e(forged.encode())})
    assert response.status_code == 400
    assert response.json()["error"] == "bad_signature"
    assert not Case.objects.exists()


def test_genesis_with_unregistered_device_is_refused(pcp: Actor) -> None:
    stranger = DeviceKeys.generate(pcp.user.pk)
    state = CaseState(uuid.uuid4(), stranger)
    genesis = state.genesis(pcp.identity.certify(stranger), pcp.identity.uik_pub)
    response = pcp.client.post(
        "/api/cases",
        data={"genesis": b64e(genesis.encode())},
        content_type="application/json",
        HTTP_X_COLLAB_DEVICE=str(stranger.device_id),
    )
    assert response.status_code == 403
    assert response.json()["error"] == "unknown_device"


def test_bad_base64_is_refused(pcp: Actor) -> None:
    response = pcp.call("POST", "/api/cases", {"genesis": "!!not base64!!"})
    assert response.status_code == 400
    assert response.json()["error"] == "bad_base64"


def test_owner_adds_member_who_then_reads_the_log(pcp: Actor, derm: Actor) -> None:
    state = pcp.open_case()
    assert pcp.add(state, derm).status_code == 201
    joined = derm.join(state.case_id)
    assert joined.head.epoch == 1
    assert 1 in joined.keys and 0 not in joined.keys  # no history by default
    assert Member.objects.filter(case_id=state.case_id).count() == 2


def test_stale_head_gets_409_with_current_head(pcp: Actor, derm: Actor) -> None:
    state = pcp.open_case()
    genesis = state.head
    assert pcp.add(state, derm).status_code == 201
    # A second author still building on the genesis.
    late, _ = build_entry(
        genesis,
        RotateBody(),
        author_seed=pcp.device.dsk_seed,
        author_user_id=pcp.user.pk,
        author_device_id=pcp.device.device_id,
        created_ms=1,
    )
    response = pcp.call("POST", f"/api/cases/{state.case_id}/log", {"entry": b64e(late.encode())})
    assert response.status_code == 409
    body = response.json()
    assert body["error"] == "stale_head"
    assert body["head"] == {"epoch": 1, "hash": b64e(state.head.entry_hash())}
    assert LogEntry.objects.filter(case_id=state.case_id).count() == 2


def test_retried_entry_is_idempotent(pcp: Actor, derm: Actor) -> None:
    state = pcp.open_case()
    entry = state.next_entry(RotateBody())
    path = f"/api/cases/{state.case_id}/log"
    first = pcp.call("POST", path, {"entry": b64e(entry.encode())})
    again = pcp.call("POST", path, {"entry": b64e(entry.encode())})
    # A replay (a retry after a lost answer) is a success marked as such, not a 409.
    assert (first.status_code, again.status_code) == (201, 200)
    assert (first.json()["duplicate"], again.json()["duplicate"]) == (False, True)
    assert {**first.json(), "duplicate": True} == again.json()
    assert first.json()["entry"] == b64e(entry.encode())
    assert LogEntry.objects.filter(case_id=state.case_id).count() == 2


def test_other_entry_at_a_committed_epoch_is_stale_not_a_replay(pcp: Actor) -> None:
    state = pcp.open_case()
    genesis = state.head
    path = f"/api/cases/{state.case_id}/log"
    assert pcp.call("POST", path, {"entry": b64e(state.next_entry(RotateBody()).encode())}
                    ).status_code == 201
    # Same epoch, other bytes (another created_ms): a lost race, never a duplicate.
    rival, _ = build_entry(
        genesis, RotateBody(), author_seed=pcp.device.dsk_seed, author_user_id=pcp.user.pk,
        author_device_id=pcp.device.device_id, created_ms=2,
    )
    response = pcp.call("POST", path, {"entry": b64e(rival.encode())})
    assert response.status_code == 409
    assert response.json()["error"] == "stale_head"
    assert "duplicate" not in response.json()


def test_member_who_is_not_manager_cannot_add_users(pcp: Actor, derm: Actor) -> None:
    third = Actor("onc", specialty="Oncology").register()
    state = pcp.open_case()
    pcp.add(state, derm, Role.MEMBER)
    derm_state = derm.join(state.case_id)
    response = derm.add(derm_state, third, forged=True)
    assert response.status_code == 403
    assert response.json()["error"] == "unauthorized_author"
    assert not Member.objects.filter(case_id=state.case_id, user=third.user).exists()


def test_non_member_cannot_submit_or_read_log(pcp: Actor, derm: Actor) -> None:
    state = pcp.open_case()
    stranger_state = CaseState(state.case_id, derm.device)
    stranger_state.accept_entries([state.head])  # a leaked genesis
    response = derm.submit(stranger_state, RotateBody(), forged=True)
    # Refused as a non-member before the entry is even parsed (collab.cases.access).
    assert response.status_code == 403
    assert response.json()["error"] == "not_member"
    assert derm.call("GET", f"/api/cases/{state.case_id}/log").status_code == 403
    assert derm.call("GET", f"/api/cases/{state.case_id}/messages").status_code == 403


def test_entry_authored_for_another_user_is_refused(pcp: Actor, derm: Actor) -> None:
    state = pcp.open_case()
    assert pcp.add(state, derm).status_code == 201
    entry = state.next_entry(RotateBody())
    response = derm.call("POST", f"/api/cases/{state.case_id}/log", {"entry": b64e(entry.encode())})
    assert response.status_code == 403
    assert response.json()["error"] == "wrong_author"


def test_adding_an_unregistered_device_is_refused(pcp: Actor, derm: Actor) -> None:
    state = pcp.open_case()
    ghost = DeviceKeys.generate(derm.user.pk)
    body = AddUserBody(
        derm.user.pk, Role.MEMBER, derm.identity.uik_pub, (derm.cert, derm.identity.certify(ghost))
    )
    response = pcp.submit(state, body)
    assert response.status_code == 400
    assert response.json()["error"] == "unregistered_device"


def test_adding_a_user_with_a_foreign_identity_key_is_refused(pcp: Actor, derm: Actor) -> None:
    # A server (or client) swapping in a key the user never registered.
    from collab.client.keys import Identity

    impostor = Identity.generate(derm.user.pk)
    device = DeviceKeys.generate(derm.user.pk)
    body = AddUserBody(derm.user.pk, Role.MEMBER, impostor.uik_pub, (impostor.certify(device),))
    response = pcp.submit(pcp.open_case(), body)
    assert response.status_code == 400
    assert response.json()["error"] == "unregistered_identity"


def test_removed_member_cannot_read_log_or_wraps(pcp: Actor, derm: Actor) -> None:
    state = pcp.open_case()
    pcp.add(state, derm)
    assert pcp.remove(state, derm).status_code == 201
    assert derm.call("GET", f"/api/cases/{state.case_id}/log").status_code == 403
    assert derm.call("GET", f"/api/cases/{state.case_id}/wraps").status_code == 403
    assert not KeyWrap.objects.filter(
        case_id=state.case_id, epoch=2, device_id=derm.device.device_id
    ).exists()


def test_wraps_are_the_callers_own(pcp: Actor, derm: Actor) -> None:
    state = pcp.open_case()
    pcp.add(state, derm)
    wraps = derm.call("GET", f"/api/cases/{state.case_id}/wraps").json()["wraps"]
    assert [w["epoch"] for w in wraps] == [1]
    response = derm.client.get(
        f"/api/cases/{state.case_id}/wraps", HTTP_X_COLLAB_DEVICE=str(pcp.device.device_id)
    )
    assert response.status_code == 403


def test_join_claim_and_invite_rules(pcp: Actor, derm: Actor) -> None:
    onc = Actor("onc", specialty="Oncology").register()
    state = pcp.open_case(specialty="Dermatology")
    path = f"/api/cases/{state.case_id}/join-requests"
    assert onc.call("POST", path, {"kind": "claim"}).json()["error"] == "wrong_specialty"
    assert derm.call("POST", path, {"kind": "claim"}).status_code == 201
    assert derm.call("POST", path, {"kind": "claim"}).json()["error"] == "already_requested"
    # Only a manager names a colleague.
    assert onc.call("POST", path, {"kind": "invite", "user": str(onc.user.pk)}).status_code == 403
    assert pcp.call("POST", path, {"kind": "invite", "user": str(onc.user.pk)}).status_code == 201
    pending = pcp.call("GET", path).json()["join_requests"]
    assert {p["user"] for p in pending} == {str(derm.user.pk), str(onc.user.pk)}
    # Committing the add resolves the request.
    pcp.add(state, derm)
    pending = pcp.call("GET", path).json()["join_requests"]
    assert {p["user"] for p in pending} == {str(onc.user.pk)}


def test_patients_see_no_provider_directory(pcp: Actor) -> None:
    patient = Actor("pat", role="patient").register()
    response = patient.call("GET", f"/api/users/{pcp.user.pk}/keys")
    assert response.status_code == 403
    assert response.json()["error"] == "patients_no_directory"


def test_history_refuses_a_device_that_is_not_the_callers(pcp: Actor, derm: Actor) -> None:
    state = pcp.open_case()
    pcp.add(state, derm)
    response = derm.client.get(
        f"/api/cases/{state.case_id}/messages", HTTP_X_COLLAB_DEVICE=str(pcp.device.device_id)
    )
    assert response.status_code == 403
    assert response.json()["error"] == "unknown_device"


def _log_pages(actor: Actor, case_id: uuid.UUID) -> list[dict[str, Any]]:
    """Every page of GET /log, following ``more``."""
    pages, after = [], -1
    while True:
        page = actor.call("GET", f"/api/cases/{case_id}/log?after={after}").json()
        pages.append(page)
        if not page["more"]:
            return pages
        after = page["entries"][-1]["epoch"]


def test_log_pages_are_capped_by_bytes_and_more_is_honest(pcp: Actor, settings: Any) -> None:
    state = pcp.open_case()
    for _ in range(4):
        assert pcp.submit(state, RotateBody()).status_code == 201
    raws = [len(bytes(r)) for r in LogEntry.objects.filter(case_id=state.case_id)
            .order_by("epoch").values_list("raw", flat=True)]
    settings.LOG_PAGE_MAX_BYTES = log_entry_size(raws[0]) + log_entry_size(raws[1])
    pages = _log_pages(pcp, state.case_id)
    assert [len(p["entries"]) for p in pages] == [2, 2, 1]
    assert [p["more"] for p in pages] == [True, True, False]
    epochs = [e["epoch"] for p in pages for e in p["entries"]]
    assert epochs == [0, 1, 2, 3, 4]
    for page in pages:  # the bound holds for what is actually serialized
        assert len(json.dumps(page["entries"])) <= settings.LOG_PAGE_MAX_BYTES
    # A client verifies the concatenated pages as one chain.
    fresh = CaseState(state.case_id, pcp.device)
    fresh.accept_entries([
        CryptoLogEntry.decode(b64d(e["entry"])) for p in pages for e in p["entries"]])
    assert fresh.head.entry_hash() == state.head.entry_hash()


def test_an_entry_over_the_page_bound_still_travels_alone(pcp: Actor, settings: Any) -> None:
    state = pcp.open_case()
    pcp.submit(state, RotateBody())
    settings.LOG_PAGE_MAX_BYTES = 1
    pages = _log_pages(pcp, state.case_id)
    assert [[e["epoch"] for e in p["entries"]] for p in pages] == [[0], [1]]
    empty = pcp.call("GET", f"/api/cases/{state.case_id}/log?after=1").json()
    assert empty == {"entries": [], "more": False}


def test_log_pages_are_capped_by_count_and_more_is_false_on_the_last(pcp: Actor) -> None:
    state = pcp.open_case()
    pcp.submit(state, RotateBody())
    page, more = selectors.log_page(case_id=state.case_id, after=-1, max_bytes=2**30, limit=1)
    assert ([e.epoch for e in page], more) == ([0], True)
    page, more = selectors.log_page(case_id=state.case_id, after=-1, max_bytes=2**30, limit=2)
    assert ([e.epoch for e in page], more) == ([0, 1], False)  # exactly full, nothing after
    stored = LogEntry.objects.get(case_id=state.case_id, epoch=1)
    assert len(json.dumps(log_entry_wire(stored))) <= log_entry_size(len(bytes(stored.raw)))


def test_a_server_rewriting_history_below_a_kept_head_is_caught(pcp: Actor, derm: Actor) -> None:
    """The server swaps stored entries for another branch, every one validly signed by
    the owner: a client that kept its verified head refuses it (fork); one that kept
    nothing would verify it, so the kept head is what catches it."""
    state = pcp.open_case()
    pcp.add(state, derm)
    branch = CaseState(state.case_id, pcp.device)
    branch.accept_entries([state.chain[0], state.chain[1]])
    for _ in range(2):
        pcp.submit(state, RotateBody())
        branch.accept_entries([branch.next_entry(RotateBody())])
    joined = derm.join(state.case_id)
    kept = VerifiedHead(joined.head.epoch, joined.head.entry_hash())
    for epoch in (2, 3):
        other = branch.chain[epoch]
        LogEntry.objects.filter(case_id=state.case_id, epoch=epoch).update(
            raw=other.encode(), entry_hash=other.entry_hash())
    Case.objects.filter(pk=state.case_id).update(head_hash=branch.head.entry_hash())
    served = [CryptoLogEntry.decode(b64d(e["entry"]))
              for p in _log_pages(derm, state.case_id) for e in p["entries"]]
    CaseState(state.case_id, derm.device).accept_entries(served)  # verifies without the head
    with pytest.raises(CryptoError) as caught:
        CaseState(state.case_id, derm.device).accept_entries(served, verified=kept)
    assert caught.value.code == "fork"
