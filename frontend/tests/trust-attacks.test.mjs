// The browser client against a malicious server, one attack per test, each with its
// honest twin: pin sync before any roster is read, the pin check at every seal (also
// on a retry after the log moved), a relabelled patient request, one bad history
// wrap, an own key replaced in an older roster, and a review that records nothing.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import * as cr1 from '../static/collab/cr1/index.js';
import { ApiError } from '../static/collab/app/api.js';
import { CaseSession } from '../static/collab/app/casestate.js';
import { sendMessage } from '../static/collab/app/messaging.js';
import { PinStore } from '../static/collab/app/pinstore.js';
import {
  checkDirectAdd, effectiveKind, grantedRole, reviewAdmission,
} from '../static/collab/app/trust/admission.js';
import { TrustError } from '../static/collab/app/trust/pins.js';
import { ALICE, BOB, CAROL, CASE_ID, DAVE, T0, author } from './helpers.mjs';

let clock = T0;
const next = (prev, p, body) => {
  clock += 1000;
  return cr1.buildEntry(prev, body, { ...author(p), createdMs: clock, caseId: prev ? null : CASE_ID });
};
const addUser = (p, role, uik = p.uikPub, certs = p.devices.map((d) => d.cert)) => new cr1.AddUserBody(p.userId, role, uik, certs);
const deviceOf = (p, d = p.d) => ({
  userId: p.userId, deviceId: d.deviceId, uikSeed: p.uikSeed, cert: d.cert.toWire(), signer: cr1.seedSigner(d.dskSeed), dxkSecret: d.dxkSecret,
});
const genesis = () => next(null, ALICE, new cr1.CreateBody(ALICE.uikPub, ALICE.devices.map((d) => d.cert)));

/** GET/PUT /api/identity/pins of one user, in memory (version must be current + 1). */
class PinsServer {
  constructor() {
    this.row = null;
  }

  async api(method, path, { json } = {}) {
    assert.equal(path, '/api/identity/pins');
    if (method === 'GET') {
      if (!this.row) throw new ApiError(404, { error: 'no_pins' });
      return { ...this.row };
    }
    const current = this.row?.version ?? 0;
    if (json.version !== current + 1) throw new ApiError(409, { error: 'stale_pins', version: current });
    this.row = { version: json.version, blob: json.blob, sig: json.sig };
    return { version: json.version };
  }
}

function storeFor(p, server, d = p.d) {
  const saved = {};
  return PinStore.open(deviceOf(p, d), {
    api: (...args) => server.api(...args),
    savePins: async (user, value) => { saved[user] = structuredClone(value); },
    loadPins: async (user) => saved[user] ?? null,
  });
}

function session(p, pins, d = p.d) {
  const s = new CaseSession(CASE_ID, deviceOf(p, d), { trust: pins });
  s.memo = { headEpoch: -1, headHash: '', senderSeq: 0, lastSeq: 0 };
  s.saveMemo = async () => {};
  s.loadMemo = async () => s.memo;
  return s;
}

// Bob's real chain, and Dave (an admin) re-adding "Bob" under Dave's own identity key.
async function chains() {
  const g = await genesis();
  const e1 = await next(g.entry, ALICE, addUser(DAVE, cr1.Role.ADMIN));
  const e2 = await next(e1.entry, ALICE, addUser(BOB, cr1.Role.MEMBER));
  const e3 = await next(e2.entry, DAVE, new cr1.RemoveUserBody(BOB.userId));
  const fake = cr1.makeDeviceCert(DAVE.uikSeed, BOB.userId, DAVE.d.deviceId.replace(/.$/, '9'), DAVE.d.dskPub, DAVE.d.dxkPub, T0);
  const e4 = await next(e3.entry, DAVE, addUser(BOB, cr1.Role.MEMBER, DAVE.uikPub, [fake]));
  const honest = await next(e3.entry, ALICE, addUser(BOB, cr1.Role.MEMBER));
  return { base: [g.entry, e1.entry, e2.entry], swapped: [e3.entry, e4.entry], honest: [e3.entry, honest.entry] };
}

