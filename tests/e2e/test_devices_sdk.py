"""Devices prove themselves, revoked ones are cut off, a new device joins by itself and
reads the whole case through the key backup: live daphne with proofs required, the SDK
and CLI as the honest clients, and the attacker played with raw requests, raw sockets and
writes to the database. Each attack has an honest twin that goes through."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from django.utils import timezone
from websockets.exceptions import ConnectionClosed

from collab.accounts.models import Device, User
from collab.cases import models as m
from collab.cases.wire import message_wire
from collab.client.errors import AuthError, ServerRefusedError
from collab.client.http import ApiError, HttpSession
from collab.client.keys import DeviceKeys, Identity
from collab.client.room import Room, socket_url
from collab.client.sdk import CollabClient
from collab.crypto import primitives as prim
from collab.crypto.actions import Action, AddUserBody, RotateBody, apply_action, sign_enrol
from collab.crypto.devproof import sign_ws_proof
from collab.crypto.envelope import Envelope
from collab.crypto.errors import CryptoError
from collab.crypto.keybackup import backup_key, seal_backup_item
from collab.crypto.log import build_entry, seal_entry
from collab.crypto.roster import Role
from collab.crypto.wire import b64d, b64e
from tests.support.clients import PASS, new_member, reload, run_cli, signed_in
from tests.support.live import daphne_servers
from tests.support.users import make_user, verified_client

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker) -> Iterator[str]:
    with django_db_blocker.unblock(), daphne_servers(
        1, COLLAB_DEVICE_PROOF_REQUIRED="1", COLLAB_WS_PROVE_TIMEOUT_SECONDS="2"
    ) as urls:
        yield urls[0]


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLLAB_PASSPHRASE", PASS)
    monkeypatch.delenv("COLLAB_SERVER", raising=False)


def send(client: CollabClient, case_id: uuid.UUID, *texts: str) -> list[int]:
    async def go() -> list[int]:
        return [(await client.send_text(case_id, t)).epoch for t in texts]

    return asyncio.run(go())


def refused(http: HttpSession, method: str, path: str, data: bytes | None = None,
            proof: str | None = None, content_type: str | None = None) -> ApiError:
    """Send one request as given (no retry) and return the server's refusal."""
    request = http._request(method, path, data, content_type, prove=proof is None)
    if proof is not None:
        request.add_header("X-Collab-Proof", proof)
    with pytest.raises(ApiError) as failure:
        http._open(request).close()
    return failure.value


def second_device(server: str, first: CollabClient, home: Path,
                  recovery_key: str) -> CollabClient:
    user = User.objects.get(username=first.state.username)
    second = signed_in(server, user, home, offset_steps=1)
    second.recover(recovery_key, device_name="second")
    return second


# --- 1. HTTP proofs ----------------------------------------------------------------------

def test_a_replayed_http_proof_is_refused(server: str, tmp_path: Path) -> None:
    pcp = new_member(server, "pcp", tmp_path)
    case_id = pcp.open_case()
    path = f"/api/cases/{case_id}/wraps"
    request = pcp.http._request("GET", path, None, None)
    with pcp.http._open(request) as first:
        assert first.status == 200
        assert first.headers.get("X-Collab-Nonce")
    with pytest.raises(ApiError) as replayed:
        pcp.http._open(request)  # the very same request, proof and all
    assert (replayed.value.status, replayed.value.code) == (401, "replayed_device_proof")
    assert isinstance(replayed.value.body.get("nonce"), str)
    # Honest twin: the SDK signs every call anew (a fresh jti), so repeating it works.
    before = pcp.http.proofs_sent
    for _ in range(2):
        assert [w["epoch"] for w in pcp.call("GET", path)["wraps"]] == [0]
    assert pcp.http.proofs_sent == before + 2


