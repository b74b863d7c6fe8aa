"""Devices in real Chromium with device proofs required (COLLAB_DEVICE_PROOF_REQUIRED=1):
a browser recovered from the recovery key enrols itself and reads the case from its
first message through the key backup, with no other device online; "Sign out and forget
this browser" leaves nothing of the user in IndexedDB; a revoked device's keys get
nothing from the server (socket and history), whatever session they are used in; the
device signing key is a non-extractable WebCrypto key that still proves the device,
and a browser holding a tweetnacl seed from before keeps working."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from collab.accounts.models import Device, IdentityBackup
from collab.audit.models import AuditAction, AuditEvent
from collab.cases import models as m
from collab.crypto.actions import Action
from tests.browser.conftest import CSP_LISTENER, PageProblems
from tests.browser.test_case_room_browser import named, set_up_first_device, sign_in
from tests.support.live import daphne_servers
from tests.support.users import make_user

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


@pytest.fixture(scope="module")
def server(django_db_setup: Any, django_db_blocker: Any) -> Iterator[str]:
    """This module's live server always requires device proofs."""
    with django_db_blocker.unblock(), daphne_servers(1, COLLAB_DEVICE_PROOF_REQUIRED="1") as urls:
        yield urls[0]


IDB_KEYS = """async () => {
  const names = (await indexedDB.databases()).map((d) => d.name);
  if (!names.includes('collab-keys')) return [];
  const db = await new Promise((ok, no) => {
    const r = indexedDB.open('collab-keys');
    r.onsuccess = () => ok(r.result);
    r.onerror = no;
  });
  return new Promise((ok) => {
    const r = db.transaction('kv').objectStore('kv').getAllKeys();
    r.onsuccess = () => { db.close(); ok(r.result); };
  });
}"""


def open_case(page: Any, question: str) -> tuple[str, uuid.UUID]:
    page.get_by_label("Requested specialty").fill("Cardiology")
    page.get_by_label("Clinical question").fill(question)
    page.get_by_role("button", name="Open case").click()
    page.wait_for_url(re.compile(r"/cases/[0-9a-f-]{36}/$"))
    page.locator("li.message.own .text", has_text=question).wait_for()
    return page.url, uuid.UUID(page.url.rstrip("/").rsplit("/", 1)[1])


def send(page: Any, text: str) -> None:
    page.locator("#conn-state", has_text="Connected").wait_for()
    page.get_by_label("Message", exact=True).fill(text)
    page.get_by_role("button", name="Send", exact=True).click()
    # This message's own receipt (an earlier one may already say "Delivered").
    own = page.locator("li.message.own", has=page.locator(".text", has_text=text))
    own.locator(".receipt", has_text="Delivered").wait_for()


def recover(page: Any, recovery: str) -> None:
    page.wait_for_url(re.compile(r"/keys/"))
    page.get_by_role("textbox", name="Recovery key").fill(recovery)
    page.get_by_role("button", name="Set up this browser").click()
    page.wait_for_url(re.compile(r"/$"))


def backed_up(case_id: uuid.UUID) -> set[int]:
    return set(m.KeyBackupItem.objects.filter(case_id=case_id).values_list("epoch", flat=True))