describe('item 1: the pin sync comes before any roster', async () => {
  test('a new device knows the verified key before it reads a roster with the server\'s key', async () => {
    const server = new PinsServer();
    const laptop = await storeFor(ALICE, server);
    laptop.verify(BOB.userId, BOB.uikPub);
    await laptop.settled();
    assert.equal(server.row.version, 1);

    // Alice's second device: the room awaits the sync, then reads a roster listing Bob under Carol's key.
    const phone = await storeFor(ALICE, server, ALICE.devices[1]);
    await phone.syncNow();
    const g = await genesis();
    const e1 = await next(g.entry, ALICE, addUser(BOB, cr1.Role.MEMBER, CAROL.uikPub,
      [cr1.makeDeviceCert(CAROL.uikSeed, BOB.userId, BOB.d.deviceId, BOB.d.dskPub, BOB.d.dxkPub, T0)]));
    const s = session(ALICE, phone, ALICE.devices[1]);
    s.accept([g.entry, e1.entry]);
    assert.equal(phone.state(BOB.userId, CAROL.uikPub), 'changed');
    assert.deepEqual(phone.blocking(s.roster), [BOB.userId]);
    await phone.settled();
    // And the laptop learns of the change; its verified key stays.
    await laptop.sync();
    assert.equal(laptop.state(BOB.userId, BOB.uikPub), 'verified');
    assert.equal(laptop.state(BOB.userId, CAROL.uikPub), 'changed');
  });

  test('a first-use pin made before the sync does not replace the synced verified key', async () => {
    const server = new PinsServer();
    const laptop = await storeFor(ALICE, server);
    laptop.verify(BOB.userId, BOB.uikPub);
    await laptop.settled();
    const phone = await storeFor(ALICE, server, ALICE.devices[1]);
    phone.book.observe(BOB.userId, CAROL.uikPub, CASE_ID, Date.now() + 5000); // newer, first use
    await phone.syncNow();
    assert.equal(phone.state(BOB.userId, BOB.uikPub), 'verified');
    assert.equal(phone.state(BOB.userId, CAROL.uikPub), 'changed');
    await laptop.sync();
    assert.equal(laptop.state(BOB.userId, BOB.uikPub), 'verified');
  });

  test('honest twin: the real key reads as verified on the new device, nothing blocks', async () => {
    const server = new PinsServer();
    const laptop = await storeFor(ALICE, server);
    laptop.verify(BOB.userId, BOB.uikPub);
    await laptop.settled();
    const phone = await storeFor(ALICE, server, ALICE.devices[1]);
    await phone.syncNow();
    const g = await genesis();
    const e1 = await next(g.entry, ALICE, addUser(BOB, cr1.Role.MEMBER));
    const s = session(ALICE, phone, ALICE.devices[1]);
    s.accept([g.entry, e1.entry]);
    assert.equal(phone.state(BOB.userId, BOB.uikPub), 'verified');
    assert.deepEqual(phone.blocking(s.roster), []);
  });
});