def test_a_proof_for_another_path_or_body_is_refused(server: str, tmp_path: Path) -> None:
    pcp = new_member(server, "pcp", tmp_path)
    derm = new_member(server, "derm", tmp_path)
    case_id, other = pcp.open_case(), pcp.open_case()
    http = pcp.http

    # Another path, another query string, another method: refused.
    for signed, sent in ((f"/api/cases/{other}/wraps", f"/api/cases/{case_id}/wraps"),
                         (f"/api/cases/{case_id}/messages?after=0&limit=100",
                          f"/api/cases/{case_id}/messages?after=0&limit=1")):
        failure = refused(http, "GET", sent, proof=http.proof("GET", signed, b""))
        assert (failure.status, failure.code) == (401, "bad_device_proof"), signed
    failure = refused(http, "GET", f"/api/cases/{case_id}/wraps",
                      proof=http.proof("POST", f"/api/cases/{case_id}/wraps", b""))
    assert failure.code == "bad_device_proof"

    # Another body: the proof covers the exact bytes. The entry is not stored.
    state = pcp.sync(case_id)
    keys, devices = pcp.user_keys(derm.user_id)
    entry = state.next_entry(AddUserBody(derm.user_id, Role.MEMBER, keys, devices))
    rotate = state.next_entry(RotateBody())
    signed_body = json.dumps({"entry": b64e(rotate.encode())}).encode()
    sent_body = json.dumps({"entry": b64e(entry.encode())}).encode()
    failure = refused(http, "POST", f"/api/cases/{case_id}/log", sent_body,
                      proof=http.proof("POST", f"/api/cases/{case_id}/log", signed_body),
                      content_type="application/json")
    assert (failure.status, failure.code) == (401, "bad_device_proof")
    assert m.LogEntry.objects.filter(case_id=case_id).count() == 1

    # No proof, a malformed one, one signed by another device's key: refused.
    unsigned = http._request("GET", f"/api/cases/{case_id}/wraps", None, None, prove=False)
    with pytest.raises(ApiError) as unproven:
        http._open(unsigned)
    assert (unproven.value.status, unproven.value.code) == (401, "device_proof_required")
    bare = HttpSession(server, str(pcp.device.device_id))  # names the device, no key
    bare.use_session(pcp.state.session or "", pcp.state.session_cookie)
    with pytest.raises(ApiError) as missing:
        bare.json("GET", f"/api/cases/{case_id}/wraps")
    assert (missing.value.status, missing.value.code) == (401, "device_proof_required")
    assert isinstance(missing.value.body.get("nonce"), str)
    failure = refused(http, "GET", f"/api/cases/{case_id}/wraps", proof="1.2.3.4")
    assert failure.code == "bad_device_proof"
    foreign = HttpSession(server, str(pcp.device.device_id), DeviceKeys.generate(
        pcp.user_id).dsk_seed)
    foreign.use_session(pcp.state.session or "", pcp.state.session_cookie)
    with pytest.raises(ApiError) as wrong_key:
        foreign.json("GET", f"/api/cases/{case_id}/wraps")
    assert wrong_key.value.code == "bad_device_proof"

    # Honest twins: the exact request goes through; an unknown nonce costs one retry.
    assert pcp.add_member(case_id, derm.user_id).epoch == 1
    http._nonce = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    before = http.proofs_sent
    assert [w["epoch"] for w in pcp.call("GET", f"/api/cases/{case_id}/wraps")["wraps"]] \
        == [0, 1]
    assert http.proofs_sent == before + 2


# --- 2. the socket challenge ---------------------------------------------------------------

async def raw_frames(client: CollabClient, case_id: uuid.UUID,
                     answer: Any, device_id: uuid.UUID | None = None) -> tuple[list[str], int]:
    """Open the case socket as ``client``'s session, answer the first frame with
    ``answer(challenge_frame)`` (a dict to send, or None for silence), and collect every
    frame type until the server closes."""
    device = device_id or client.device.device_id
    url = socket_url(client.state.server, case_id, device)
    seen: list[str] = []
    async with websockets.connect(url, additional_headers={
            "Origin": client.http.origin, "Cookie": client.http.cookie_header()}) as ws:
        try:
            first = json.loads(await asyncio.wait_for(ws.recv(), 10))
            seen.append(first["type"])
            reply = answer(first)
            if reply is not None:
                await ws.send(json.dumps(reply))
            while True:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
                seen.append(f"{frame['type']}:{frame.get('code', '')}")
        except ConnectionClosed as closed:
            return seen, closed.rcvd.code if closed.rcvd else 0
    raise AssertionError("unreachable")