def test_a_recovered_browser_reads_the_case_from_its_first_message_alone(
    server: str, new_page: Callable[[str], Any], problems: PageProblems
) -> None:
    user = named("recovering", "Dr Rhea Quist", "General practice")
    first = new_page("first")
    sign_in(first, user)
    recovery = set_up_first_device(first)
    room_url, case_id = open_case(first, "Chest pain on exertion since Monday.")
    send(first, "ECG shows ST depression in V4-V6.")
    # A member changes the key (a new epoch), so history spans two epochs.
    other = named("recovering_peer", "Dr Sam Ortiz", "Cardiology")
    peer = new_page("peer")
    sign_in(peer, other)
    set_up_first_device(peer)
    first.get_by_label("Search providers by name or specialty").fill("Ortiz")
    first.get_by_role("button", name="Search").click()
    first.get_by_role("button", name="Add Dr Sam Ortiz to the case").click()
    first.locator("#members li", has_text="Dr Sam Ortiz").wait_for()
    send(first, "Troponin pending.")
    assert backed_up(case_id) >= {0, 1}, "the first browser backed up its epoch keys"
    # No other device of this user is online from here on.
    first.context.close()

    second = new_page("second")
    sign_in(second, user, offset_steps=1)
    recover(second, recovery)
    second.goto(room_url)
    second.locator("#members li", has_text="2 devices").wait_for()
    enrol = m.LogEntry.objects.filter(case_id=case_id).order_by("-epoch").first()
    assert enrol is not None and enrol.action == Action.ENROL_DEVICE
    new_device = enrol.author_device_id
    second.locator("#conn-state", has_text="Connected").wait_for()
    read = AuditEvent.objects.filter(action=AuditAction.KEY_BACKUP_READ, device_id=new_device)
    assert read.filter(details__count__gte=2).exists(), "the new browser fetched the backup"
    for text in (
        "Chest pain on exertion since Monday.",
        "ECG shows ST depression in V4-V6.",
        "Troponin pending.",
    ):
        second.locator("li.message .text", has_text=text).wait_for()
    assert second.locator("li.message.unavailable, li.message.invalid").count() == 0
    # And it writes in the new epoch, readable by the peer.
    send(second, "Reading this on my new laptop.")
    peer.goto(room_url)
    peer.locator("li.message .text", has_text="Reading this on my new laptop.").wait_for()
    problems.assert_none()


def test_sign_out_and_forget_this_browser_leaves_nothing_of_the_user(
    server: str, new_page: Callable[[str], Any], problems: PageProblems
) -> None:
    user = named("forgetful", "Dr Faye Lund", "General practice")
    page = new_page("forget")
    sign_in(page, user)
    recovery = set_up_first_device(page)
    room_url, _ = open_case(page, "Rash after a new antibiotic.")
    keys = page.evaluate(IDB_KEYS)
    assert any(str(user.pk) in k for k in keys), keys
    device = Device.objects.get(user=user)

    page.get_by_role("button", name="Sign out and forget this browser").click()
    page.get_by_role("button", name="Confirm: forget this browser").click()
    page.wait_for_url(re.compile(r"/accounts/login/\?reason=forgotten"))
    page.get_by_text("forgot your keys").wait_for()
    left = page.evaluate(IDB_KEYS)
    assert not [k for k in left if str(user.pk) in k], left
    assert "wrapping-key" not in left  # no other user's keys were here
    device.refresh_from_db()
    assert device.revoked_at is not None

    # Recovered here again: the new device enrols next to the forgotten (revoked) one,
    # then removes it.
    sign_in(page, user, offset_steps=1)
    recover(page, recovery)
    page.goto(room_url)
    page.locator("#conn-state", has_text="Connected").wait_for()
    page.locator("#members li", has_text="1 device").wait_for()
    page.locator("li.message .text", has_text="Rash after a new antibiotic.").wait_for()
    page.get_by_role("button", name="Sign out", exact=True).click()
    page.wait_for_url(re.compile(r"/accounts/login/\?reason=signed_out"))

    # A plain sign-out keeps the keys, and says so.
    other = named("keeper", "Dr Kim Hale", "General practice")
    sign_in(page, other)
    set_up_first_device(page)
    page.get_by_text("You are not in any case yet.").wait_for()  # no request in flight
    page.get_by_role("button", name="Sign out", exact=True).click()
    page.wait_for_url(re.compile(r"/accounts/login/\?reason=signed_out"))
    page.get_by_text("keys stay in this browser").wait_for()
    assert f"device:{other.pk}" in page.evaluate(IDB_KEYS)
    problems.assert_none()