describe('item 3: every seal checks the pins, also on a retry', async () => {
  const noPins = { api: async () => { throw new ApiError(404, { error: 'no_pins' }); }, savePins: async () => {}, loadPins: async () => null };

  async function retryAfter(which) {
    const all = await chains();
    const { base } = all;
    const newEntries = all[which];
    const pins = await PinStore.open(deviceOf(ALICE), noPins);
    const s = session(ALICE, pins);
    s.accept(base);
    assert.deepEqual(pins.blocking(s.roster), []); // the room's check before sending passes
    s.sync = async () => { s.accept(newEntries); return s.head; };
    const sent = [];
    let first = true;
    const socket = {
      request: async (f) => {
        if (first) {
          first = false;
          return { type: 'error', code: 'stale_head' };
        }
        sent.push(f);
        return { type: 'ack', seq: 1, epoch: Number(s.head.epoch) };
      },
    };
    return { s, pins, sent, send: () => sendMessage(socket, s, { text: 'patient details' }) };
  }

  test('the log moved to a roster with a substituted key: nothing is sent (sendretry)', async () => {
    const { s, pins, sent, send } = await retryAfter('swapped');
    await assert.rejects(send(), (err) => err instanceof TrustError && err.code === 'identity_changed'
      && err.changes[0].user === BOB.userId);
    assert.equal(sent.length, 0);
    assert.deepEqual(pins.blocking(s.roster), [BOB.userId]);
    assert.equal(s.memo.senderSeq, 0, 'the refused seal used no sender_seq');
  });

  test('honest twin: the log moved to a roster with the real key: sealed in the new epoch', async () => {
    const { s, sent, send } = await retryAfter('honest');
    const { ack } = await send();
    assert.equal(ack.type, 'ack');
    assert.equal(sent.length, 1);
    assert.equal(Number(cr1.Envelope.fromWire(sent[0].envelope).header.epoch), Number(s.head.epoch));
  });

  test('a seal in a roster holding this user under a foreign key is refused', async () => {
    const pins = await PinStore.open(deviceOf(ALICE), noPins);
    const s = session(ALICE, pins);
    const { base } = await chains();
    s.accept(base);
    pins.myUik = CAROL.uikPub; // as if this device's identity were another
    await assert.rejects(s.seal({ text: 'x' }), (err) => err.code === 'own_identity_mismatch');
  });
});

describe('item 4: a patient request whatever the labels say', async () => {
  const signals = [
    [{ kind: 'patient', role: 'provider' }, cr1.Role.MEMBER],
    [{ kind: 'invite', role: 'patient' }, cr1.Role.MEMBER], // kind.mjs
    [{ kind: 'claim', role: 'provider' }, cr1.Role.PATIENT],
    [{ kind: 'invite' }, cr1.Role.PATIENT],
  ];
  test('any one signal makes it a patient request: the binding is required, the patient role granted', async () => {
    for (const [request, role] of signals) {
      const kind = effectiveKind(request, role);
      assert.equal(kind, 'patient', JSON.stringify(request));
      assert.deepEqual(reviewAdmission({ pin: 'new', kind, binding: null }), { allowed: false, blockers: ['patient_unbound'] });
      assert.equal(grantedRole(request, role), cr1.Role.PATIENT);
    }
  });
  test('honest twin: a provider\'s invite or claim needs no binding and gets the listed role', async () => {
    for (const k of ['invite', 'claim']) {
      const request = { kind: k, role: 'provider' };
      assert.equal(effectiveKind(request, cr1.Role.MEMBER), k);
      assert.equal(grantedRole(request, cr1.Role.MEMBER), cr1.Role.MEMBER);
      assert.equal(reviewAdmission({ pin: 'new', kind: k }).allowed, true);
    }
  });
  test('a direct add from the directory refuses a patient account, by any signal', async () => {
    assert.throws(() => checkDirectAdd({ id: CAROL.userId }, cr1.Role.PATIENT, 'Carol'), /patient account/);
    assert.throws(() => checkDirectAdd({ id: CAROL.userId, role: 'patient' }, cr1.Role.MEMBER, 'Carol'), /patient account/);
    checkDirectAdd({ id: BOB.userId, display_name: 'Bob' }, cr1.Role.MEMBER, 'Bob'); // a provider: fine
    checkDirectAdd(null, cr1.Role.MEMBER, 'Bob');
  });
});