def test_a_socket_that_fails_the_challenge_gets_nothing(server: str, tmp_path: Path) -> None:
    pcp = new_member(server, "pcp", tmp_path)
    case_id = pcp.open_case()
    send(pcp, case_id, "for proven devices only")
    other_case = pcp.open_case()
    stranger = DeviceKeys.generate(pcp.user_id)

    def signed_by(seed: bytes, case: uuid.UUID) -> Any:
        def answer(challenge: dict[str, Any]) -> dict[str, Any]:
            sig = sign_ws_proof(seed, b64d(challenge["nonce"], 32), case, pcp.device.device_id)
            return {"type": "prove", "sig": b64e(sig)}
        return answer

    attempts = {
        "another key": (signed_by(stranger.dsk_seed, case_id), "bad_device_proof"),
        "another case": (signed_by(pcp.device.dsk_seed, other_case), "bad_device_proof"),
        "no prove first": (lambda _c: {"type": "resume", "ref": "r", "after": 0, "limit": 50},
                           "device_unproven"),
        "silence": (lambda _c: None, "device_unproven"),
    }
    for name, (answer, code) in attempts.items():
        seen, close = asyncio.run(raw_frames(pcp, case_id, answer))
        assert seen == ["challenge", f"error:{code}"], (name, seen)
        assert close == 4403, name

    # The SDK's room surfaces the refusal; the honest twin gets hello and the history.
    async def honest() -> tuple[dict[str, Any], dict[str, Any]]:
        with pytest.raises(ServerRefusedError) as bad:
            await Room.connect(base_url=server, origin=pcp.http.origin,
                               cookie=pcp.http.cookie_header(), case_id=case_id,
                               device_id=pcp.device.device_id, device_key=stranger.dsk_seed)
        assert bad.value.code == "bad_device_proof"
        room = await pcp.connect(case_id)
        try:
            return room.hello, await room.resume(0)
        finally:
            await room.close()

    hello, page = asyncio.run(honest())
    assert hello["type"] == "hello" and len(page["items"]) == 1
    assert pcp.history(case_id)[0].text == "for proven devices only"


# --- 3. a revoked device is cut off, whatever device it names -------------------------------

def test_a_revoked_devices_session_naming_another_device_is_refused(
        server: str, tmp_path: Path) -> None:
    pcp_user = make_user("pcp")
    laptop = signed_in(server, pcp_user, tmp_path / "one")
    recovery = laptop.init(device_name="laptop")
    case_id = laptop.open_case()
    send(laptop, case_id, "before")
    phone = second_device(server, laptop, tmp_path / "two", recovery)
    assert phone.sync(case_id).head.roster.device(phone.device.device_id) is not None
    stolen = laptop.device

    phone.revoke_device(stolen.device_id)
    send(phone, case_id, "after the laptop was revoked")
    # The laptop proved itself in its session: that session has ended.
    with pytest.raises(AuthError):
        laptop.call("GET", "/api/cases")

    # Whoever holds the laptop's keys and a fresh session of the same user...
    thief = CollabClient(state=dataclasses.replace(laptop.state))
    thief.http.use_session(verified_client(pcp_user).cookies["sessionid"].value)
    # ... naming the laptop: revoked, everywhere.
    with pytest.raises(ServerRefusedError) as revoked:
        thief.call("GET", f"/api/cases/{case_id}/wraps")
    assert (revoked.value.status, revoked.value.code) == (403, "device_revoked")
    # ... naming the phone, signing with the laptop's key: the proof fails.
    thief.http.device_id = str(phone.device.device_id)
    for path in (f"/api/cases/{case_id}/wraps", f"/api/cases/{case_id}/messages?after=0",
                 f"/api/key-backup?case={case_id}&after=-1"):
        with pytest.raises(AuthError) as bad:
            thief.call("GET", path)
        assert bad.value.code == "bad_device_proof", path
    # ... naming the phone without any proof: refused.
    thief.http.device_key = None
    with pytest.raises(AuthError) as missing:
        thief.call("GET", f"/api/cases/{case_id}/messages?after=0")
    assert missing.value.code == "device_proof_required"
    # ... and the socket, as the phone with the laptop's key, or as the laptop.
    for device_id, code in ((phone.device.device_id, "bad_device_proof"),
                            (stolen.device_id, "device_revoked")):
        with pytest.raises(ServerRefusedError) as socket_refused:
            asyncio.run(Room.connect(base_url=server, origin=thief.http.origin,
                                     cookie=thief.http.cookie_header(), case_id=case_id,
                                     device_id=device_id, device_key=stolen.dsk_seed))
        assert socket_refused.value.code == code

    # Honest twin: the phone reads, and sent in an epoch the laptop has no key for (it
    # removed the revoked laptop from the roster before sending).
    assert [r.text for r in phone.history(case_id)][-1] == "after the laptop was revoked"
    head = phone.sync(case_id).head
    assert head.action == Action.REMOVE_DEVICE and head.roster.device(stolen.device_id) is None