# A script running in the page (XSS) can use the stored CryptoKey but not read it: the most
# it can take is the key handle, copied into its own IndexedDB database of this origin.
ATTACKER_DB = """
const attackerDb = () => new Promise((ok, no) => {
  const r = indexedDB.open('attacker', 1);
  r.onupgradeneeded = () => r.result.createObjectStore('loot');
  r.onsuccess = () => ok(r.result);
  r.onerror = no;
});
const attackerIo = async (mode, fn) => {
  const db = await attackerDb();
  return new Promise((ok, no) => {
    const t = db.transaction('loot', mode);
    const r = fn(t.objectStore('loot'));
    t.oncomplete = () => { db.close(); ok(r.result); };
    t.onerror = no;
  });
};
"""

PROBE = (
    """async ([caseId, deviceId]) => {
"""
    + ATTACKER_DB
    + """
  const api = await import('/static/collab/app/api.js');
  const cr1 = await import('/static/collab/cr1/index.js');
  const loot = await attackerIo('readonly', (s) => s.get('dsk'));
  const dev = { deviceId, signer: cr1.webCryptoSigner(loot.key, Uint8Array.from(loot.pub)) };
  api.useDevice(dev);
  const out = {};
  for (const [name, path] of [
    ['messages', `/api/cases/${caseId}/messages?after=0`],
    ['wraps', `/api/cases/${caseId}/wraps`],
    ['backup', `/api/key-backup?case=${caseId}&after=-1`],
  ]) {
    try { await api.api('GET', path, { device: dev.deviceId }); out[name] = 'answered'; }
    catch (err) { out[name] = `${err.status} ${err.code}`; }
  }
  out.socket = await new Promise((ok) => {
    const ws = new WebSocket(`ws://${location.host}/ws/cases/${caseId}/?device=${dev.deviceId}&proof=1`);
    const frames = [];
    ws.onmessage = (ev) => {
      const f = JSON.parse(ev.data);
      frames.push(f.type === 'error' ? `error ${f.code}` : f.type);
      if (f.type === 'challenge') {
        cr1.signWsProof(dev.signer, cr1.b64d(f.nonce, 32), caseId, dev.deviceId)
          .then((sig) => ws.send(JSON.stringify({ type: 'prove', sig: cr1.b64e(sig) })));
      }
      if (f.type === 'hello') ws.close(1000);
    };
    ws.onclose = (ev) => ok({ frames, code: ev.code });
  });
  return out;
}"""
)

STEAL_DEVICE = (
    """async (userId) => {
"""
    + ATTACKER_DB
    + """
  const ks = await import('/static/collab/app/keystore.js');
  const d = await ks.loadDevice(userId);
  const exported = [];
  for (const format of ['pkcs8', 'jwk', 'raw']) {
    try {
      await crypto.subtle.exportKey(format, d.dskKey);
      exported.push(format);
    } catch { /* refused */ }
  }
  const loot = { key: d.dskKey, pub: Array.from(d.signer.publicKey) };
  await attackerIo('readwrite', (s) => s.put(loot, 'dsk'));
  return { deviceId: d.deviceId, exported, seed: d.dskSeed };
}"""
)


