// Pin sync (app/pinstore.js) against an in-memory server with the rules of
// GET/PUT /api/identity/pins, and the case state's handling of wraps this device
// cannot open (app/casestate.js). No browser: the store's I/O is injected.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import * as cr1 from '../static/collab/cr1/index.js';
import { openPins, sealPins, signPins } from '../static/collab/cr1/pins.js';
import { ApiError } from '../static/collab/app/api.js';
import { CaseSession, UnavailableMessage } from '../static/collab/app/casestate.js';
import { PinStore } from '../static/collab/app/pinstore.js';
import { TrustError } from '../static/collab/app/trust/pins.js';
import { ALICE, BOB, CAROL, CASE_ID, T0, author, rejectsCode } from './helpers.mjs';

/** The server's pins rows for one user: version must be current + 1. */
class PinsServer {
  constructor() {
    this.row = null;
    this.puts = 0;
    this.conflictOnce = false;
  }

  async api(method, path, { json } = {}) {
    assert.equal(path, '/api/identity/pins');
    if (method === 'GET') {
      if (!this.row) throw new ApiError(404, { error: 'no_pins' });
      return { ...this.row };
    }
    const current = this.row?.version ?? 0;
    if (this.conflictOnce) {
      // Another device of the user stored a version meanwhile.
      this.conflictOnce = false;
      throw new ApiError(409, { error: 'stale_pins', version: current });
    }
    if (json.version !== current + 1) throw new ApiError(409, { error: 'stale_pins', version: current });
    this.row = { version: json.version, blob: json.blob, sig: json.sig };
    this.puts += 1;
    return { version: json.version };
  }
}

function deviceOf(p) {
  return { userId: p.userId, deviceId: p.d.deviceId, uikSeed: p.uikSeed, cert: p.d.cert.toWire(), signer: cr1.seedSigner(p.d.dskSeed), dxkSecret: p.d.dxkSecret };
}

function storeFor(p, server, saved = {}) {
  const io = {
    api: (...args) => server.api(...args),
    savePins: async (user, value) => { saved[user] = structuredClone(value); },
    loadPins: async (user) => saved[user] ?? null,
  };
  return PinStore.open(deviceOf(p), io);
}

const serverDoc = (server, p) => JSON.parse(new TextDecoder().decode(openPins(p.uikSeed, cr1.b64d(server.row.blob))));