describe('item 6: shared earlier keys open one at a time', async () => {
  async function shared(spoilEpoch) {
    const g = await genesis();
    const r1 = await next(g.entry, ALICE, new cr1.RotateBody());
    const add = await next(r1.entry, ALICE, addUser(BOB, cr1.Role.MEMBER));
    const body = cr1.makeHistoryBody(CASE_ID, [[BOB.d, 0, g.epochKey], [BOB.d, 1, r1.epochKey]]);
    const items = body.items.map((w) => (Number(w.epoch) === spoilEpoch
      ? new cr1.HistoryWrap(w.deviceId, w.epoch, cr1.randomBytes(w.ciphertext.length)) : w));
    const share = await next(add.entry, ALICE, new cr1.ShareHistoryBody(body.hepk, items));
    const bob = new CaseSession(CASE_ID, deviceOf(BOB));
    bob.accept([g.entry, r1.entry, add.entry, share.entry]);
    return { bob, keys: { 0: g.epochKey, 1: r1.epochKey } };
  }

  test('one bad wrap costs only its epoch, which is unavailable with the author (history)', async () => {
    const { bob, keys } = await shared(1);
    assert.ok(cr1.equal(bob.keys.get(0), keys[0]), 'the good wrap opened');
    assert.ok(!bob.keys.has(1));
    assert.equal(bob.unavailable.get(1), ALICE.userId);
    assert.deepEqual(bob.historyFailures.map((f) => f.epoch), [1]);
    assert.ok(bob.keys.has(2) && bob.keys.has(3), 'the later epochs read');
  });

  test('honest twin: every shared key opens, nothing is unavailable', async () => {
    const { bob, keys } = await shared(-1);
    assert.ok(cr1.equal(bob.keys.get(0), keys[0]) && cr1.equal(bob.keys.get(1), keys[1]));
    assert.deepEqual([...bob.unavailable], []);
    assert.deepEqual(bob.historyFailures, []);
  });
});

describe('item 9: every roster is observed; the own key fails closed at the head only', async () => {
  const fooled = () => cr1.makeDeviceCert(CAROL.uikSeed, BOB.userId, BOB.d.deviceId, BOB.d.dskPub, BOB.d.dxkPub, T0);

  test('a past roster listing this user under a foreign key does not fail the case', async () => {
    const g = await genesis();
    const e1 = await next(g.entry, ALICE, addUser(BOB, cr1.Role.MEMBER, CAROL.uikPub, [fooled()]));
    const e2 = await next(e1.entry, ALICE, new cr1.RemoveUserBody(BOB.userId));
    const e3 = await next(e2.entry, ALICE, addUser(BOB, cr1.Role.MEMBER));
    const pins = await storeFor(BOB, new PinsServer());
    const bob = session(BOB, pins);
    bob.accept([g.entry, e1.entry, e2.entry, e3.entry]);
    assert.equal(Number(bob.head.epoch), 3);
  });

  test('the same foreign key at the head fails closed, and nothing is kept or pinned', async () => {
    const g = await genesis();
    const e1 = await next(g.entry, ALICE, addUser(BOB, cr1.Role.MEMBER));
    const e2 = await next(e1.entry, ALICE, new cr1.RemoveUserBody(BOB.userId));
    const e3 = await next(e2.entry, ALICE, addUser(BOB, cr1.Role.MEMBER, CAROL.uikPub, [fooled()]));
    const pins = await storeFor(BOB, new PinsServer());
    const bob = session(BOB, pins);
    assert.throws(() => bob.accept([g.entry, e1.entry, e2.entry, e3.entry]),
      (err) => err instanceof cr1.CryptoError && err.code === 'own_identity_mismatch');
    assert.equal(bob.head, null);
    assert.equal(pins.book.records.size, 0, 'nothing observed from a refused log');
  });

  test('the head is the last of all pages: a page ending on a past roster does not fail the case', async () => {
    // A page whose last entry lists Bob under a foreign key, then the entry that re-adds
    // him under his own: a client checking each page's end as the head would fail here.
    const PAGE = 5;
    const entries = [(await genesis()).entry];
    while (entries.length < PAGE - 3) entries.push((await next(entries.at(-1), ALICE, new cr1.RotateBody())).entry);
    entries.push((await next(entries.at(-1), ALICE, addUser(BOB, cr1.Role.MEMBER))).entry);
    entries.push((await next(entries.at(-1), ALICE, new cr1.RemoveUserBody(BOB.userId))).entry);
    entries.push((await next(entries.at(-1), ALICE, addUser(BOB, cr1.Role.MEMBER, CAROL.uikPub, [fooled()]))).entry);
    assert.equal(entries.length, PAGE);
    entries.push((await next(entries.at(-1), ALICE, new cr1.RemoveUserBody(BOB.userId))).entry);
    entries.push((await next(entries.at(-1), ALICE, addUser(BOB, cr1.Role.MEMBER))).entry);
    const pins = await storeFor(BOB, new PinsServer());
    const bob = session(BOB, pins);
    bob.pageSize = PAGE;
    const original = globalThis.fetch;
    globalThis.fetch = async (url) => {
      const after = Number(new URL(url, 'http://x').searchParams.get('after'));
      const page = entries.filter((e) => Number(e.epoch) > after).slice(0, PAGE).map((e) => ({ entry: cr1.b64e(e.encode()) }));
      return new Response(JSON.stringify({ entries: page }), { status: 200, headers: { 'content-type': 'application/json' } });
    };
    try {
      await bob.sync();
    } finally {
      globalThis.fetch = original;
    }
    assert.equal(Number(bob.head.epoch), PAGE + 1);
  });

  test('a key this user had before, in an older roster, records no change; the head\'s pin holds', async () => {
    const server = new PinsServer();
    const pins = await storeFor(ALICE, server);
    pins.book.observe(BOB.userId, CAROL.uikPub, 'c-other', 1);
    pins.book.accept(BOB.userId, BOB.uikPub, 2); // Bob's key changed from "Carol's" to his, accepted
    const g = await genesis();
    const e1 = await next(g.entry, ALICE, addUser(BOB, cr1.Role.MEMBER, CAROL.uikPub, [fooled()]));
    const e2 = await next(e1.entry, ALICE, new cr1.RemoveUserBody(BOB.userId));
    const e3 = await next(e2.entry, ALICE, addUser(BOB, cr1.Role.MEMBER));
    const alice = session(ALICE, pins);
    alice.accept([g.entry, e1.entry, e2.entry, e3.entry]);
    assert.deepEqual(pins.book.changes(), []);
    assert.deepEqual(pins.blocking(alice.roster), []);
  });

  test('a key at the head other than the pin is a change (every roster observed, oldest first)', async () => {
    const pins = await storeFor(ALICE, new PinsServer());
    const g = await genesis();
    const e1 = await next(g.entry, ALICE, addUser(BOB, cr1.Role.MEMBER));
    const e2 = await next(e1.entry, ALICE, new cr1.RemoveUserBody(BOB.userId));
    const e3 = await next(e2.entry, ALICE, addUser(BOB, cr1.Role.MEMBER, CAROL.uikPub, [fooled()]));
    const alice = session(ALICE, pins);
    alice.accept([g.entry, e1.entry, e2.entry, e3.entry]);
    assert.equal(pins.state(BOB.userId, BOB.uikPub), 'pinned', 'the older roster pinned the first key');
    assert.deepEqual(pins.blocking(alice.roster), [BOB.userId]);
    assert.deepEqual(pins.book.changes()[0].cases, [CASE_ID]);
  });
});

