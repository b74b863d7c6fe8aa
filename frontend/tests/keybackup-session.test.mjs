// CaseSession's key backup and revoked-device handling (app/casestate.js) against a
// fake server: a device enrolled later restores earlier epoch keys from the backup,
// each checked against the epoch's key_commit (a tampered, swapped or wrong item leaves
// its epoch unavailable); keys not yet backed up are uploaded once; a 409
// revoked_device_in_roster is answered by remove_device, then the entry is retried.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import * as cr1 from '../static/collab/cr1/index.js';
import { forgetSigners, useDevice } from '../static/collab/app/api.js';
import { CaseSession } from '../static/collab/app/casestate.js';
import { ALICE, BOB, CASE_ID, T0, author } from './helpers.mjs';

const { Role } = cr1;

async function chain() {
  const { entry: e0, epochKey: k0 } = await cr1.buildEntry(null, new cr1.CreateBody(ALICE.uikPub, [ALICE.devices[0].cert]),
    { ...author(ALICE), createdMs: T0, caseId: CASE_ID });
  const { entry: e1, epochKey: k1 } = await cr1.buildEntry(e0, new cr1.AddUserBody(BOB.userId, Role.MEMBER, BOB.uikPub, [BOB.d.cert]),
    { ...author(ALICE), createdMs: T0 + 1 });
  const d1 = ALICE.devices[1];
  const enrol = cr1.signEnrol(ALICE.uikSeed, CASE_ID, 2n, e1.entryHash(), d1.cert);
  const { entry: e2, epochKey: k2 } = await cr1.buildEntry(e1, enrol, { ...author(ALICE, d1), createdMs: T0 + 2 });
  return { entries: [e0, e1, e2], keys: [k0, k1, k2] };
}

function deviceRecord(p, d) {
  return { userId: p.userId, deviceId: d.deviceId, signer: cr1.seedSigner(d.dskSeed), dxkSecret: d.dxkSecret, uikSeed: p.uikSeed };
}

