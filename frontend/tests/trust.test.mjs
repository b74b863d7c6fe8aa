// Client trust policy: every scenario of tests/policy/trust_scenarios.json, the
// same file the Python SDK's tests/client/test_trust_policy.py runs.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';

import * as cr1 from '../static/collab/cr1/index.js';
import {
  BINDING_LABELS, BLOCKER_TEXT, PIN_LABELS, checkedKeys, effectiveKind, openRequests, reviewAdmission,
} from '../static/collab/app/trust/admission.js';
import {
  LIMITS, PinBook, TrustError, mergeRecords, ownCheck, parseRecord, rosterPairs,
} from '../static/collab/app/trust/pins.js';
import { ALICE, BOB, CAROL } from './helpers.mjs';

const S = JSON.parse(readFileSync(new URL('../../tests/policy/trust_scenarios.json', import.meta.url), 'utf8'));
const user = (name) => S.users[name];
const key = (name) => cr1.b64d(S.keys[name], 32);
const caseId = (name) => S.cases[name];
const keyName = (bytes) => Object.keys(S.keys).find((k) => S.keys[k] === cr1.b64e(bytes)) ?? cr1.b64e(bytes);
const userName = (id) => Object.keys(S.users).find((k) => S.users[k] === id) ?? id;
const caseName = (id) => Object.keys(S.cases).find((k) => S.cases[k] === id) ?? id;
const pairs = (roster) => roster.map(([u, k]) => [user(u), key(k)]);
/** Case i of an `observe_cases` step (1-based), as the scenarios file names them. */
const countedCase = (i) => `${i.toString(16).padStart(8, '0')}-0000-4000-8000-000000000000`;

/** A scenario record with names -> a stored record (ids and base64 keys), and back. */
function toRecord(r) {
  return {
    uik: S.keys[r.uik], state: r.state, updated_ms: r.updated_ms, previous: r.previous.map((k) => S.keys[k]),
    changed: r.changed ? { uik: S.keys[r.changed.uik], seen_ms: r.changed.seen_ms, cases: r.changed.cases.map(caseId) } : null,
  };
}
function fromRecord(r) {
  const name = (b64) => keyName(cr1.b64d(b64, 32));
  return {
    uik: name(r.uik), state: r.state, updated_ms: r.updated_ms, previous: r.previous.map(name),
    changed: r.changed ? { uik: name(r.changed.uik), seen_ms: r.changed.seen_ms, cases: r.changed.cases.map(caseName) } : null,
  };
}

function runStep(book, step) {
  switch (step.op) {
    case 'state':
      return book.state(user(step.user), key(step.uik));
    case 'observe':
      return book.observe(user(step.user), key(step.uik), caseId(step.case), step.now, { historical: step.historical === true });
    case 'observe_cases': {
      let last;
      for (let i = 1; i <= step.count; i++) last = book.observe(user(step.user), key(step.uik), countedCase(i), step.now);
      return last;
    }
    case 'change_cases': {
      const cases = book.record(user(step.user))?.changed?.cases ?? [];
      return { expect_count: cases.length, expect_first: cases[0] ?? null, expect_last: cases.at(-1) ?? null };
    }
    case 'accept':
      return book.accept(user(step.user), key(step.uik), step.now);
    case 'verify':
      return book.verify(user(step.user), key(step.uik), step.now);
    case 'unverify':
      return book.unverify(user(step.user), step.now);
    case 'changes':
      return book.changes().map((c) => ({
        user: userName(c.user), old: keyName(c.old), new: keyName(c.new), cases: c.cases.map(caseName),
        was_verified: c.wasVerified,
      }));
    case 'blocking':
      return book.blocking(pairs(step.roster), user(step.me)).map(userName);
    case 'own':
    case 'commit':
      try {
        if (step.op === 'own') ownCheck(pairs(step.roster), user(step.me), key(step.my_uik));
        else book.commitCheck(pairs(step.roster), user(step.me), key(step.my_uik));
        return 'ok';
      } catch (err) {
        assert.ok(err instanceof cr1.CryptoError || err instanceof TrustError, String(err));
        return err.code;
      }
    default:
      throw new Error(`unknown op ${step.op}`);
  }
}