describe('item 10: reviewing a request records nothing', async () => {
  test('looking at the server\'s key leaves the book as it was; the committed roster pins it', async () => {
    const server = new PinsServer();
    const pins = await storeFor(ALICE, server);
    let changes = 0;
    pins.onChange(() => { changes += 1; });
    assert.equal(typeof pins.observeFetched, 'undefined', 'no way to record a fetched key');
    assert.equal(pins.state(BOB.userId, BOB.uikPub), 'new'); // the dialog's pin state
    assert.equal(pins.book.records.size, 0);
    assert.equal(changes, 0);
    await pins.settled();
    assert.equal(server.row, null, 'nothing synced');
    // Admit pressed: the entry is built and, once verified, its roster is observed.
    const g = await genesis();
    const e1 = await next(g.entry, ALICE, addUser(BOB, cr1.Role.MEMBER));
    session(ALICE, pins).accept([g.entry, e1.entry]);
    assert.equal(pins.state(BOB.userId, BOB.uikPub), 'pinned');
  });

  test('a swapped key still shows as CHANGED in the review without being recorded', async () => {
    const pins = await storeFor(ALICE, new PinsServer());
    pins.book.observe(BOB.userId, BOB.uikPub, CASE_ID, 1);
    const before = JSON.stringify(pins.book.toJSON());
    assert.equal(pins.state(BOB.userId, CAROL.uikPub), 'changed');
    assert.equal(JSON.stringify(pins.book.toJSON()), before);
  });
});