describe('pin sync', async () => {
  test('pins follow the user to another device, merged, and only the user can read them', async () => {
    const server = new PinsServer();
    const laptop = await storeFor(ALICE, server);
    laptop.book.observe(BOB.userId, BOB.uikPub, CASE_ID, T0);
    assert.equal(await laptop.sync(), true);
    assert.equal(server.row.version, 1);
    assert.ok(!server.row.blob.includes(cr1.b64e(BOB.uikPub)), 'sealed, not readable by the server');
    assert.deepEqual(Object.keys(serverDoc(server, ALICE).pins), [BOB.userId]);

    const phone = await storeFor(ALICE, server);
    phone.book.verify(CAROL.userId, CAROL.uikPub, T0 + 5);
    await phone.sync();
    assert.equal(server.row.version, 2);
    assert.equal(phone.state(BOB.userId, BOB.uikPub), 'pinned');
    await laptop.sync();
    assert.equal(laptop.state(CAROL.userId, CAROL.uikPub), 'verified');
    assert.equal(server.puts, 2, 'nothing new to store: no write');
  });

  test('a stored copy older than one seen before is a rollback', async () => {
    const server = new PinsServer();
    const saved = {};
    const store = await storeFor(ALICE, server, saved);
    store.book.observe(BOB.userId, BOB.uikPub, CASE_ID, T0);
    await store.sync();
    const v1 = { ...server.row };
    store.book.verify(BOB.userId, BOB.uikPub, T0 + 1);
    await store.sync();
    assert.equal(store.version, 2);
    server.row = v1; // the server serves the older, validly signed copy
    const again = await storeFor(ALICE, server, saved); // the version seen survives a reload
    await rejectsCode(again.sync(), 'rollback');
    server.row = null; // or pretends there is none
    await rejectsCode(again.sync(), 'rollback');
  });

  test('a copy the user did not sign is refused', async () => {
    const server = new PinsServer();
    const store = await storeFor(ALICE, server);
    const blob = sealPins(BOB.uikSeed, new TextEncoder().encode(JSON.stringify({ format: 'collab-pins', pins: {} })));
    server.row = { version: 1, blob: cr1.b64e(blob), sig: cr1.b64e(signPins(BOB.uikSeed, ALICE.userId, 1, blob)) };
    await rejectsCode(store.sync(), 'bad_signature');
    // Signed for version 1 but served as version 2.
    const own = sealPins(ALICE.uikSeed, new TextEncoder().encode(JSON.stringify({ format: 'collab-pins', pins: {} })));
    server.row = { version: 2, blob: cr1.b64e(own), sig: cr1.b64e(signPins(ALICE.uikSeed, ALICE.userId, 1, own)) };
    await rejectsCode(store.sync(), 'bad_signature');
  });

  test('a lost race (409 stale_pins) fetches, merges and writes the next version', async () => {
    const server = new PinsServer();
    const store = await storeFor(ALICE, server);
    store.book.observe(BOB.userId, BOB.uikPub, CASE_ID, T0);
    server.conflictOnce = true;
    assert.equal(await store.sync(), true);
    assert.equal(server.row.version, 1);
  });

  test('decisions are saved and synced without being asked', async () => {
    const server = new PinsServer();
    const saved = {};
    const store = await storeFor(ALICE, server, saved);
    let seen = 0;
    store.onChange(() => { seen += 1; });
    store.accept(BOB.userId, BOB.uikPub);
    await store.settled();
    assert.equal(seen, 1);
    assert.equal(server.row.version, 1);
    assert.ok(saved[ALICE.userId].doc.pins[BOB.userId]);
  });
});

// --- case state ------------------------------------------------------------------

let clock = T0;
const next = (prev, p, body) => {
  clock += 1000;
  return cr1.buildEntry(prev, body, { ...author(p), createdMs: clock, caseId: prev ? null : CASE_ID });
};
const addUser = (p, role) => new cr1.AddUserBody(p.userId, role, p.uikPub, p.devices.map((d) => d.cert));

/** Alice's device replaces the wrap for `deviceId` with garbage and signs the entry: a
 * validly signed entry whose key this device cannot open. */
function badWrapFor(entry, deviceId) {
  const wraps = entry.wraps.map((w) => (w.deviceId === deviceId ? new cr1.Wrap(w.deviceId, cr1.randomBytes(w.ciphertext.length)) : w));
  const draft = entry.replace({ wraps });
  return draft.replace({ signature: cr1.sign(ALICE.d.dskSeed, draft.signedBytes()) });
}