# --- 4/5. a recovered device enrols itself and reads from the first message -----------------

def earlier_messages_served(client: CollabClient, case_id: uuid.UUID) -> bool:
    """Whether the server serves this device messages of epochs before it joined (it
    serves those of the epochs the device holds a wrap for, collab.cases.selectors.
    readable_epochs; the epochs restored from the key backup must be served too)."""
    joined = min(e for e, entry in client.sync(case_id).chain.items()
                 if entry.roster.device(client.device.device_id) is not None)
    page = client.call("GET", f"/api/cases/{case_id}/messages?after=0&limit=200")
    return any(Envelope.from_wire(item["envelope"]).header.epoch < joined
               for item in page["messages"])


def recovered_case(server: str, tmp_path: Path) -> tuple[User, CollabClient, CollabClient,
                                                         CollabClient, uuid.UUID]:
    """pcp's laptop writes a case over three epochs (backing up each key), then is gone;
    pcp's phone recovers with the recovery key only. Returns (pcp, laptop, phone, derm,
    case)."""
    pcp_user = make_user("pcp")
    laptop = signed_in(server, pcp_user, tmp_path / "one")
    recovery = laptop.init(device_name="laptop")
    derm = new_member(server, "derm", tmp_path)
    neuro = new_member(server, "neuro", tmp_path)
    case_id = laptop.open_case()
    send(laptop, case_id, "first")
    laptop.add_member(case_id, derm.user_id)
    send(laptop, case_id, "second")
    laptop.add_member(case_id, neuro.user_id)
    send(derm, case_id, "third")
    laptop.history(case_id)  # the laptop learns epoch 2's key and backs it up
    phone = second_device(server, laptop, tmp_path / "two", recovery)
    return pcp_user, laptop, phone, derm, case_id


def test_a_recovered_device_enrols_itself_and_restores_the_earlier_keys(
        server: str, tmp_path: Path, cli_env: None) -> None:
    pcp_user, laptop, phone, derm, case_id = recovered_case(server, tmp_path)
    rows = m.KeyBackupItem.objects.filter(user=pcp_user, case_id=case_id)
    # One item per epoch: 0-2 from the laptop, 3 (the enrol entry's) from the phone.
    assert sorted(rows.values_list("epoch", flat=True)) == [0, 1, 2, 3]
    assert all(len(bytes(i)) == 112 for i in rows.values_list("item", flat=True))

    # The phone enrolled itself (the laptop never acted) and took every earlier key
    # from the backup, each checked against its epoch's key_commit.
    state = phone.sync(case_id)
    assert state.head.action == Action.ENROL_DEVICE
    assert state.head.author_device_id == phone.device.device_id
    assert state.restored == {0, 1, 2} and state.backup_refused == {}
    assert sorted(state.keys) == [0, 1, 2, 3] and not state.unavailable
    assert [t for _, (t, _) in sorted(stored_texts(phone, case_id).items())] == \
        ["first", "second", "third"]

    # The other members' clients verify the enrol entry (signed by pcp's identity key)
    # and wrap the next keys to the new device; the phone reads what they send.
    neuro = reload(derm)  # any member's fresh client verifies the chain from genesis
    for member in (derm, neuro, reload(laptop)):
        assert member.sync(case_id).head.roster.device(phone.device.device_id) is not None
    send(derm, case_id, "fourth")
    assert [r.text for r in phone.history(case_id)][-1] == "fourth"
    # A new epoch's key is backed up by the first device that learns it.
    derm._commit(case_id, lambda _s: RotateBody())
    phone.sync(case_id)
    assert sorted(rows.values_list("epoch", flat=True)) == [0, 1, 2, 3, 4]

    # The CLI: enrol is idempotent.
    assert phone.store is not None
    code, out, err = run_cli("--home", str(phone.store.path.parent), "enrol")
    assert (code, out) == (0, "this device is in all your cases\n"), err