def test_a_revoked_device_gets_nothing_whatever_session_it_uses(
    server: str, browser: Any
) -> None:
    user = named("revoked_one", "Dr Rob Vance", "General practice")
    context = browser.new_context(base_url=server)
    context.add_init_script(CSP_LISTENER)
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        sign_in(page, user)
        set_up_first_device(page)
        _, case_id = open_case(page, "Swollen ankle after a fall.")
        stolen = page.evaluate(STEAL_DEVICE, str(user.pk))
        assert stolen["exported"] == [] and stolen["seed"] is None, stolen  # only the handle
        page.locator("#conn-state", has_text="Connected").wait_for()
        # Revoked (from the devices page): its session ends with it.
        page.goto("/devices/")
        row = page.locator("#device-rows tr", has_text="(this browser)")
        row.get_by_role("button", name="Revoke this browser").click()
        row.get_by_role("button", name=re.compile("Confirm: revoke")).click()
        page.wait_for_url(re.compile(r"/accounts/login/|/keys/"), timeout=30_000)
        assert Device.objects.get(pk=stolen["deviceId"]).revoked_at is not None
        page.context.clear_cookies()

        # A fresh session of the same user, using the revoked device's keys.
        sign_in(page, user, offset_steps=1)
        page.wait_for_url(re.compile(r"/keys/"))
        got = page.evaluate(PROBE, [str(case_id), stolen["deviceId"]])
        assert got["messages"] == "403 device_revoked", got
        assert got["wraps"] == "403 device_revoked", got
        assert got["backup"] == "403 device_revoked", got
        assert got["socket"]["code"] == 4403, got
        assert "hello" not in got["socket"]["frames"], got
        assert "error device_revoked" in got["socket"]["frames"], got
    finally:
        context.close()


def test_an_admin_revokes_another_users_device_with_a_reason(
    server: str, new_page: Callable[[str], Any], problems: PageProblems
) -> None:
    target = named("lost_laptop", "Dr Lia Moss", "Dermatology")
    owner = new_page("owner")
    sign_in(owner, target)
    set_up_first_device(owner)
    open_case(owner, "Is this mole changing?")  # a proven request: its session is known
    owner.locator("#conn-state", has_text="Connected").wait_for()
    device = Device.objects.get(user=target)
    admin = make_user("devices_admin", role="admin")
    page = new_page("admin")
    sign_in(page, admin)
    set_up_first_device(page)
    page.goto("/devices/")
    page.get_by_label("Username, name or user id").fill("Moss")
    page.get_by_role("button", name="Look up").click()
    page.get_by_role("button", name="Show devices of Dr Lia Moss").click()
    row = page.locator(f"#admin-devices li[data-device='{device.pk}']")
    row.get_by_role("button", name=re.compile("Revoke")).click()
    page.get_by_text("Give a reason").wait_for()
    row.get_by_label(re.compile("Reason for revoking")).fill("Laptop reported stolen")
    row.get_by_role("button", name=re.compile("Revoke")).click()
    page.locator("#admin-status", has_text="was revoked").wait_for()
    device.refresh_from_db()
    assert device.revoked_at is not None
    assert device.revoke_reason == "Laptop reported stolen"
    assert device.revoked_by_id == admin.pk
    page.locator("#admin-status", has_text="has no active devices").wait_for()
    # The device's own browser is cut off at once, and its session ended with it.
    owner.locator("#room-error", has_text="no longer in this case").wait_for()
    owner.reload()
    owner.wait_for_url(re.compile(r"/accounts/login/"))
    problems.assert_none()


READ_DSK = """async (userId) => {
  const db = await new Promise((ok, no) => {
    const r = indexedDB.open('collab-keys');
    r.onsuccess = () => ok(r.result);
    r.onerror = no;
  });
  const rec = await new Promise((ok) => {
    const r = db.transaction('kv').objectStore('kv').get(`device:${userId}`);
    r.onsuccess = () => { db.close(); ok(r.result); };
  });
  const key = rec.dsk;
  const out = {
    isCryptoKey: key instanceof CryptoKey, extractable: key.extractable, type: key.type,
    algorithm: key.algorithm.name, usages: key.usages, exports: {},
  };
  for (const format of ['pkcs8', 'jwk', 'raw']) {
    try { await crypto.subtle.exportKey(format, key); out.exports[format] = 'exported'; }
    catch (err) { out.exports[format] = err.name; }
  }
  const ks = await import('/static/collab/app/keystore.js');
  const d = await ks.loadDevice(userId);
  out.kind = d.signer.kind;
  out.seed = d.dskSeed;
  out.pub = Array.from(d.signer.publicKey);
  return out;
}"""

