"""The Python client SDK and CLI end to end against real daphne processes.

Users sign in through the real two-step pages (password, then a real TOTP code). The
SQLite pass runs everything against one process; the PostgreSQL pass also runs the
scenario with the two clients on two processes joined by Redis.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import os
import re
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from PIL import Image, ImageChops, ImageStat

from collab.accounts.models import IdentityBackup, User
from collab.cases import models as m
from collab.client import cli, sdk
from collab.client.errors import AuthError, ClientError, ServerRefusedError, UnreachableError
from collab.client.keys import DeviceKeys
from collab.client.keystore import Keystore
from collab.client.room import ConnectionLostError, Room
from collab.client.sdk import CollabClient, Received
from collab.crypto.actions import AddDeviceBody
from collab.crypto.attachment import CT_CHUNK_SIZE, ciphertext_size
from collab.crypto.envelope import Envelope, Header
from collab.crypto.errors import CryptoError
from collab.crypto.log import LogEntry
from collab.crypto.wire import b64e
from tests.client.images import assert_no_metadata, jpeg_with_gps, png_bytes, two_tone
from tests.support.live import daphne_servers
from tests.support.users import PASSWORD, make_user, totp_code

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

PASS = "keystore passphrase for tests"
TEXT = "Rash on left forearm for 3 weeks, itchy; photo attached. Opinion?"


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker) -> Iterator[str]:
    with django_db_blocker.unblock(), daphne_servers(1) as urls:
        yield urls[0]


def signed_in(url: str, user: User, home: Path, offset_steps: int = 0) -> CollabClient:
    """A client with its own keystore, signed in through the login and OTP pages."""
    store = Keystore.create(home / user.username / "keystore.json", PASS)
    client = CollabClient(url, keystore=store)
    client.login(user.username, PASSWORD, totp_code(user, offset_steps=offset_steps))
    return client


def new_member(url: str, username: str, home: Path, specialty: str = "") -> CollabClient:
    client = signed_in(url, make_user(username, specialty=specialty), home)
    client.init(device_name=f"{username}-laptop")
    return client


async def until(condition: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.05)


def mean_diff(a: Image.Image, b: Image.Image) -> float:
    assert a.size == b.size
    return max(ImageStat.Stat(ImageChops.difference(a.convert("RGB"), b.convert("RGB"))).mean)


def database_dump() -> bytes:
    cfg = connection.settings_dict
    if connection.vendor == "sqlite":
        with sqlite3.connect(str(cfg["NAME"])) as db:
            return "\n".join(db.iterdump()).encode()
    env = {**os.environ, "PGPASSWORD": str(cfg.get("PASSWORD") or "")}
    result = subprocess.run(
        ["pg_dump", "-h", str(cfg.get("HOST") or "127.0.0.1"), "-p", str(cfg.get("PORT") or 5432),
         "-U", str(cfg.get("USER") or "postgres"), str(cfg["NAME"])],
        capture_output=True, env=env, timeout=120, check=True,
    )
    return result.stdout


def absent_from(haystack: bytes, secret: bytes) -> bool:
    """Neither the bytes nor their hex form (how dumps print blobs) occur."""
    lowered = haystack.lower()
    return secret not in haystack and secret.hex().encode() not in lowered


def windows(data: bytes, count: int = 6, width: int = 32) -> list[bytes]:
    """Distinctive pieces of a file (many different byte values, so not padding)."""
    pieces = [data[i : i + width] for i in range(0, len(data) - width, width)]
    distinctive = [p for p in pieces if len(set(p)) >= 20]
    assert len(distinctive) >= 2, "file too uniform to search for"
    step = max(1, len(distinctive) // count)
    return distinctive[::step][:count]


def fetch_images(derm: CollabClient, got: list[Received], home: Path) -> dict[str, Any]:
    full = got[1].image()
    assert full is not None
    progress: list[int] = []
    target = derm.download(full, home / "derm" / "forearm.jpg",
                           progress=lambda done, total: progress.append(done))
    thumb_manifest = got[1].image(thumbnail=True)
    png_manifest = got[2].image()
    assert thumb_manifest is not None and png_manifest is not None
    return {
        "message": got[1], "full": full, "progress": sum(progress),
        "jpeg": target.read_bytes(), "thumb": derm.download_bytes(thumb_manifest),
        "png_manifest": png_manifest, "png": derm.download_bytes(png_manifest),
        "photo": two_tone(640, 480), "png_source": two_tone(90, 60, mode="RGBA"),
    }


def check_images(fetched: dict[str, Any]) -> None:
    # The JPEG: no EXIF, GPS, comments or XMP left; orientation applied; same picture.
    jpeg_msg, full = fetched["message"], fetched["full"]
    assert jpeg_msg.text == "left forearm" and jpeg_msg.header.content_type == "image"
    assert full.mime == "image/jpeg" and (full.width, full.height) == (480, 640)
    assert fetched["progress"] == ciphertext_size(full.size)
    clean = assert_no_metadata(fetched["jpeg"])
    assert mean_diff(clean, fetched["photo"].transpose(Image.Transpose.ROTATE_270)) < 6
    thumb = assert_no_metadata(fetched["thumb"])
    assert max(thumb.size) == 320
    # The PNG: exact pixels.
    assert fetched["png_manifest"].mime == "image/png"
    png_out = assert_no_metadata(fetched["png"])
    assert png_out.mode == "RGBA" and png_out.tobytes() == fetched["png_source"].tobytes()


def scenario(pcp_url: str, derm_url: str, home: Path) -> None:
    pcp = new_member(pcp_url, "pcp", home)
    derm = new_member(derm_url, "derm", home, specialty="Dermatology")
    case_id = pcp.open_case(specialty="Dermatology", urgency="urgent")
    pcp.add_member(case_id, derm.user_id)
    assert derm.sync(case_id).head.epoch == 1

    # Both see the same safety number for the pair, from the keys in the verified roster.
    assert pcp.safety_number(derm.user_id, case_id) == derm.safety_number(pcp.user_id, case_id)

    photo = two_tone(640, 480)
    jpeg_path = home / "forearm.jpg"
    jpeg_path.write_bytes(jpeg_with_gps(photo, orientation=6))
    png_source = two_tone(90, 60, mode="RGBA")
    png_path = home / "annotated.png"
    png_path.write_bytes(png_bytes(png_source))

    got: list[Received] = []
    notices: list[str] = []
    ended: list[BaseException] = []

    async def watcher() -> None:
        try:
            async for message in derm.watch(case_id, after=0,
                                            on_notice=lambda kind, _: notices.append(kind)):
                got.append(message)
        except ClientError as error:
            ended.append(error)

    async def flow() -> tuple[Any, ...]:
        task = asyncio.create_task(watcher())
        await until(lambda: case_id in derm.rooms)
        room = await pcp.connect(case_id)
        sent = [await pcp.send_text(case_id, TEXT, room=room)]
        uploaded: list[int] = []
        sent.append(await pcp.send_image(case_id, jpeg_path, caption="left forearm", room=room,
                                         progress=lambda done, total: uploaded.append(done)))
        sent.append(await pcp.send_image(case_id, png_path, room=room))
        await until(lambda: len(got) >= 3)
        # Fetched while still a member (the server serves blobs to members only).
        fetched = await asyncio.to_thread(fetch_images, derm, got, home)

        # A dropped connection: messages sent meanwhile arrive once, in order, on resume.
        derm.rooms[case_id].drop()
        for i in range(4):
            sent.append(await pcp.send_text(case_id, f"follow-up {i}", room=room))
        await until(lambda: len(got) >= 7)
        # No wait for duplicates: the removal below closes the socket after every frame
        # sent before it, so `got` is final once the watcher has ended.

        # Removal: the dermatologist's socket is closed; the next message is a new epoch.
        await asyncio.to_thread(pcp.remove_member, case_id, derm.user_id)
        await until(lambda: bool(ended))
        after_removal = await pcp.send_text(case_id, "after removal: biopsy booked", room=room)
        await room.close()
        with pytest.raises(ServerRefusedError) as refused:
            await derm.connect(case_id)
        task.cancel()
        return sent, uploaded, after_removal, refused.value, fetched

    sent, uploaded, after_removal, refused_socket, fetched = asyncio.run(flow())

    # Delivery: every message exactly once, gapless, all verified and decrypted.
    assert [r.seq for r in got] == [s.seq for s in sent] == list(range(1, 8))
    assert "reconnecting" in notices
    assert all(r.sender_user_id == pcp.user_id and r.epoch == 1 for r in got)
    assert got[0].text == TEXT and got[0].header.content_type == "text"
    assert [r.text for r in got[3:]] == [f"follow-up {i}" for i in range(4)]
    assert all(r.gap is None for r in got)
    assert sum(uploaded) > 0

    check_images(fetched)

    # Removed: refused by the socket and the history API ...
    assert after_removal.epoch == 2
    assert isinstance(ended[0], ServerRefusedError) and ended[0].code == "removed"
    assert refused_socket.status == 4403
    with pytest.raises(ServerRefusedError) as history_refused:
        derm.history(case_id)
    assert history_refused.value.status == 403
    # ... and unable to decrypt the new epoch even when handed the envelope and the entry.
    row = m.Message.objects.get(case_id=case_id, seq=after_removal.seq)
    envelope = Envelope(Header.decode(bytes(row.header)), bytes(row.ciphertext),
                        bytes(row.signature))
    derm_state = derm.cases[case_id]
    with pytest.raises(CryptoError) as unknown_epoch:
        derm_state.open(envelope)
    assert unknown_epoch.value.code == "wrong_epoch"
    entry = LogEntry.decode(bytes(m.LogEntry.objects.get(case_id=case_id, epoch=2).raw))
    derm_state.accept_entries([entry])
    with pytest.raises(CryptoError) as no_key:
        derm_state.open(envelope)
    assert no_key.value.code == "wraps_mismatch"
    # The provider's own history still reads everything, the new epoch included.
    assert [r.seq for r in pcp.history(case_id)] == list(range(1, 9))

    # The server holds neither the text nor the image bytes, in the database or on disk.
    dump = database_dump()
    assert b"cases_message" in dump
    secrets = [TEXT.encode(), b"follow-up 0", b"biopsy booked", *windows(fetched["jpeg"]),
               *windows(fetched["png"]), *windows(jpeg_path.read_bytes())]
    for secret in secrets:
        assert absent_from(dump, secret), secret[:40]
    media = Path(settings.STORAGES["default"]["OPTIONS"]["location"])  # type: ignore[index]
    stored = b"".join(p.read_bytes() for p in media.rglob("*") if p.is_file())
    for secret in secrets:
        assert secret not in stored


def test_provider_and_dermatologist_single_process(server: str, tmp_path: Path) -> None:
    scenario(server, server, tmp_path)


@pytest.mark.postgres
def test_provider_and_dermatologist_on_two_processes(tmp_path: Path) -> None:
    assert os.environ.get("REDIS_URL"), "the PostgreSQL pass runs with Redis"
    with daphne_servers(2) as (one, two):
        scenario(one, two, tmp_path)


def test_tampered_ciphertext_and_injected_log_entry_are_caught(server: str,
                                                              tmp_path: Path) -> None:
    pcp = new_member(server, "pcp", tmp_path)
    derm = new_member(server, "derm", tmp_path, specialty="Dermatology")
    case_id = pcp.open_case(specialty="Dermatology")
    # The dermatologist claims the consult; the provider admits the request explicitly.
    derm.call("POST", f"/api/cases/{case_id}/join-requests", {"kind": "claim"})
    assert pcp.case_detail(case_id)["join_requests"][0]["user"] == str(derm.user_id)
    (request,) = pcp.join_requests(case_id)
    assert (request.user, request.kind, request.pin) == (derm.user_id, "claim", "new")
    assert pcp.admit(case_id, derm.user_id).epoch == 1
    assert pcp.case_detail(case_id)["join_requests"] == []

    async def send() -> None:
        room = await pcp.connect(case_id)
        for text in ("first", "second", "third"):
            await pcp.send_text(case_id, text, room=room)
        await room.close()

    asyncio.run(send())
    assert [r.text for r in derm.history(case_id)] == ["first", "second", "third"]

    # The server alters a stored ciphertext: a fresh client refuses it (fail closed).
    row = m.Message.objects.get(case_id=case_id, seq=2)
    altered = bytearray(bytes(row.ciphertext))
    altered[40] ^= 0x01
    m.Message.objects.filter(pk=row.pk).update(ciphertext=bytes(altered))
    fresh = CollabClient(server, keystore=Keystore.load(
        tmp_path / "derm" / "keystore.json", PASS))
    with pytest.raises(CryptoError) as tampered:
        fresh.history(case_id)
    assert tampered.value.code == "bad_hash"

    async def resume() -> list[Received]:
        out: list[Received] = []
        async for message in fresh.watch(case_id, after=0, reconnect=False):
            out.append(message)
        return out

    with pytest.raises(CryptoError) as on_socket:
        asyncio.run(resume())
    assert on_socket.value.code == "bad_hash"

    # The server injects an unsigned log entry adding a device of its choosing.
    state = pcp.sync(case_id)
    rogue = DeviceKeys.generate(pcp.user_id)
    forged = state.next_entry(AddDeviceBody(pcp.identity.certify(rogue)))
    unsigned = dataclasses.replace(forged, signature=bytes(64))
    m.LogEntry.objects.create(
        case_id=case_id, epoch=unsigned.epoch, entry_hash=unsigned.entry_hash(),
        raw=unsigned.encode(), action=int(unsigned.action),
        author_device_id=unsigned.author_device_id,
    )
    for client in (derm, CollabClient(server, keystore=Keystore.load(
            tmp_path / "derm" / "keystore.json", PASS))):
        with pytest.raises(CryptoError) as injected:
            client.sync(case_id)
        assert injected.value.code == "bad_signature"

    # The CLI says so in one line and exits 4.
    err = io.StringIO()
    os.environ["COLLAB_PASSPHRASE"] = PASS
    try:
        code = cli.main(["--home", str(tmp_path / "derm"), "history", str(case_id)],
                        out=io.StringIO(), err=err)
    finally:
        del os.environ["COLLAB_PASSPHRASE"]
    assert code == 4
    assert err.getvalue().count("\n") == 1 and "(bad_signature)" in err.getvalue()


def test_rolled_back_log_is_caught(server: str, tmp_path: Path) -> None:
    pcp = new_member(server, "pcp", tmp_path)
    derm = new_member(server, "derm", tmp_path)
    case_id = pcp.open_case()
    pcp.add_member(case_id, derm.user_id)
    pcp.remove_member(case_id, derm.user_id)
    # The server hides the latest entry from a client that already verified it.
    m.LogEntry.objects.filter(case_id=case_id, epoch=2).delete()
    again = CollabClient(server, keystore=Keystore.load(tmp_path / "pcp" / "keystore.json", PASS))
    with pytest.raises(CryptoError) as rolled_back:
        again.sync(case_id)
    assert rolled_back.value.code == "stale_head"


def test_wrong_totp_code_is_refused(server: str, tmp_path: Path) -> None:
    user = make_user("pcp")
    client = CollabClient(server, keystore=Keystore.create(tmp_path / "k.json", PASS))
    good = totp_code(user)
    wrong = f"{(int(good) + 1) % 1_000_000:06d}"
    with pytest.raises(AuthError) as refused:
        client.login("pcp", PASSWORD, wrong)
    assert refused.value.code == "bad_otp"
    with pytest.raises(AuthError) as bad_password:
        client.login("pcp", "not-the-password", good)
    assert bad_password.value.code == "bad_credentials"
    time.sleep(2.1)  # django-otp throttles the device for 1 s (doubling) after a wrong code
    client.login("pcp", PASSWORD, good)
    assert client.state.session


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_cli_login_init_open_send_history_and_recover(server: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    pcp_user = make_user("pcp")
    derm = new_member(server, "derm", tmp_path, specialty="Dermatology")
    monkeypatch.setenv("COLLAB_PASSPHRASE", PASS)
    monkeypatch.setenv("COLLAB_PASSWORD", PASSWORD)
    monkeypatch.setenv("COLLAB_SERVER", server)
    home = str(tmp_path / "cli-home")

    code, out, err = run_cli("--home", home, "login", "--username", "pcp",
                             "--code", totp_code(pcp_user))
    assert code == 0, err
    assert "signed in as pcp" in out
    code, out, err = run_cli("--home", home, "init", "--name", "pcp-cli")
    assert code == 0, err
    recovery = re.search(r"^  ([A-Z2-7]{4}(?:-[A-Z2-7]{1,4})+)$", out, re.M)
    assert recovery is not None
    # The server keeps only the sealed backup.
    backup = bytes(IdentityBackup.objects.get(user=pcp_user).ciphertext)
    store = Keystore.load(Path(home) / "keystore.json", PASS)
    assert store.state.identity is not None and store.state.identity.uik_seed not in backup

    code, out, err = run_cli("--home", home, "open", "--specialty", "Dermatology")
    assert code == 0, err
    case_id = out.strip()
    assert str(uuid.UUID(case_id)) == case_id
    code, out, err = run_cli("--home", home, "add", case_id, str(derm.user_id))
    assert code == 0 and "epoch 1" in out, err
    code, out, err = run_cli("--home", home, "send", case_id, TEXT)
    assert code == 0 and "sent #1" in out, err
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(jpeg_with_gps(two_tone(300, 200)))
    code, out, err = run_cli("--home", home, "send-image", case_id, str(photo),
                             "--caption", "day 3")
    assert code == 0 and "sent image #2" in out, err
    code, out, err = run_cli("--home", home, "history", case_id)
    assert code == 0, err
    assert TEXT in out and "#1 " in out and "[image 200x300 image/jpeg" in out
    code, out, err = run_cli("--home", home, "cases")
    assert code == 0 and case_id in out
    code, out, err = run_cli("--home", home, "watch", case_id, "--after", "0", "--count", "2",
                             "--json")
    assert code == 0, err
    assert [line.count('"seq"') for line in out.splitlines()] == [1, 1]
    code, out, err = run_cli("--home", home, "safety-number", str(derm.user_id), "--case",
                             case_id)
    assert code == 0, err
    assert out.split() == derm.safety_number(pcp_user.pk, uuid.UUID(case_id))

    # The dermatologist fetches the image with the CLI too (second keystore, same SDK).
    got = derm.history(uuid.UUID(case_id))
    assert got[1].image() is not None

    # A second machine: sign in again (next TOTP step) and recover with the recovery key.
    home2 = str(tmp_path / "cli-home-2")
    code, out, err = run_cli("--home", home2, "login", "--username", "pcp",
                             "--code", totp_code(pcp_user, offset_steps=1))
    assert code == 0, err
    code, out, err = run_cli("--home", home2, "init")
    assert code == 1 and "recover" in err
    code, out, err = run_cli("--home", home2, "recover", "--recovery-key", "A" * 52)
    assert code == 2 and "(wrong_recovery_key)" in err
    code, out, err = run_cli("--home", home2, "recover", "--recovery-key", recovery.group(1))
    assert code == 0, err
    # The new device enrolled itself in pcp's case (no other device needed).
    assert f"enrolled this device in case {case_id}" in out, out
    code, out, err = run_cli("--home", home2, "devices")
    assert code == 0 and out.count("\n") == 2 and "(this device)" in out
    code, out, err = run_cli("--home", home2, "enrol")
    assert (code, out) == (0, "this device is in all your cases\n"), err
    # `adopt` (adding another device from this one) finds nothing left to add.
    code, out, err = run_cli("--home", home, "adopt", case_id)
    assert (code, out) == (0, "all your devices are in\n"), err
    code, out, err = run_cli("--home", home, "send", case_id, "for both my machines")
    assert code == 0, err
    code, out, err = run_cli("--home", home2, "history", case_id)
    assert code == 0 and "for both my machines" in out, err


# --- recovering by itself (issue 12) ----------------------------------------------------

def _stored(case_id: uuid.UUID, client_msg_id: bytes) -> int:
    return m.Message.objects.filter(case_id=case_id, client_msg_id=client_msg_id).count()


def _stored_closing(case_id: uuid.UUID, client_msg_id: bytes) -> int:
    """_stored from a worker thread, which keeps no database connection open."""
    try:
        return _stored(case_id, client_msg_id)
    finally:
        connection.close()


def _cut_before_the_ack(monkeypatch: pytest.MonkeyPatch, case_id: uuid.UUID,
                        *, after_store: bool = True) -> list[bytes]:
    """The first send's connection is cut once the server stored the message (its ack
    is lost with the connection), or before the frame left (``after_store=False``)."""
    original = Room.send_envelope
    cut: list[bytes] = []

    async def lossy(self: Room, envelope: Envelope, timeout: float = 30) -> dict[str, Any]:
        if cut:
            return await original(self, envelope, timeout)
        msg_id = envelope.header.client_msg_id
        cut.append(msg_id)
        if after_store:
            await self._send({"type": "send", "ref": "lost", "envelope": envelope.to_wire()})
            async with asyncio.timeout(20):
                while await asyncio.to_thread(_stored_closing, case_id, msg_id) != 1:
                    await asyncio.sleep(0.05)
        self.drop()
        raise ConnectionLostError("the connection was cut before the ack")

    monkeypatch.setattr(Room, "send_envelope", lossy)
    return cut


@pytest.mark.parametrize("after_store", [True, False])
def test_a_send_whose_connection_is_cut_is_retried_and_stored_once(
        server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, after_store: bool) -> None:
    pcp = new_member(server, "pcp", tmp_path)
    derm = new_member(server, "derm", tmp_path)
    case_id = pcp.open_case()
    pcp.add_member(case_id, derm.user_id)
    cut = _cut_before_the_ack(monkeypatch, case_id, after_store=after_store)
    sent = asyncio.run(pcp.send_text(case_id, "biopsy booked"))
    # The SDK reconnected by itself and sent the same envelope again.
    assert cut == [sent.client_msg_id]
    assert sent.duplicate is after_store  # the server had stored it: it says so
    assert _stored(case_id, sent.client_msg_id) == 1
    assert m.Message.objects.filter(case_id=case_id).count() == 1
    assert [r.text for r in derm.history(case_id)] == ["biopsy booked"]
    assert pcp.outbox() == []


def test_an_app_retrying_after_a_lost_ack_does_not_store_twice(
        server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pcp = new_member(server, "pcp", tmp_path)
    derm = new_member(server, "derm", tmp_path)
    case_id = pcp.open_case()
    pcp.add_member(case_id, derm.user_id)
    monkeypatch.setattr(sdk, "SEND_ATTEMPTS", 1)  # the SDK gives up at once: the app retries
    cut = _cut_before_the_ack(monkeypatch, case_id)
    with pytest.raises(ConnectionLostError) as lost:
        asyncio.run(pcp.send_text(case_id, "biopsy booked"))
    assert lost.value.pending_id == b64e(cut[0])  # the error names the waiting message
    assert _stored(case_id, cut[0]) == 1  # stored; the app cannot know
    # The app (restarted: the outbox is in the keystore) retries that message by its id.
    again = CollabClient(server, keystore=Keystore.load(tmp_path / "pcp" / "keystore.json",
                                                        PASS))
    assert [e["id"] for e in again.outbox(case_id)] == [b64e(cut[0])]
    sent = asyncio.run(again.send_text(case_id, "biopsy booked", retry=lost.value.pending_id))
    assert sent.duplicate and sent.client_msg_id == cut[0]
    assert m.Message.objects.filter(case_id=case_id).count() == 1
    assert again.outbox() == []
    # Once acknowledged, the same text again is a new message, on purpose.
    assert not asyncio.run(again.send_text(case_id, "biopsy booked")).duplicate
    assert [r.text for r in derm.history(case_id)] == ["biopsy booked"] * 2


def test_an_image_retried_by_its_id_is_not_uploaded_again_and_a_plain_resend_is_new(
        server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pcp = new_member(server, "pcp", tmp_path)
    derm = new_member(server, "derm", tmp_path)
    case_id = pcp.open_case()
    pcp.add_member(case_id, derm.user_id)
    image = tmp_path / "forearm.png"
    image.write_bytes(png_bytes(two_tone(40, 30, mode="RGBA")))
    monkeypatch.setattr(sdk, "SEND_ATTEMPTS", 1)
    cut = _cut_before_the_ack(monkeypatch, case_id)
    with pytest.raises(ConnectionLostError) as lost:
        asyncio.run(pcp.send_image(case_id, image, caption="day 3"))
    blobs = m.Blob.objects.filter(case_id=case_id).count()
    assert blobs == 2 and lost.value.pending_id == b64e(cut[0])
    # A retry of another image under that id is refused before anything is sent.
    other = tmp_path / "other.png"
    other.write_bytes(png_bytes(two_tone(41, 30, mode="RGBA")))
    with pytest.raises(ClientError) as mismatch:
        asyncio.run(pcp.send_image(case_id, other, caption="day 3",
                                   retry=lost.value.pending_id))
    assert mismatch.value.code == "retry_mismatch"
    sent = asyncio.run(pcp.send_image(case_id, image, caption="day 3",
                                      retry=lost.value.pending_id))
    assert sent.duplicate and sent.client_msg_id == cut[0]
    assert m.Blob.objects.filter(case_id=case_id).count() == blobs  # nothing uploaded again
    # The same image sent again without retry: a second message, on purpose.
    assert not asyncio.run(pcp.send_image(case_id, image, caption="day 3")).duplicate
    assert [r.text for r in derm.history(case_id)] == ["day 3", "day 3"]


def test_an_upload_continues_from_what_the_server_holds(
        server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pcp = new_member(server, "pcp", tmp_path)
    case_id = pcp.open_case()
    data = os.urandom(3 * 1024 * 1024 + 100_000)  # four parts of up to 16 chunks
    put, post = pcp.http.put_bytes, pcp.http.json
    parts: list[str] = []
    statuses: list[dict[str, Any] | None] = []

    def flaky_put(path: str, body: bytes) -> Any:
        parts.append(path.rsplit("/", 1)[1])
        if len(parts) == 2:
            raise UnreachableError("the connection dropped before the part was sent")
        if len(parts) == 4:
            put(path, body)
            raise UnreachableError("the connection dropped before the answer came")
        return put(path, body)

    def flaky_json(method: str, path: str, body: dict[str, Any] | None = None,
                   **options: Any) -> Any:
        answer = post(method, path, body, **options)
        if path.endswith("/upload"):
            statuses.append(answer.body)
        if path.endswith("/complete") and not any(s and s["status"] == "complete"
                                                  for s in statuses):
            statuses.append(None)
            raise UnreachableError("the connection dropped before the answer came")
        return answer

    monkeypatch.setattr(pcp.http, "put_bytes", flaky_put)
    monkeypatch.setattr(pcp.http, "json", flaky_json)
    manifest = pcp.upload(case_id, data, "application/octet-stream")
    mib = 16 * CT_CHUNK_SIZE  # a part: sixteen ciphertext chunks
    # Part 1 sent again (it never arrived); part 2 arrived, so it is not sent again.
    assert parts == ["0", str(mib), str(mib), str(2 * mib), str(3 * mib)]
    assert [s["received_bytes"] for s in statuses if s] == [mib, 3 * mib,
                                                           ciphertext_size(len(data))]
    assert statuses[-1] is not None and statuses[-1]["status"] == "complete"
    monkeypatch.undo()
    assert pcp.download_bytes(manifest) == data


def test_long_messages_are_caught_up_over_byte_capped_pages(tmp_path: Path) -> None:
    with daphne_servers(1, COLLAB_HISTORY_PAGE_MAX_BYTES=str(64 * 1024)) as (url,):
        pcp = new_member(url, "pcp", tmp_path)
        derm = new_member(url, "derm", tmp_path)
        case_id = pcp.open_case()
        pcp.add_member(case_id, derm.user_id)
        texts = [f"{i:02d} " + "x" * 16_000 for i in range(12)]

        async def send() -> None:
            room = await pcp.connect(case_id)
            for text in texts:
                await pcp.send_text(case_id, text, room=room)
            await room.close()

        asyncio.run(send())
        assert [r.text for r in derm.history(case_id)] == texts
        pages: list[int] = []
        original = Room.resume

        async def counted(self: Room, after: int, limit: int = 50,
                          timeout: float = 30) -> dict[str, Any]:
            page = await original(self, after, limit, timeout)
            pages.append(len(page["items"]))
            return page

        async def watch() -> list[str]:
            got: list[str] = []
            fresh = CollabClient(url, keystore=Keystore.load(
                tmp_path / "derm" / "keystore.json", PASS))
            async for msg in fresh.watch(case_id, after=0, reconnect=False):
                got.append(msg.text)
                if len(got) == len(texts):
                    break
            return got

        Room.resume = counted  # type: ignore[method-assign]
        try:
            assert asyncio.run(watch()) == texts
        finally:
            Room.resume = original  # type: ignore[method-assign]
        assert len(pages) > 2 and sum(pages) == len(texts)  # several pages, none too large