def test_a_recovered_device_reads_the_case_from_its_first_message(
        server: str, tmp_path: Path, cli_env: None) -> None:
    _, _, phone, derm, case_id = recovered_case(server, tmp_path)
    if not earlier_messages_served(phone, case_id):
        pytest.xfail("the server serves a device only the messages of epochs it has a wrap "
                     "for (selectors.readable_epochs); epochs restored from the key backup "
                     "are not served")
    got = phone.history(case_id)
    assert [r.text for r in got] == ["first", "second", "third"]
    assert all(r.unavailable is None for r in got)
    send(derm, case_id, "fourth")
    assert [r.text for r in reload(phone).history(case_id)] == \
        ["first", "second", "third", "fourth"]
    assert phone.store is not None
    code, out, err = run_cli("--home", str(phone.store.path.parent), "history", str(case_id))
    assert code == 0 and "first" in out and "fourth" in out, err
    assert "not available" not in out


def test_a_forged_enrol_entry_is_refused_by_the_members(server: str, tmp_path: Path) -> None:
    pcp = new_member(server, "pcp", tmp_path)
    derm = new_member(server, "derm", tmp_path)
    case_id = pcp.open_case()
    pcp.add_member(case_id, derm.user_id)
    prev = derm.sync(case_id).head
    # The operator certifies a device of its own for pcp and admits it with a UIK that
    # is not pcp's (it has no other), writing the entry straight into the log.
    fake = Identity.generate(pcp.user_id)
    device = DeviceKeys.generate(pcp.user_id)
    cert = fake.certify(device)
    body = sign_enrol(fake.uik_seed, case_id, prev.epoch + 1, prev.entry_hash(), cert)
    roster = apply_action(prev.roster, epoch=prev.epoch + 1, author_user_id=pcp.user_id,
                          body=body)
    forged = seal_entry(
        author_seed=device.dsk_seed, case_id=case_id, epoch=prev.epoch + 1,
        prev_hash=prev.entry_hash(), author_user_id=pcp.user_id,
        author_device_id=device.device_id, created_ms=prev.created_ms + 1,
        action=Action.ENROL_DEVICE, action_body=body.encode(), roster=roster,
        epoch_key=prim.random_bytes(32), epk_secret=prim.random_bytes(32),
    )
    m.LogEntry.objects.create(case_id=case_id, epoch=forged.epoch,
                              entry_hash=forged.entry_hash(), raw=forged.encode(),
                              action=int(forged.action), author_device_id=device.device_id)
    m.Case.objects.filter(pk=case_id).update(head_epoch=forged.epoch,
                                             head_hash=forged.entry_hash())
    for member in (reload(derm), reload(pcp)):
        with pytest.raises(CryptoError) as caught:
            member.sync(case_id)
        assert caught.value.code == "bad_signature"
    # Honest twin: pcp's own identity key admits a device of pcp's at that position.
    m.LogEntry.objects.filter(case_id=case_id, epoch=forged.epoch).delete()
    m.Case.objects.filter(pk=case_id).update(head_epoch=prev.epoch, head_hash=prev.entry_hash())
    honest = pcp.identity.certify(device)
    body = sign_enrol(pcp.identity.uik_seed, case_id, prev.epoch + 1, prev.entry_hash(), honest)
    entry, _ = build_entry(prev, body, author_seed=device.dsk_seed, author_user_id=pcp.user_id,
                           author_device_id=device.device_id, created_ms=prev.created_ms + 1)
    assert entry.action == Action.ENROL_DEVICE  # verify_entry accepted it