describe('wraps this device cannot open', async () => {
  test('the chain stays verified, the epoch is marked with its author, messages verify but do not open', async () => {
    const g = (await next(null, ALICE, new cr1.CreateBody(ALICE.uikPub, ALICE.devices.map((d) => d.cert)))).entry;
    const e1 = await next(g, ALICE, addUser(BOB, cr1.Role.MEMBER));
    const rot = await next(e1.entry, ALICE, new cr1.RotateBody());
    const bad = badWrapFor(rot.entry, BOB.d.deviceId);
    const e3 = await next(bad, ALICE, new cr1.RotateBody());
    const bob = new CaseSession(CASE_ID, deviceOf(BOB));
    bob.memo = { headEpoch: -1, headHash: '', senderSeq: 0, lastSeq: 0 };
    bob.accept([g, e1.entry, bad, e3.entry]);
    assert.equal(Number(bob.head.epoch), 3);
    assert.deepEqual([...bob.unavailable], [[2, ALICE.userId]]);
    assert.ok(bob.keys.has(1) && bob.keys.has(3) && !bob.keys.has(2));
    assert.equal(bob.headKeyMissing, false);

    // A message Alice sent in epoch 2: signature checked, then "not available".
    const env = await cr1.sealMessage({
      signer: ALICE.d.dskSeed, epochKey: rot.epochKey, caseId: CASE_ID, epoch: 2, logHead: bad.entryHash(),
      senderUserId: ALICE.userId, senderDeviceId: ALICE.d.deviceId, senderSeq: 1, sentMs: clock,
      contentType: 'text', body: { text: 'in the epoch Bob lost' }, attachments: [], clientMsgId: cr1.randomBytes(16),
    });
    await assert.rejects(bob.open({ seq: 5, envelope: env.toWire() }), (err) => {
      assert.ok(err instanceof UnavailableMessage);
      assert.equal(err.author, ALICE.userId);
      assert.equal(err.epoch, 2);
      return true;
    });
    // A forged signature in that epoch is still a security failure, not "unavailable".
    const forged = cr1.Envelope.fromWire({ ...env.toWire(), sig: cr1.b64e(new Uint8Array(64).fill(7)) });
    await assert.rejects(bob.open({ seq: 6, envelope: forged.toWire() }), (err) => err instanceof cr1.CryptoError);
  });

  test('a bad wrap at the head: sending first needs a fresh key', async () => {
    const g = (await next(null, ALICE, new cr1.CreateBody(ALICE.uikPub, ALICE.devices.map((d) => d.cert)))).entry;
    const e1 = badWrapFor((await next(g, ALICE, addUser(BOB, cr1.Role.MEMBER))).entry, BOB.d.deviceId);
    const bob = new CaseSession(CASE_ID, deviceOf(BOB));
    bob.accept([g, e1]);
    assert.equal(bob.headKeyMissing, true);
    assert.deepEqual([...bob.unavailable], [[1, ALICE.userId]]);
  });
});

describe('trust hook in the case state', async () => {
  const chain = async () => {
    const g = (await next(null, ALICE, new cr1.CreateBody(ALICE.uikPub, ALICE.devices.map((d) => d.cert)))).entry;
    return [g, (await next(g, ALICE, addUser(BOB, cr1.Role.MEMBER))).entry];
  };

  test('a roster listing this user under a foreign key is refused before anything is kept', async () => {
    // Bob's device, but a roster that lists Bob under Carol's key with Bob's device
    // certified by it (a fooled admin signed what the server served).
    const g = (await next(null, ALICE, new cr1.CreateBody(ALICE.uikPub, ALICE.devices.map((d) => d.cert)))).entry;
    const fakeCert = cr1.makeDeviceCert(CAROL.uikSeed, BOB.userId, BOB.d.deviceId, BOB.d.dskPub, BOB.d.dxkPub, T0);
    const e1 = (await next(g, ALICE, new cr1.AddUserBody(BOB.userId, cr1.Role.MEMBER, CAROL.uikPub, [fakeCert]))).entry;
    const pins = await storeFor(BOB, new PinsServer());
    const bob = new CaseSession(CASE_ID, deviceOf(BOB), { trust: pins });
    assert.throws(() => bob.accept([g, e1]), (err) => err instanceof cr1.CryptoError && err.code === 'own_identity_mismatch');
    assert.equal(bob.head, null);
  });

  test('every roster is observed, and a commit with a changed member is refused', async () => {
    const pins = await storeFor(ALICE, new PinsServer());
    const alice = new CaseSession(CASE_ID, deviceOf(ALICE), { trust: pins });
    const [g, e1] = await chain();
    alice.accept([g, e1]);
    assert.equal(pins.state(BOB.userId, BOB.uikPub), 'pinned');
    pins.book.accept(BOB.userId, CAROL.uikPub, T0); // Bob's pin now names another key
    assert.deepEqual(pins.blocking(alice.roster), [BOB.userId]);
    assert.throws(() => pins.checkCommit(alice.roster), (err) => err instanceof TrustError && err.code === 'identity_changed');
  });
});