describe('pin scenarios', () => {
  for (const scenario of S.pins) {
    test(scenario.name, () => {
      const book = new PinBook();
      scenario.steps.forEach((step, i) => {
        const got = runStep(book, step);
        if ('expect' in step) assert.deepEqual(got, step.expect, `step ${i} (${step.op})`);
        for (const field of ['expect_count', 'expect_first', 'expect_last']) {
          if (field in step) assert.deepEqual(got[field], step[field], `step ${i} (${step.op}) ${field}`);
        }
      });
      // Every state survives the pins document (what is stored and synced).
      const again = PinBook.fromDocument(JSON.parse(JSON.stringify(book.toDocument())));
      assert.ok(again.equals(book));
    });
  }
});

describe('merge scenarios', () => {
  for (const scenario of S.merge) {
    test(scenario.name, () => {
      const records = (side) => Object.fromEntries(Object.entries(side).map(([u, r]) => [user(u), toRecord(r)]));
      const local = new PinBook(records(scenario.local));
      const remote = new PinBook(records(scenario.remote));
      local.merge(remote);
      const got = Object.fromEntries(Object.entries(local.toJSON()).map(([u, r]) => [userName(u), fromRecord(r)]));
      assert.deepEqual(got, scenario.expect);
      // Merging is per record; mergeRecords is the same rule.
      for (const [u, r] of Object.entries(scenario.expect)) {
        const l = scenario.local[u] ? parseRecord(toRecord(scenario.local[u])) : undefined;
        const rm = scenario.remote[u] ? parseRecord(toRecord(scenario.remote[u])) : undefined;
        assert.deepEqual(fromRecord(mergeRecords(l, rm)), r);
      }
    });
  }
});

describe('merging never lets a served key replace a decided one', () => {
  const bob = '00000000-0000-4000-8000-0000000000b0';
  const c = 'c0000000-0000-4000-8000-000000000001';
  test('a fresh device\'s first-use pin of the server\'s key does not replace a verified key (merge_attack)', () => {
    const A = cr1.randomBytes(32);
    const B = cr1.randomBytes(32);
    const d1 = new PinBook();
    d1.observe(bob, A, c, 500);
    d1.verify(bob, A, 1000);
    const d2 = new PinBook(); // a new device, shown B by the server
    assert.equal(d2.observe(bob, B, c, 2000), 'new');
    d2.merge(d1);
    d1.merge(d2);
    for (const d of [d1, d2]) {
      assert.equal(d.state(bob, A), 'verified');
      assert.equal(d.state(bob, B), 'changed');
      const [change] = d.changes();
      assert.ok(cr1.equal(change.new, B) && change.wasVerified);
    }
    assert.ok(d1.equals(d2), 'both devices agree');
  });
  test('honest twin: an accept on another device is taken everywhere', () => {
    const A = cr1.randomBytes(32);
    const B = cr1.randomBytes(32);
    const d1 = new PinBook();
    d1.observe(bob, A, c, 500);
    d1.verify(bob, A, 1000);
    const d2 = d1.clone();
    d2.observe(bob, B, c, 2000);
    d2.accept(bob, B, 3000); // the person accepted the new key there
    d1.merge(d2);
    assert.equal(d1.state(bob, B), 'pinned');
    assert.deepEqual(d1.changes(), []);
  });
  test('the losing key is a fresh pending change; mutual supersession: the later decision', () => {
    const rec = (k, state, ms, previous = [], changed = null) => ({
      uik: S.keys[k], state, updated_ms: ms, previous: previous.map((p) => S.keys[p]), changed,
    });
    const seen = { uik: S.keys.K2, seen_ms: 4000, cases: [caseId('C1')] };
    const m = mergeRecords(parseRecord(rec('K1', 'verified', 1000, [], seen)), parseRecord(rec('K2', 'pinned', 5000)));
    assert.equal(m.uik, S.keys.K1);
    assert.deepEqual(m.changed, { uik: S.keys.K2, seen_ms: 5000, cases: [] });
    const a = parseRecord(rec('K1', 'pinned', 3000, ['K2']));
    const b = parseRecord(rec('K2', 'verified', 3000, ['K1']));
    assert.equal(mergeRecords(a, b).uik, S.keys.K1, 'a tie: local');
    assert.equal(mergeRecords(b, a).uik, S.keys.K2);
    assert.equal(mergeRecords(a, { ...b, updated_ms: 3001 }).uik, S.keys.K2, 'the later decision');
  });
  test('the merge of two devices does not depend on who merges', () => {
    for (const scenario of S.merge) {
      const records = (side) => Object.fromEntries(Object.entries(side).map(([u, r]) => [user(u), toRecord(r)]));
      const a = new PinBook(records(scenario.local));
      const b = new PinBook(records(scenario.remote));
      const ab = a.clone();
      ab.merge(b);
      const ba = b.clone();
      ba.merge(a);
      for (const u of ab.records.keys()) {
        assert.equal(ab.record(u).uik, ba.record(u).uik, scenario.name);
        assert.equal(ab.record(u).state, ba.record(u).state, scenario.name);
      }
    }
  });
});