def stored_texts(client: CollabClient, case_id: uuid.UUID) -> dict[int, tuple[str, str | None]]:
    """Every message of the case as stored, opened by ``client``: epoch -> (text, why
    unavailable)."""
    rows = m.Message.objects.filter(case_id=case_id).order_by("seq")
    opened = [client.open_item(case_id, message_wire(row)) for row in rows]
    return {r.epoch: (r.text, r.unavailable) for r in opened}


def test_tampered_or_injected_backup_items_are_refused(server: str, tmp_path: Path) -> None:
    pcp_user = make_user("pcp")
    laptop = signed_in(server, pcp_user, tmp_path / "one")
    recovery = laptop.init(device_name="laptop")
    derm = new_member(server, "derm", tmp_path)
    case_id = laptop.open_case()
    send(laptop, case_id, "epoch 0")
    laptop.add_member(case_id, derm.user_id)
    send(laptop, case_id, "epoch 1")
    laptop._commit(case_id, lambda _s: RotateBody())
    send(laptop, case_id, "epoch 2")
    laptop._commit(case_id, lambda _s: RotateBody())
    send(laptop, case_id, "epoch 3")
    laptop.history(case_id)
    items = {i.epoch: i for i in m.KeyBackupItem.objects.filter(user=pcp_user, case_id=case_id)}
    assert set(items) == {0, 1, 2, 3}

    # The operator: flips a byte of epoch 0's item, serves epoch 2's item as epoch 1's,
    # and replaces epoch 3's with one sealed under a key of its own.
    item0 = bytearray(bytes(items[0].item))
    item0[40] ^= 1
    m.KeyBackupItem.objects.filter(pk=items[0].pk).update(item=bytes(item0))
    m.KeyBackupItem.objects.filter(pk=items[1].pk).update(item=bytes(items[2].item))
    own = seal_backup_item(prim.random_bytes(32), case_id, 3, prim.random_bytes(32))
    m.KeyBackupItem.objects.filter(pk=items[3].pk).update(item=own)

    phone = second_device(server, laptop, tmp_path / "two", recovery)
    state = phone.sync(case_id)
    assert state.backup_refused == {0: "decrypt_failed", 1: "bad_wrap", 3: "decrypt_failed"}
    assert state.restored == {2} and sorted(state.keys) == [2, 4]  # 4: the enrol entry
    # Every stored message, as the server holds it, handed to the phone: verified; the
    # refused epochs stay unavailable (never read with a key the server chose).
    texts = stored_texts(phone, case_id)
    for epoch in (0, 1, 3):
        text, why = texts[epoch]
        assert text == "" and why is not None and "key backup" in why, epoch
    assert texts[2] == ("epoch 2", None)  # the untouched item opens

    # A valid seal under the real backup key holding a wrong epoch key (what only a
    # holder of pcp's identity key could make) fails the key_commit check.
    wrong = seal_backup_item(backup_key(laptop.identity.uik_seed), case_id, 2,
                             prim.random_bytes(32))
    m.KeyBackupItem.objects.filter(pk=items[2].pk).update(item=wrong)
    fresh = reload(phone)
    assert fresh.sync(case_id).backup_refused[2] == "key_commit_mismatch"
    assert stored_texts(fresh, case_id)[2][0] == ""
    # Nothing refused is kept; the epochs this device is enrolled in read normally.
    send(derm, case_id, "after")
    assert reload(phone).history(case_id)[-1].text == "after"


# --- 5. revoked devices leave the roster before any other entry -----------------------------

