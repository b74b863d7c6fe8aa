// Receipts per recipient (app/receipts.js): stored marks after a reload, live frames,
// marks that only move forward, and the debounced delivered reports.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { DeliveredReporter, Receipts, SERVER_REPORTED, verifiedAcks } from '../static/collab/app/receipts.js';

const ME = 'u-me';
const GOLD = 'u-gold';
const SAM = 'u-sam';
const NAMES = { [GOLD]: 'Dr Gold', [SAM]: 'Sam Patient', [ME]: 'me' };
const nameOf = (u) => NAMES[u] ?? u;
// The verified roster this client holds: the server's members list is only a claim.
const ROSTER = new Set([ME, GOLD, SAM]);
const inRoster = (u) => ROSTER.has(u);

function stored() {
  return {
    case: 'c', last_seq: 5,
    members: [
      { user: ME, read: null, delivered: null },
      { user: GOLD, read: { up_to: 4, at: '2026-01-01T10:00:00+00:00' }, delivered: { up_to: 5, at: '2026-01-01T10:01:00+00:00' } },
      { user: SAM, read: null, delivered: { up_to: 3, at: '2026-01-01T09:00:00+00:00' } },
    ],
    urgent: [{ seq: 2, acknowledged: [{ user: GOLD, at: '2026-01-01T09:30:00+00:00' }] }],
  };
}

test('stored marks give each recipient their state after a reload', () => {
  const r = new Receipts(ME, { inRoster });
  r.load(stored());
  assert.equal(r.summary(3, nameOf), 'Read by Dr Gold · delivered to Sam Patient');
  assert.equal(r.summary(2, nameOf), 'Acknowledged by Dr Gold · delivered to Sam Patient');
  assert.equal(r.summary(5, nameOf), 'Delivered to Dr Gold · not yet delivered to Sam Patient');
  assert.deepEqual(r.recipients(), [GOLD, SAM]); // never the sender
});

test('live frames move marks forward only; a stale answer never takes one back', () => {
  const r = new Receipts(ME, { inRoster });
  r.load(stored());
  assert.equal(r.noteRead(SAM, 5), true);
  assert.equal(r.noteRead(SAM, 4), false);
  assert.equal(r.noteDelivered(GOLD, 2), false);
  r.load(stored()); // an older answer after the live frame
  assert.equal(r.stateOf(SAM, 5), 'read');
  assert.equal(r.summary(5, nameOf), 'Read by Sam Patient · delivered to Dr Gold');
  assert.equal(r.noteAck(5, SAM), true);
  assert.equal(r.noteAck(5, SAM), false);
  assert.equal(r.stateOf(SAM, 5), 'acknowledged');
});

test('bad marks are ignored', () => {
  const r = new Receipts(ME, { inRoster });
  for (const bad of ['3', 1.5, null, -1, 0]) assert.equal(r.noteDelivered(GOLD, bad), false);
  assert.equal(r.noteRead(42, 3), false);
  r.load({ members: 'nope' });
  assert.deepEqual(r.members, []);
});

test('alone in the case a stored message reads "Delivered"', () => {
  const r = new Receipts(ME, { inRoster });
  r.load({ case: 'c', last_seq: 1, members: [{ user: ME, read: null, delivered: null }], urgent: [] });
  assert.equal(r.summary(1, nameOf), 'Delivered');
});

function clock() {
  const timers = new Map();
  let next = 1;
  return {
    setTimer: (fn) => { timers.set(next, fn); return next++; },
    clearTimer: (id) => timers.delete(id),
    fire: () => { const fns = [...timers.values()]; timers.clear(); fns.forEach((fn) => fn()); },
    pending: () => timers.size,
  };
}

test('delivered reports are debounced to the highest seq and never go back', () => {
  const c = clock();
  const posted = [];
  const reporter = new DeliveredReporter((f) => { posted.push(f); return true; }, c);
  for (const seq of [3, 1, 7, 5]) reporter.note(seq);
  assert.equal(c.pending(), 1);
  c.fire();
  assert.deepEqual(posted, [{ type: 'delivered', up_to: 7 }]);
  reporter.note(6); // already covered: nothing to send
  assert.equal(c.pending(), 0);
  reporter.note(8);
  c.fire();
  assert.deepEqual(posted.map((f) => f.up_to), [7, 8]);
});