describe('limits', () => {
  test('the limits are the scenario file\'s', () => {
    assert.deepEqual({ ...LIMITS }, S.limits);
  });
  test('parsing keeps the newest cases and previous keys of a longer list, never refuses it', () => {
    const ids = Array.from({ length: 5000 }, (_, i) => countedCase(i + 1));
    const keys = Array.from({ length: 40 }, (_, i) => cr1.b64e(cr1.sha512(new Uint8Array([i])).slice(0, 32)));
    const r = parseRecord({
      uik: S.keys.K1, state: 'pinned', updated_ms: 1, previous: keys,
      changed: { uik: S.keys.K2, seen_ms: 2, cases: ids },
    });
    assert.equal(r.changed.cases.length, S.limits.cases_per_change);
    assert.deepEqual(r.changed.cases, ids.slice(-S.limits.cases_per_change));
    assert.deepEqual(r.previous, keys.slice(-S.limits.previous));
  });
  test('the newest observed case is kept, even after many others (cases_bound)', () => {
    const book = new PinBook();
    const bob = user('bob');
    book.observe(bob, key('K1'), null, 1);
    for (let i = 0; i < 300; i++) book.observe(bob, key('K2'), `ffffffff-0000-4000-8000-${String(i).padStart(12, '0')}`, 2);
    const real = '00000000-0000-4000-8000-000000000001';
    book.observe(bob, key('K2'), real, 3);
    const cases = book.record(bob).changed.cases;
    assert.equal(cases.length, S.limits.cases_per_change);
    assert.ok(cases.includes(real), 'the case observed last is listed');
    assert.ok(book.changes()[0].cases.includes(real));
    // Honest twin: a handful of cases are all kept, listed sorted.
    const small = new PinBook();
    small.observe(bob, key('K1'), null, 1);
    for (const c of ['C2', 'C1']) small.observe(bob, key('K2'), caseId(c), 2);
    assert.deepEqual(small.changes()[0].cases, [caseId('C1'), caseId('C2')]);
  });
  test('previous keeps the newest accepted keys', () => {
    const book = new PinBook();
    const bob = user('bob');
    const k = (i) => cr1.sha512(new Uint8Array([i])).slice(0, 32);
    for (let i = 0; i < 30; i++) book.accept(bob, k(i), i);
    const prev = book.record(bob).previous;
    assert.equal(prev.length, S.limits.previous);
    assert.equal(prev.at(-1), cr1.b64e(k(28)));
  });
});