def test_revoked_devices_are_removed_before_any_other_entry(server: str, tmp_path: Path) -> None:
    pcp_user = make_user("pcp")
    laptop = signed_in(server, pcp_user, tmp_path / "one")
    recovery = laptop.init(device_name="laptop")
    derm = new_member(server, "derm", tmp_path)
    neuro = new_member(server, "neuro", tmp_path)
    case_id = laptop.open_case()
    laptop.add_member(case_id, derm.user_id)
    phone = second_device(server, laptop, tmp_path / "two", recovery)
    assert phone.sync(case_id).head.roster.device(laptop.device.device_id) is not None

    # The laptop is revoked outside the case (say by an admin): it stays in the roster.
    Device.objects.filter(pk=laptop.device.device_id).update(revoked_at=timezone.now())
    assert phone.revoked_in_roster(case_id) == [laptop.device.device_id]

    # The attack a careless client makes: an entry keeping the revoked device.
    state = phone.sync(case_id)
    keeping = state.next_entry(RotateBody())
    with pytest.raises(ServerRefusedError) as kept:
        phone.call("POST", f"/api/cases/{case_id}/log", {"entry": b64e(keeping.encode())})
    assert (kept.value.status, kept.value.code) == (409, "revoked_device_in_roster")
    assert kept.value.body.get("devices") == [str(laptop.device.device_id)]

    # A plain member may not remove pcp's device: the entry stays refused, nothing stored.
    derm_head = derm.sync(case_id).head.epoch
    with pytest.raises(ServerRefusedError) as stuck:
        derm._commit(case_id, lambda _s: RotateBody())
    assert stuck.value.code == "revoked_device_in_roster"
    assert derm.sync(case_id).head.epoch == derm_head

    # The honest client: the 409 (here the case detail is not consulted) makes it remove
    # the revoked device first, then commit.
    original = phone.revoked_in_roster
    phone.revoked_in_roster = lambda *_args: []  # type: ignore[method-assign]
    entry = phone.add_member(case_id, neuro.user_id)
    phone.revoked_in_roster = original  # type: ignore[method-assign]
    chain = phone.sync(case_id).chain
    assert [chain[e].action for e in sorted(chain)][-2:] == [Action.REMOVE_DEVICE,
                                                             Action.ADD_USER]
    assert entry.roster.device(laptop.device.device_id) is None
    # Everyone verifies; derm can commit again.
    assert derm._commit(case_id, lambda _s: RotateBody()).epoch == entry.epoch + 1


def test_a_new_device_enrols_next_to_its_own_revoked_device_then_removes_it(
        server: str, tmp_path: Path) -> None:
    """Lost the only device: it is revoked, the recovered one still enrols (its user's
    revoked devices do not block its own enrolment) and removes the revoked one next."""
    pcp_user = make_user("pcp")
    laptop = signed_in(server, pcp_user, tmp_path / "one")
    recovery = laptop.init(device_name="laptop")
    case_id = laptop.open_case()
    laptop.revoke_device(laptop.device.device_id)  # lost: revoked from itself, say
    phone = second_device_without_enrol(server, laptop, tmp_path / "two", recovery)
    assert phone.revoked_in_roster(case_id) == [laptop.device.device_id]
    assert phone.enrol_cases() == {case_id: "enrolled"}
    head = phone.sync(case_id).head
    assert head.roster.device(laptop.device.device_id) is None
    assert head.roster.device(phone.device.device_id) is not None


def test_enrolment_is_refused_while_the_roster_keeps_another_users_revoked_device(
        server: str, tmp_path: Path) -> None:
    """The exemption is for the enrolling user's own revoked devices only."""
    pcp = signed_in(server, make_user("pcp"), tmp_path / "pcp")
    recovery = pcp.init(device_name="laptop")
    derm = new_member(server, "derm", tmp_path / "derm", specialty="Dermatology")
    case_id = pcp.open_case()
    pcp.add_member(case_id, derm.user_id)
    Device.objects.filter(pk=derm.device.device_id).update(revoked_at=timezone.now())
    phone = second_device_without_enrol(server, pcp, tmp_path / "two", recovery)
    epochs = m.LogEntry.objects.filter(case_id=case_id).count()
    assert phone.enrol_cases() == {case_id: "failed (revoked_device_in_roster)"}
    assert m.LogEntry.objects.filter(case_id=case_id).count() == epochs  # nothing committed


def second_device_without_enrol(server: str, first: CollabClient, home: Path,
                                recovery_key: str) -> CollabClient:
    user = User.objects.get(username=first.state.username)
    second = signed_in(server, user, home, offset_steps=1)
    second.enrol_cases = lambda: {}  # type: ignore[method-assign]
    second.recover(recovery_key, device_name="second")
    del second.enrol_cases
    return second