test('a report the closed socket could not take goes with the next one', () => {
  const c = clock();
  const posted = [];
  let open = false;
  const reporter = new DeliveredReporter((f) => { if (open) posted.push(f); return open; }, c);
  reporter.note(4);
  c.fire();
  assert.deepEqual(posted, []);
  open = true;
  reporter.note(4);
  c.fire();
  assert.deepEqual(posted, [{ type: 'delivered', up_to: 4 }]);
});

test('the default timers are called as plain functions (a method call of the browser\'s setTimeout throws)', async () => {
  const posted = [];
  const strict = globalThis.setTimeout;
  globalThis.setTimeout = function guarded(fn, ms) {
    if (this !== undefined && this !== globalThis) throw new TypeError('Illegal invocation');
    return strict(fn, ms);
  };
  try {
    const reporter = new DeliveredReporter((f) => { posted.push(f); return true; }, { delayMs: 1 });
    reporter.note(2);
    await new Promise((ok) => strict(ok, 20));
  } finally {
    globalThis.setTimeout = strict;
  }
  assert.deepEqual(posted, [{ type: 'delivered', up_to: 2 }]);
});

// --- a lying server --------------------------------------------------------------

const MALLORY = 'u-mallory'; // a user the server names who is not in the verified roster

function lying() {
  const answer = stored();
  answer.members.push({ user: MALLORY, read: { up_to: 5, at: 't' }, delivered: { up_to: 5, at: 't' } });
  answer.urgent.push({ seq: 5, acknowledged: [{ user: MALLORY, at: 't' }] });
  answer.urgent[0].acknowledged.push({ user: MALLORY, at: 't' });
  return answer;
}

test('a user the server names who is not in the verified roster is never shown; members still are', () => {
  const r = new Receipts(ME, { inRoster });
  r.load(lying());
  assert.deepEqual(r.recipients(), [GOLD, SAM]);
  // Live frames naming the outsider change nothing on the line either.
  r.noteRead(MALLORY, 5);
  r.noteAck(3, MALLORY);
  const names = { ...NAMES, [MALLORY]: 'Dr Mallory' };
  const lines = [2, 3, 5].map((seq) => r.summary(seq, (u) => names[u] ?? u));
  assert.deepEqual(lines, [
    'Acknowledged by Dr Gold · delivered to Sam Patient',
    'Read by Dr Gold · delivered to Sam Patient',
    'Delivered to Dr Gold · not yet delivered to Sam Patient',
  ]);
  for (const line of lines) assert.doesNotMatch(line, /Mallory|u-mallory/);
  // A member's own receipts still show once the server reports them.
  r.noteAck(5, SAM);
  assert.equal(r.summary(5, nameOf), 'Acknowledged by Sam Patient · delivered to Dr Gold');
});

test('a member the server lists but the verified roster no longer holds is not a recipient', () => {
  const r = new Receipts(ME, { inRoster: (u) => u !== SAM && ROSTER.has(u) });
  r.load(stored());
  assert.deepEqual(r.recipients(), [GOLD]);
  assert.equal(r.summary(3, nameOf), 'Read by Dr Gold');
});

test('without a verified roster nobody is a recipient (fails closed)', () => {
  const r = new Receipts(ME);
  r.load(stored());
  assert.deepEqual(r.recipients(), []);
  assert.equal(r.summary(2, nameOf), 'Delivered');
});

test('urgent acknowledgements name only users of the verified roster', () => {
  const acks = new Map([[GOLD, 't1'], [MALLORY, 't2'], [SAM, 't3']]);
  assert.deepEqual([...verifiedAcks(acks, inRoster).keys()], [GOLD, SAM]);
  assert.deepEqual([...verifiedAcks(new Map([[MALLORY, 't']]), inRoster).keys()], []);
  assert.deepEqual([...verifiedAcks(acks).keys()], []); // no roster: none
  assert.deepEqual([...verifiedAcks(undefined, inRoster).keys()], []);
});

test('the receipt line says whose report it is', () => {
  assert.match(SERVER_REPORTED, /reported by the server/i);
  assert.match(SERVER_REPORTED, /not signed/);
});