describe('admission scenarios', () => {
  S.admission.forEach((a) => {
    const name = `${a.pin} ${a.kind} ${a.binding} accept_changed=${a.accept_changed} code_compared=${a.code_compared}`;
    test(name, () => {
      const got = reviewAdmission({
        pin: a.pin, kind: a.kind, binding: a.binding, acceptChanged: a.accept_changed, codeCompared: a.code_compared,
      });
      assert.deepEqual(got, a.expect);
      for (const b of got.blockers) assert.ok(BLOCKER_TEXT[b], b);
    });
  });
  test('the file covers every combination', () => {
    assert.equal(S.admission.length, 4 * (2 * 1 + 3) * 4);
  });
});

describe('policy details', () => {
  test('a patient with no binding result is unbound, never bound', () => {
    assert.deepEqual(reviewAdmission({ pin: 'new', kind: 'patient', binding: null }),
      { allowed: false, blockers: ['patient_unbound'] });
  });
  test('unknown inputs are programming errors', () => {
    assert.throws(() => reviewAdmission({ pin: 'trusted', kind: 'claim' }), TypeError);
    assert.throws(() => reviewAdmission({ pin: 'new', kind: 'self' }), TypeError);
    assert.throws(() => reviewAdmission({ pin: 'new', kind: 'patient', binding: 'yes' }), TypeError);
  });
  test('truthy but not true does not tick a box', () => {
    assert.equal(reviewAdmission({ pin: 'changed', kind: 'claim', acceptChanged: 'yes' }).allowed, false);
    assert.equal(reviewAdmission({ pin: 'new', kind: 'patient', binding: 'unbound', codeCompared: 1 }).allowed, false);
  });
  test('labels for every state and binding', () => {
    for (const s of ['new', 'pinned', 'verified', 'changed']) assert.ok(PIN_LABELS[s].startsWith(s.toUpperCase()));
    for (const b of ['bound', 'unbound', 'bad_proof']) assert.ok(BINDING_LABELS[b]);
  });
  test('a patient account is reviewed as a patient whatever the request kind says', () => {
    assert.equal(effectiveKind({ kind: 'claim' }, cr1.Role.PATIENT), 'patient');
    assert.equal(effectiveKind({ kind: 'claim' }, cr1.Role.MEMBER), 'claim');
    assert.equal(effectiveKind({ kind: 'nonsense' }, cr1.Role.MEMBER), 'invite');
  });
  test('open requests: one per user, none for users already in the roster', () => {
    const roster = { user: (id) => (id === BOB.userId ? {} : null) };
    const got = openRequests([{ id: 1, user: BOB.userId }, { id: 2, user: CAROL.userId }, { id: 3, user: CAROL.userId }], roster);
    assert.deepEqual(got.map((r) => r.id), [2]);
  });
  test('checked keys: every device certified by the listed identity key', () => {
    const wire = { uik_pub: cr1.b64e(BOB.uikPub), display_name: 'Bob', role: 'provider', devices: BOB.devices.map((d) => d.cert.toWire()) };
    const got = checkedKeys(BOB.userId, wire);
    assert.equal(got.role, cr1.Role.MEMBER);
    assert.ok(cr1.equal(got.uik, BOB.uikPub));
    // A substituted identity key does not certify the real devices.
    assert.throws(() => checkedKeys(BOB.userId, { ...wire, uik_pub: cr1.b64e(ALICE.uikPub) }), cr1.CryptoError);
    // Another user's device listed as Bob's.
    assert.throws(() => checkedKeys(BOB.userId, { ...wire, devices: [ALICE.d.cert.toWire()] }));
    assert.throws(() => checkedKeys(BOB.userId, { ...wire, devices: [] }), /no active device/);
    assert.throws(() => checkedKeys(BOB.userId, { ...wire, uik_pub: null }), /not set up/);
  });
  test('a roster from cr1 gives the pairs the checks use', () => {
    const roster = { users: [{ userId: ALICE.userId, uikPub: ALICE.uikPub }, { userId: BOB.userId, uikPub: BOB.uikPub }] };
    const book = new PinBook();
    for (const [u, k] of rosterPairs(roster)) book.observe(u, k, 'c', 1);
    book.commitCheck(rosterPairs(roster), ALICE.userId, ALICE.uikPub);
    assert.throws(() => book.commitCheck(rosterPairs(roster), ALICE.userId, BOB.uikPub),
      (err) => err instanceof cr1.CryptoError && err.code === 'own_identity_mismatch');
    const swapped = [[ALICE.userId, ALICE.uikPub], [BOB.userId, CAROL.uikPub]];
    assert.throws(() => book.commitCheck(swapped, ALICE.userId, ALICE.uikPub), (err) => {
      assert.ok(err instanceof TrustError);
      assert.equal(err.code, 'identity_changed');
      assert.equal(err.changes.length, 1);
      assert.equal(err.changes[0].user, BOB.userId);
      assert.ok(cr1.equal(err.changes[0].new, CAROL.uikPub));
      return true;
    });
  });
  test('a third key replaces the pending change; previous keeps accepted keys once', () => {
    const book = new PinBook();
    book.observe(BOB.userId, BOB.uikPub, 'c1', 1);
    book.observe(BOB.userId, ALICE.uikPub, 'c1', 2);
    book.observe(BOB.userId, CAROL.uikPub, 'c2', 3);
    const [c] = book.changes();
    assert.ok(cr1.equal(c.new, CAROL.uikPub));
    assert.deepEqual(c.cases, ['c2']);
    book.accept(BOB.userId, CAROL.uikPub, 4);
    book.accept(BOB.userId, BOB.uikPub, 5);
    book.accept(BOB.userId, CAROL.uikPub, 6);
    assert.deepEqual(book.record(BOB.userId).previous, [cr1.b64e(BOB.uikPub), cr1.b64e(CAROL.uikPub)]);
  });
  test('a malformed pins document is refused', () => {
    assert.throws(() => PinBook.fromDocument({ format: 'other', pins: {} }), cr1.CryptoError);
    assert.throws(() => new PinBook({ [BOB.userId]: { uik: 'AAAA', state: 'pinned', updated_ms: 1, previous: [], changed: null } }), cr1.CryptoError);
    assert.throws(() => new PinBook({ [BOB.userId]: { uik: cr1.b64e(BOB.uikPub), state: 'trusted', updated_ms: 1, previous: [], changed: null } }), cr1.CryptoError);
  });
});

describe('a pin book too large to sync', () => {
  test('decisions first, then the newest first-use pins; small books unchanged', async () => {
    const { fitPins } = await import('../static/collab/app/trust/pins.js');
    const book = new PinBook();
    const id = (n) => `00000000-0000-4000-8000-${n.toString(16).padStart(12, '0')}`;
    for (let i = 0; i < 50; i++) book.observe(id(i), cr1.sha512(new Uint8Array([i])).slice(0, 32), 'c', 1000 + i);
    book.verify(id(0), cr1.sha512(new Uint8Array([0])).slice(0, 32), 10); // oldest, but a decision
    assert.equal(fitPins(book, 1 << 20), book);
    const small = fitPins(book, 2000);
    const kept = [...small.records.keys()];
    assert.ok(kept.includes(id(0)), 'the verified pin is kept');
    assert.ok(kept.includes(id(49)) && !kept.includes(id(1)), 'newest first-use pins first');
    assert.ok(new TextEncoder().encode(JSON.stringify(small.toDocument())).length <= 2000);
    assert.equal(book.records.size, 50, 'nothing dropped from the local book');
  });
});