/** A fake server: the log, the key backup, and POST log with the revoked check. */
function fakeServer({ entries, backup = [], revoked = [] }) {
  const server = { entries: [...entries], backup: [...backup], puts: [], posts: [] };
  globalThis.fetch = async (url, init = {}) => {
    const u = new URL(url, 'http://localhost');
    let status = 200;
    let json = {};
    if (u.pathname === '/api/device-nonce') {
      json = { nonce: 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' };
    } else if (u.pathname.endsWith('/log') && init.method === 'GET') {
      const after = Number(u.searchParams.get('after'));
      json = { entries: server.entries.filter((e) => Number(e.epoch) > after).map((e) => ({ entry: cr1.b64e(e.encode()) })) };
    } else if (u.pathname.endsWith('/log') && init.method === 'POST') {
      const entry = cr1.LogEntry.decode(cr1.b64d(JSON.parse(new TextDecoder().decode(init.body)).entry));
      server.posts.push(entry);
      const shrinking = entry.action === cr1.Action.REMOVE_DEVICE || entry.action === cr1.Action.REMOVE_USER;
      const held = entry.roster.devices.map((d) => d.deviceId).filter((id) => revoked.includes(id));
      if (held.length && !shrinking) {
        status = 409;
        json = { error: 'revoked_device_in_roster', devices: held };
      } else {
        server.entries.push(entry);
        json = { epoch: Number(entry.epoch) };
      }
    } else if (u.pathname === '/api/key-backup' && init.method === 'PUT') {
      const { items } = JSON.parse(new TextDecoder().decode(init.body));
      server.puts.push(items);
      json = { stored: items.length, kept: 0 };
    } else if (u.pathname === '/api/key-backup') {
      const after = Number(u.searchParams.get('after'));
      json = { items: server.backup.filter((i) => i.epoch > after), more: false };
    } else {
      status = 404;
    }
    return { status, ok: status < 300, headers: new Map(), json: async () => json };
  };
  return server;
}

function session(dev) {
  forgetSigners();
  useDevice(dev);
  const s = new CaseSession(CASE_ID, dev, { backup: true });
  s.memo = { headEpoch: -1, headHash: '', senderSeq: 0, lastSeq: 0, backedUp: -1 };
  s.saveMemo = async () => {};
  return s;
}

const item = (key, epoch, k) => ({ epoch, item: cr1.b64e(cr1.sealBackupItem(key, CASE_ID, epoch, k)) });

test('an enrolled device restores earlier keys from the backup, then backs up what it lacks there', async () => {
  const { entries, keys } = await chain();
  const kb = cr1.backupKey(ALICE.uikSeed);
  const server = fakeServer({ entries, backup: [item(kb, 0, keys[0]), item(kb, 1, keys[1])] });
  const s = session(deviceRecord(ALICE, ALICE.devices[1]));
  await s.sync();
  assert.deepEqual([...s.keys.keys()].sort(), [0, 1, 2]);
  assert.deepEqual(s.keys.get(0), keys[0]);
  assert.deepEqual(s.keys.get(1), keys[1]);
  assert.deepEqual(s.backupErrors, []);
  // Every key it holds above backedUp is uploaded once, sealed for its case and epoch.
  assert.equal(server.puts.length, 1);
  for (const it of server.puts[0]) {
    assert.equal(it.case, CASE_ID);
    assert.deepEqual(cr1.openBackupItem(kb, cr1.b64d(it.item), CASE_ID, it.epoch), keys[it.epoch]);
  }
  assert.equal(s.memo.backedUp, 2);
  await s.sync();
  assert.equal(server.puts.length, 1, 'nothing new to back up');
});

test('tampered, swapped or wrong backup items leave their epochs unavailable', async () => {
  const { entries, keys } = await chain();
  const kb = cr1.backupKey(ALICE.uikSeed);
  const tampered = cr1.sealBackupItem(kb, CASE_ID, 0, keys[0]);
  tampered[40] ^= 1;
  const swapped = item(kb, 0, keys[0]); // epoch 0's item served as epoch 1's
  const server = fakeServer({
    entries,
    backup: [{ epoch: 0, item: cr1.b64e(tampered) }, { epoch: 1, item: swapped.item }],
  });
  const s = session(deviceRecord(ALICE, ALICE.devices[1]));
  await s.sync();
  assert.deepEqual([...s.keys.keys()], [2]);
  assert.deepEqual(s.backupErrors.map((e) => [e.epoch, e.code]), [[0, 'decrypt_failed'], [1, 'bad_wrap']]);
  assert.deepEqual(server.puts.flat().map((i) => i.epoch), [2], 'only the key it holds is backed up');

  // A server (or a stale item) with a key that does not match the entry's key_commit.
  const wrong = item(kb, 0, cr1.randomBytes(32));
  const forged = item(cr1.backupKey(BOB.uikSeed), 1, keys[1]); // sealed under someone else's key
  fakeServer({ entries, backup: [wrong, forged] });
  const t = session(deviceRecord(ALICE, ALICE.devices[1]));
  await t.sync();
  assert.deepEqual([...t.keys.keys()], [2]);
  assert.deepEqual(t.backupErrors.map((e) => [e.epoch, e.code]), [[0, 'key_commit_mismatch'], [1, 'decrypt_failed']]);
});

test('a 409 revoked_device_in_roster is answered by remove_device and the entry retried', async () => {
  const { entries } = await chain();
  const revoked = ALICE.devices[0].deviceId;
  const server = fakeServer({ entries, revoked: [revoked] });
  const s = session(deviceRecord(ALICE, ALICE.devices[1]));
  const rotated = await s.commit(() => new cr1.RotateBody());
  const actions = server.posts.map((e) => e.action);
  assert.deepEqual(actions, [cr1.Action.ROTATE, cr1.Action.REMOVE_DEVICE, cr1.Action.ROTATE]);
  assert.equal(rotated.action, cr1.Action.ROTATE);
  assert.equal(s.head.roster.device(revoked), null);
  // Known revoked devices go first next time, without a refusal.
  const before = server.posts.length;
  assert.deepEqual(s.removableRevoked(), []);
  await s.commit(() => new cr1.RotateBody());
  assert.equal(server.posts.length, before + 1);
});

test('a member removes only its own revoked devices; a manager anyone\'s (an owner\'s only as owner)', async () => {
  const { entries } = await chain();
  fakeServer({ entries });
  const bob = session(deviceRecord(BOB, BOB.d));
  bob.backup = false;
  await bob.sync();
  assert.equal(bob.mayRemoveDeviceOf(BOB.userId), true);
  assert.equal(bob.mayRemoveDeviceOf(ALICE.userId), false);
  const alice = session(deviceRecord(ALICE, ALICE.devices[0]));
  alice.backup = false;
  await alice.sync();
  assert.equal(alice.mayRemoveDeviceOf(BOB.userId), true);
  const enrolled = session(deviceRecord(ALICE, ALICE.devices[1]));
  enrolled.backup = false;
  await enrolled.sync();
  enrolled.chain.delete(2); // before its enrolment: not in the roster, may remove nothing
  assert.equal(enrolled.mayRemoveDeviceOf(ALICE.userId), false);
});