DROP_ATTACKER_DB = """() => new Promise((ok) => {
  const r = indexedDB.deleteDatabase('attacker');
  r.onsuccess = r.onerror = r.onblocked = () => ok();
})"""


def test_the_signing_key_is_a_non_extractable_webcrypto_key_that_still_proves_the_device(
    server: str, new_page: Callable[[str], Any], problems: PageProblems
) -> None:
    user = named("webcrypto_dsk", "Dr Wen Ode", "General practice")
    page = new_page("webcrypto")
    sign_in(page, user)
    set_up_first_device(page)
    # Opening the case posts the genesis with an HTTP device proof, and the question goes
    # over the socket after its proof: both signed by the CryptoKey (proofs are required).
    _, case_id = open_case(page, "Palpitations at night.")
    stored = page.evaluate(READ_DSK, str(user.pk))
    assert stored["isCryptoKey"] is True, stored
    assert stored["extractable"] is False, stored
    assert (stored["type"], stored["algorithm"], stored["usages"]) == (
        "private",
        "Ed25519",
        ["sign"],
    )
    assert set(stored["exports"].values()) == {"InvalidAccessError"}, stored["exports"]
    assert stored["kind"] == "webcrypto" and stored["seed"] is None, stored
    device = Device.objects.get(user=user)
    assert bytes(device.dsk_pub) == bytes(stored["pub"]), "the certified key is the CryptoKey's"
    send(page, "Holter monitor booked.")
    sent = m.Message.objects.filter(case_id=case_id, sender_device_id=device.pk)
    assert sent.count() == 2  # the question and this one

    # Script in the page can sign with the handle (proofs over HTTP and the socket
    # succeed) but no format exports the bytes.
    stolen = page.evaluate(STEAL_DEVICE, str(user.pk))
    assert stolen["exported"] == [] and stolen["seed"] is None, stolen
    got = page.evaluate(PROBE, [str(case_id), stolen["deviceId"]])
    assert (got["messages"], got["wraps"]) == ("answered", "answered"), got
    assert "hello" in got["socket"]["frames"], got
    page.evaluate(DROP_ATTACKER_DB)

    # Forgetting this browser deletes the CryptoKey with the rest: IndexedDB is empty.
    page.get_by_role("button", name="Sign out and forget this browser").click()
    page.get_by_role("button", name="Confirm: forget this browser").click()
    page.wait_for_url(re.compile(r"/accounts/login/\?reason=forgotten"))
    assert page.evaluate(IDB_KEYS) == []
    problems.assert_none()


# The record a browser set up before DSKs were WebCrypto keys wrote: the DSK seed inside
# the AES-GCM-encrypted JSON, no CryptoKey beside it. Made here for a new device of this
# user, registered with a certificate from the identity seed.
WRITE_LEGACY_DEVICE = """async (userId) => {
  const cr1 = await import('/static/collab/cr1/index.js');
  const ks = await import('/static/collab/app/keystore.js');
  const api = await import('/static/collab/app/api.js');
  const current = await ks.loadDevice(userId);
  const dskSeed = cr1.randomBytes(32);
  const dxkSecret = cr1.randomBytes(32);
  const deviceId = cr1.randomUuid(cr1.randomBytes);
  const cert = cr1.makeDeviceCert(current.uikSeed, userId, deviceId, cr1.ed25519Public(dskSeed),
    cr1.x25519Public(dxkSecret), Date.now() - 60_000).toWire();
  await api.api('POST', '/api/devices', { json: { cert, name: 'Old browser' } });
  const db = await new Promise((ok, no) => {
    const r = indexedDB.open('collab-keys');
    r.onsuccess = () => ok(r.result);
    r.onerror = no;
  });
  const io = (mode, fn) => new Promise((ok, no) => {
    const t = db.transaction('kv', mode);
    const r = fn(t.objectStore('kv'));
    t.oncomplete = () => ok(r.result);
    t.onerror = no;
  });
  const wrap = await io('readonly', (s) => s.get('wrapping-key'));
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const plain = new TextEncoder().encode(JSON.stringify({
    userId, deviceId, dskSeed: cr1.b64e(dskSeed), dxkSecret: cr1.b64e(dxkSecret),
    uikSeed: cr1.b64e(current.uikSeed), cert, name: 'Old browser',
  }));
  const ad = new TextEncoder().encode(`collab/device-keys/v1/${userId}`);
  const gcm = { name: 'AES-GCM', iv, additionalData: ad };
  const ct = new Uint8Array(await crypto.subtle.encrypt(gcm, wrap, plain));
  const rec = { iv, ct, deviceId, createdAt: Date.now() };
  await io('readwrite', (s) => s.put(rec, `device:${userId}`));
  db.close();
  return deviceId;
}"""

SIGNER_KIND = """async (userId) => {
  const ks = await import('/static/collab/app/keystore.js');
  return (await ks.loadDevice(userId)).signer.kind;
}"""


def test_a_browser_holding_a_tweetnacl_signing_seed_keeps_working(
    server: str, new_page: Callable[[str], Any], problems: PageProblems
) -> None:
    user = named("legacy_dsk", "Dr Lee Amos", "General practice")
    page = new_page("legacy")
    sign_in(page, user)
    set_up_first_device(page)
    legacy = uuid.UUID(page.evaluate(WRITE_LEGACY_DEVICE, str(user.pk)))
    page.goto("/")
    assert page.evaluate(SIGNER_KIND, str(user.pk)) == "tweetnacl"
    _, case_id = open_case(page, "Dizziness when standing up.")
    send(page, "Blood pressure lying and standing, please.")
    sent = m.Message.objects.filter(case_id=case_id, sender_device_id=legacy)
    assert sent.count() == 2, "the legacy device proved itself and sent, over HTTP and socket"
    problems.assert_none()


def test_a_retried_first_setup_sends_the_same_identity_backup(
    server: str, new_page: Callable[[str], Any], problems: PageProblems
) -> None:
    """Replacing a stored identity backup needs the password; the first setup's retry
    (after a later step failed) must therefore send the very bytes it stored."""
    user = named("retry_setup", "Dr Rita Oyelaran", "General practice")
    page = new_page("retry")
    failed: list[str] = []

    def fail_once(route: Any) -> None:
        if not failed and route.request.method == "POST":
            failed.append(route.request.url)
            route.fulfill(
                status=503,
                content_type="application/json",
                body='{"error": "unavailable", "detail": "Try again in a moment."}',
            )
        else:
            route.continue_()

    page.route(re.compile(r"/api/devices$"), fail_once)
    sign_in(page, user)
    page.wait_for_url(re.compile(r"/keys/"))
    page.locator("#new-identity").wait_for(state="visible")
    groups = page.locator("#recovery-key").inner_text().strip().split("-")
    a, b = (int(n) for n in re.findall(r"group (\d+)", page.locator("#confirm-label").inner_text()))
    page.locator("#confirm-groups").fill(f"{groups[a - 1]} {groups[b - 1]}")
    finish = page.get_by_role("button", name=re.compile("finish setup"))
    finish.click()
    page.locator("#keys-error", has_text="unavailable").wait_for()
    stored = bytes(IdentityBackup.objects.get(user=user).ciphertext)
    finish.click()  # the device registration again, and the same backup bytes
    page.wait_for_url(re.compile(r"/$"))
    assert bytes(IdentityBackup.objects.get(user=user).ciphertext) == stored
    assert Device.objects.filter(user=user, revoked_at__isnull=True).count() == 1
    assert not AuditEvent.objects.filter(
        action=AuditAction.IDENTITY_BACKUP_REPLACED, actor=user
    ).exists()
    # The one expected console line: the 503 this test answered.
    assert failed and all("status of 503" in p for p in problems.items), problems.items
    problems.items.clear()
